"""The per-frame renderer: each face recast, faded by pose and presence, held on a repeated frame, pasted
back with what passes in front of it kept, and the badge drawn wherever a recast shows."""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from stream.look.align import Alignment, alignment, crop
from stream.look.filters import keep_recent, smoothstep
from stream.look.occlusion import OcclusionMasker
from stream.look.paste import PastedRegion, blend, crispness_kept, paste_back
from stream.media.machine import usable_cores
from stream.media.provenance import BadgeBox, draw_badge
from stream.media.watermark import Payload, Watermark
from stream.perception.smoothing import quad_side
from stream.perception.track_set import FaceState
from stream.recasters.contract import FaceCrop, Recaster
from stream.render.threads import StageTimer

log = logging.getLogger(__name__)


@dataclass
class RenderedFrame:
    regions: list[PastedRegion] = field(default_factory=list)
    badge: BadgeBox | None = None
    failed: int = 0
    faded: int = 0  # faces turned past the recaster's usable angle, passed through


def pose_weight(yaw: float | None, usable: tuple[float, float]) -> float:
    """How much of the recast a face at this yaw gets: 1 up to ``usable[0]`` degrees, 0 past ``usable[1]``, a
    smoothstep between (no pop at either end). A face without a pose estimate gets all of it."""
    if yaw is None:
        return 1.0
    full, none = usable
    if none <= full:
        return 1.0 if abs(yaw) <= full else 0.0
    return float(smoothstep(none, full, abs(yaw)))


# A face its mesh doubts is a face is faded like one turned too far. Its landmarks are then the mesh's guess, and
# the recast drawn on them smears. The hamilton audience has two cases:
# - a woman at about 60 degrees whose mesh reads her yaw as anything from 18 to 59, presence 0.01-0.17;
# - a frontal face whose presence dips to 0.07 for a dozen frames while its smile is misplaced.
# The talking heads and the wide shot's faces stay at 0.92-1.00. The presence is averaged per track
# (TRUST_FOLLOW of each new one), so one doubtful frame does not pop the face out; the weight is 1 from TRUST_FULL
# and 0 under TRUST_NONE, and moves by at most TRUST_SLEW a frame (a presence that leaps from 0.01 to 0.66 moved it
# by 0.32 in one frame).
TRUST_FULL, TRUST_NONE, TRUST_FOLLOW, TRUST_SLEW = 0.5, 0.1, 0.2, 0.15


def presence_weight(trust: float) -> float:
    """How much of the recast a face gets for the mesh's averaged presence."""
    return float(smoothstep(TRUST_NONE, TRUST_FULL, trust))


# A frame that repeats the one before while the face around it moves keeps the recast it was drawn with: film at
# 24 fps carried at 29.97 (every fifth frame a repeat), or a camera that sends a frame twice. Drawn again, the track's
# filters would still move the face a little on a frame where the source stands still: a judder. A repeat changes
# the face's pixels from the last frame by under HOLD_MEAN grey levels on average and by under HOLD_SHARE of the
# median change of the last HOLD_RECENT frames, and from the frame the recast was drawn on by under HOLD_MEAN too,
# with 99 % of them under HOLD_PEAK (a slow drift is drawn anew): d20's 42 repeats change by at most 0.4 and its
# moving frames by 1.1 and more. A face that is merely still (s18's actor between words) is drawn as usual: held,
# it would step when the drift added up, which reads as flicker (s18: 1.15 on the scorer, against 1.10).
HOLD_MEAN, HOLD_PEAK, HOLD_SHARE, HOLD_RECENT = 0.5, 8, 0.25, 8


@dataclass
class HeldFace:
    """A track's last recast as pasted, the frame's own grey under it then and on the latest frame (every other
    pixel), and how much that grey changed from frame to frame lately."""

    region: PastedRegion
    drawn: np.ndarray
    inside: np.ndarray  # where the face was pasted (alpha over 1/2), every other pixel
    latest: np.ndarray
    recent: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=HOLD_RECENT))

    @classmethod
    def of(cls, region: PastedRegion, before: HeldFace | None) -> HeldFace | None:
        if region.over is None or region.under is None:
            return None
        inside = _half(region.alpha) > 0.5
        if not inside.any():
            return None
        grey = _grey(region.under)
        held = cls(region, grey, inside, grey)
        if before is not None:
            held.recent.extend(before.recent)
        return held

    def repeated(self, image: np.ndarray) -> bool:
        """Whether this frame repeats the last one under the face while the face has been moving, within the coder's
        noise of the frame the recast was drawn on. Call once a frame: it keeps the frame-to-frame change."""
        r = self.region
        h, w = r.alpha.shape
        now = _grey(image[r.y0:r.y0 + h, r.x0:r.x0 + w])
        if now.shape != self.drawn.shape:
            return False
        step = float(cv2.absdiff(now, self.latest)[self.inside].mean())
        typical = float(np.median(self.recent)) if len(self.recent) >= 3 else 0.0
        self.latest = now
        self.recent.append(step)
        if not step < min(HOLD_MEAN, HOLD_SHARE * typical):
            return False
        change = cv2.absdiff(now, self.drawn)[self.inside]
        return bool(change.mean() < HOLD_MEAN and np.count_nonzero(change >= HOLD_PEAK) <= change.size // 100)

    def paste(self, image: np.ndarray) -> None:
        r = self.region
        assert r.over is not None
        h, w = r.alpha.shape
        target = image[r.y0:r.y0 + h, r.x0:r.x0 + w]
        target[...] = blend(target, r.over, r.alpha)


def _half(picture: np.ndarray) -> np.ndarray:
    """A picture at half its size each way, by its nearest pixels (not always the even ones: the same grid for every
    picture of a size, which is all the repeat test needs; a strided copy in NumPy cost 3 times as much)."""
    height, width = picture.shape[:2]
    return np.asarray(cv2.resize(picture, ((width + 1) // 2, (height + 1) // 2), interpolation=cv2.INTER_NEAREST))


def _grey(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.cvtColor(_half(rgb), cv2.COLOR_RGB2GRAY))


@dataclass(frozen=True)
class PreparedFace:
    """What a face's drawing needs that can be made before it, on another thread (FaceRenderer.prepare): its crop,
    where the crop sits in the frame, and what passes in front of it (None: nothing is looked for)."""

    crop: FaceCrop
    align: Alignment
    hidden: np.ndarray | None


KEPT_EVERY, KEPT_STEADY = 4, 0.5  # what a track's crop keeps of its crispness: measured every 4th frame, averaged


def mark_payload(recaster: Recaster, mark_id: str) -> Payload:
    """What the invisible mark of a recaster's frames says: synthetic unless every cast it draws is a consented
    person's, and the id of the render or session (`mark_id`, hashed to 11 bits)."""
    casts = recaster.describe().get("casts")
    listed = casts if isinstance(casts, list) else []
    consented = bool(listed) and all(isinstance(c, dict) and c.get("kind") == "consented" for c in listed)
    return Payload.for_id(not consented, mark_id)


class FaceRenderer:
    """Align, recast, paste back and badge the faces of one frame. A face turned past the recaster's usable angle
    fades out (its steadied yaw, FaceState.steady_yaw, sets the blend weight) and passes through once gone; so does
    a face whose mesh doubts it is one (its presence, averaged per track)."""

    def __init__(self, recaster: Recaster, *, badge: bool = True, max_crop: int = 512,
                 occlusion: bool = True, hold: bool = True, mark_id: str = "") -> None:
        self.recaster = recaster
        # the invisible mark goes on every frame a recast shows, whatever the badge, around the recast faces (their
        # picture is the recast's alone: a mark that changes from frame to frame would add to their flicker)
        self.watermark = Watermark(mark_payload(recaster, mark_id)) if recaster.synthetic else None
        self.hold = hold
        self._held: dict[int, HeldFace] = {}
        self._kept: dict[int, tuple[float, int]] = {}  # per track: the crop's share of crispness kept, its age
        self._trust: dict[int, tuple[float, float]] = {}  # per track: the mesh's presence averaged, and its weight
        self.badge = badge
        self.max_crop = max_crop
        # what passes in front of a face stays in front of the recast (hands, microphones); identity has none
        self.occlusion = OcclusionMasker() if occlusion and recaster.synthetic else None
        self._occlusion_lock = threading.Lock()
        self.faces_recast = 0
        self.faces_failed = 0
        self.faces_faded = 0
        self.faces_held = 0

    def drop_held(self) -> None:
        """Forget the held recasts (the viewer chose another cast or edit: every face is drawn anew)."""
        self._held.clear()

    def face_crop(self, image: np.ndarray, face: FaceState) -> tuple[FaceCrop, Alignment]:
        """What the recaster gets for a face: the aligned crop (the recaster's size, or the face's own up to the
        smaller of both maxima), the landmarks and the mesh in crop pixels; and the alignment to paste back."""
        params = face.crop_params
        size = self.recaster.size_for(face.track_id)
        size = size or int(np.clip(round(float(quad_side(params))), 32, min(self.max_crop, self.recaster.max_crop)))
        align = alignment(params, size)
        mesh = None
        if face.mesh is not None:  # x, y into the crop; the depth only orders, as it is
            mesh = np.column_stack([align.points_to_crop(face.mesh[:, :2].astype(np.float64)), face.mesh[:, 2]])
        pixels = crop(image, align, cv2.INTER_CUBIC)
        kept = self._crispness_kept(face, image, pixels, align) if self.recaster.synthetic else 1.0
        return FaceCrop(face.track_id, pixels, align.points_to_crop(face.landmarks.astype(np.float64)), face.index,
                        mesh, kept), align

    def _crispness_kept(self, face: FaceState, image: np.ndarray, pixels: np.ndarray, align: Alignment) -> float:
        """What the crop keeps of the frame's crispness once pasted back, per track: measured every KEPT_EVERY frames
        and averaged."""
        value, age = self._kept.pop(face.track_id, (0.0, 0))
        if age % KEPT_EVERY == 0:
            now = crispness_kept(image, pixels, align, face.landmarks)
            value = now if age == 0 else value + KEPT_STEADY * (now - value)
        return keep_recent(self._kept, face.track_id, (value, age + 1))[0]

    def _trust_weight(self, face: FaceState) -> float:
        """The weight for the track's mesh presence, averaged and slew-limited (1 where the tracker gives no
        presence: dlib, track files, older caches)."""
        if face.presence is None:
            return 1.0
        trust, weight = self._trust.pop(face.track_id, (face.presence, presence_weight(face.presence)))
        trust += TRUST_FOLLOW * (face.presence - trust)
        weight += float(np.clip(presence_weight(trust) - weight, -TRUST_SLEW, TRUST_SLEW))
        return keep_recent(self._trust, face.track_id, (trust, weight))[1]

    def prepare(self, image: np.ndarray, faces: list[FaceState], timer: StageTimer | None = None
                ) -> dict[int, PreparedFace]:
        """Each face's crop and what passes in front of it, by track, made from the frame before it is drawn: the
        live file pipeline makes them in its tracking thread, ahead of `render`, so the two overlap. Frames are
        prepared in their order, one after another; a face that fails here is drawn as if not prepared."""
        if self.occlusion is not None and faces:
            with self._occlusion_lock:
                self.occlusion.forget(faces[0].index)
        out = {}
        for face in faces:
            try:
                out[face.track_id] = self._prepared(image, face, timer)
            except Exception:
                log.exception("preparing track %d frame %d failed", face.track_id, face.index)
        return out

    def _prepared(self, image: np.ndarray, face: FaceState, timer: StageTimer | None) -> PreparedFace:
        """One face's crop and what passes in front of it (timed as "crop" and "occlusion")."""
        start = time.perf_counter()
        face_crop, align = self.face_crop(image, face)
        mid = time.perf_counter()
        hidden = self._hidden(face, face_crop)
        if timer is not None:
            timer.add("crop", mid - start)
            if hidden is not None:
                timer.add("occlusion", time.perf_counter() - mid)
        return PreparedFace(face_crop, align, hidden)

    def _hidden(self, face: FaceState, face_crop: FaceCrop) -> np.ndarray | None:
        """What passes in front of the face ([N,N] float32 in 0..1, crop pixels); None without occlusion."""
        if self.occlusion is None:
            return None
        pose = (face.yaw, face.pitch) if face.yaw is not None and face.pitch is not None else None
        with self._occlusion_lock:  # a frame prepared on one thread while one not prepared is drawn on another
            return self.occlusion.mask(face.track_id, face.index, face_crop.image, face_crop.landmarks, pose)

    def render(self, image: np.ndarray, faces: list[FaceState], timer: StageTimer | None = None,
               prepared: dict[int, PreparedFace] | None = None) -> RenderedFrame:
        """Recast every face of ``image`` in place: the faces are drawn side by side on the cores (each from the
        frame as it came), then pasted back one after another in their order. `prepared`: what `prepare` made of
        this frame's faces."""
        out = RenderedFrame()
        if prepared is None and self.occlusion is not None and faces:
            with self._occlusion_lock:
                self.occlusion.forget(faces[0].index)
        ready = prepared or {}
        held, self._held = self._held, {}
        todo: list[tuple[FaceState, float, HeldFace | None]] = []
        for face in faces:
            weight = pose_weight(face.steady_yaw if face.steady_yaw is not None else face.yaw,
                                 self.recaster.usable_yaw) * self._trust_weight(face)
            if weight <= 0.0:
                out.faded += 1
                self.faces_faded += 1
                continue
            start = time.perf_counter()
            last = held.get(face.track_id)
            if last is not None and last.repeated(image):
                last.paste(image)
                self._held[face.track_id] = last
                out.regions.append(last.region)
                self.faces_recast += 1
                self.faces_held += 1
                if timer is not None:
                    timer.add("held", time.perf_counter() - start)
                continue
            todo.append((face, weight, last))
        if len(todo) > 1 and usable_cores() > 1:
            drawn = list(_pool().map(lambda job: self._draw(image, job[0], job[1], timer, ready.get(job[0].track_id)),
                                     todo))
        else:
            drawn = [self._draw(image, face, weight, timer, ready.get(face.track_id)) for face, weight, _ in todo]
        for (face, _, last), one in zip(todo, drawn, strict=True):
            start = time.perf_counter()
            try:
                region = None if one is None else paste_back(image, *one)
            except Exception:
                log.exception("pasting track %d frame %d failed; passing the face through", face.track_id, face.index)
                one = None
            if one is None:
                self.faces_failed += 1
                out.failed += 1
                continue
            if timer is not None:
                timer.add("paste", time.perf_counter() - start)
            if region is not None:
                out.regions.append(region)
                self.faces_recast += 1
                kept = HeldFace.of(region, last) if self.hold else None
                if kept is not None:
                    self._held[face.track_id] = kept
        if self.watermark is not None and out.regions:  # around the faces: on them it would add to their flicker
            start = time.perf_counter()
            self.watermark.embed(image, faces[0].index, [(r.x0, r.y0, r.alpha) for r in out.regions])
            if timer is not None:
                timer.add("mark", time.perf_counter() - start)
        if self.badge and self.recaster.synthetic and out.regions:
            out.badge = draw_badge(image)
        return out

    def _draw(self, image: np.ndarray, face: FaceState, weight: float, timer: StageTimer | None,
              prepared: PreparedFace | None = None) -> tuple[np.ndarray, np.ndarray, Alignment] | None:
        """One face recast from the frame (or from what was prepared of it): the face to paste, its mask (the pose's
        weight and what passes in front taken out) and where it goes; None where the recaster failed (logged: the
        face passes through)."""
        try:
            if prepared is None:
                prepared = self._prepared(image, face, timer)
            face_crop, align, hidden = prepared.crop, prepared.align, prepared.hidden
            start = time.perf_counter()
            pixels, mask = self.recaster.recast(face_crop)
            if timer is not None:
                timer.add("recast", time.perf_counter() - start)
            if weight < 1.0:
                mask = mask * np.float32(weight)
            if hidden is not None:
                mask = mask * (np.float32(1.0) - hidden)
        except Exception:
            log.exception("recaster %s failed on track %d frame %d; passing the face through",
                          self.recaster.name, face.track_id, face.index)
            return None
        return pixels, mask, align


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """The threads the faces of a frame are drawn on, one per core, shared by every renderer of the process (the
    service's sessions too): OpenCV, NumPy and LiteRT release the GIL, so faces are drawn side by side."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=usable_cores(), thread_name_prefix="recast-face")
        return _POOL
