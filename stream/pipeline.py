"""The render path: decode -> faces (track + smooth) -> align -> recast -> paste-back -> badge -> encode.

Decoding and encoding run in their own threads behind bounded queues (PyAV releases the GIL while it
codes), so on two cores the face work overlaps the codec work. A file is rendered frame for frame; a live
source (RTSP, RTMP, UDP) lets the newest frame win when the face work falls behind, and counts the drops. A recaster
that raises degrades that face to passthrough and the stream goes on.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, TypeVar

import cv2
import numpy as np

from stream.align import Alignment, PastedRegion, alignment, blend, crispness_kept, crop, paste_back
from stream.compose import keep_recent, smoothstep
from stream.faces import DEFAULT_DETECTOR, DETECTORS, FaceDetector, LandmarkPredictor, to_gray
from stream.media import Frame, MediaSink, MediaSource, is_live
from stream.occlusion import OcclusionMasker
from stream.provenance import BadgeBox, draw_badge, file_metadata
from stream.recasters import FaceCrop, Recaster
from stream.smoothing import quad_side
from stream.tracking import FaceTracker, MeshTracker, Tracker
from stream.tracks import FaceState, LiveFaceStage, Mode, TrackSet, track_frames

log = logging.getLogger(__name__)
T = TypeVar("T")
_DONE = object()


class StageTimer:
    """Milliseconds spent per named stage, summed over frames (thread-safe)."""

    def __init__(self) -> None:
        self._totals: dict[str, float] = collections.defaultdict(float)
        self._counts: dict[str, int] = collections.defaultdict(int)
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float, count: int = 1) -> None:
        with self._lock:
            self._totals[stage] += seconds
            self._counts[stage] += count

    def ms_per_frame(self, frames: int) -> dict[str, float]:
        with self._lock:
            return {k: round(v * 1e3 / max(frames, 1), 3) for k, v in self._totals.items()}


class Prefetch(Generic[T]):
    """Run an iterator in a thread behind a bounded queue.

    With ``drop_old`` the queue keeps the newest items: when the consumer falls behind, the oldest waiting
    item is dropped and counted (live sources); without it the producer waits (files: every frame counts).
    """

    def __init__(self, items: Iterable[T], maxsize: int = 8, drop_old: bool = False,
                 timer: StageTimer | None = None, stage: str = "decode") -> None:
        self._items = items
        self._queue: queue.Queue[Any] = queue.Queue(maxsize)
        self._drop_old = drop_old
        self._stop = threading.Event()
        self.dropped = 0
        self._timer = timer
        self._stage = stage
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"recast-{stage}", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._drop_old and item is not _DONE:
                    try:
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass

    def _run(self) -> None:
        try:
            iterator = iter(self._items)
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                if self._timer is not None:
                    self._timer.add(self._stage, time.perf_counter() - start)
                self._put(item)
        except BaseException as exc:  # handed to the consumer, raised there
            self._error = exc
        finally:
            self._put(_DONE)

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class ThreadedWriter:
    """Encode and mux in a thread behind a bounded queue (the caller waits when it is full)."""

    def __init__(self, sink: MediaSink, audio: collections.deque[Any], timer: StageTimer,
                 maxsize: int = 8) -> None:
        self.sink = sink
        self._audio = audio
        self._timer = timer
        self._queue: queue.Queue[Any] = queue.Queue(maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="recast-encode", daemon=True)
        self._thread.start()

    def write(self, frame: Frame, image: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((frame, image))

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not _DONE:
                frame, image = item
                start = time.perf_counter()
                self.sink.write(frame, image)
                self.sink.write_audio(self._audio, until=frame.time + 0.5)
                self._timer.add("encode", time.perf_counter() - start)
        except BaseException as exc:
            self._error = exc
            while self._queue.get() is not _DONE:  # keep draining so the producer never blocks
                pass

    def close(self) -> None:
        self._queue.put(_DONE)
        self._thread.join()
        if self._error is None:
            self.sink.write_audio(self._audio)
        self.sink.close()
        if self._error is not None:
            raise self._error


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
# it stepped when the drift added up, which read as flicker (s18: 1.10 -> 1.15 on the scorer).
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
        inside = region.alpha[::2, ::2] > 0.5
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


def _grey(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(rgb[::2, ::2]), cv2.COLOR_RGB2GRAY))


KEPT_EVERY, KEPT_STEADY = 4, 0.5  # what a track's crop keeps of its crispness: measured every 4th frame, averaged


class FaceRenderer:
    """Align, recast, paste back and badge the faces of one frame. A face turned past the recaster's usable angle
    fades out (its steadied yaw, FaceState.steady_yaw, sets the blend weight) and passes through once gone; so does
    a face whose mesh doubts it is one (its presence, averaged per track)."""

    def __init__(self, recaster: Recaster, *, badge: bool = True, max_crop: int = 512,
                 occlusion: bool = True, hold: bool = True) -> None:
        self.recaster = recaster
        self.hold = hold
        self._held: dict[int, HeldFace] = {}
        self._kept: dict[int, tuple[float, int]] = {}  # per track: the crop's share of crispness kept, its age
        self._trust: dict[int, tuple[float, float]] = {}  # per track: the mesh's presence averaged, and its weight
        self.badge = badge
        self.max_crop = max_crop
        # what passes in front of a face stays in front of the recast (hands, microphones); identity has none
        self.occlusion = OcclusionMasker() if occlusion and recaster.synthetic else None
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

    def render(self, image: np.ndarray, faces: list[FaceState], timer: StageTimer | None = None) -> RenderedFrame:
        """Recast every face of ``image`` in place."""
        out = RenderedFrame()
        if self.occlusion is not None and faces:
            self.occlusion.forget(faces[0].index)
        held, self._held = self._held, {}
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
            try:
                face_crop, align = self.face_crop(image, face)
                pixels, mask = self.recaster.recast(face_crop)
                if weight < 1.0:
                    mask = mask * np.float32(weight)
                mid = time.perf_counter()
                if self.occlusion is not None:
                    pose = (face.yaw, face.pitch) if face.yaw is not None and face.pitch is not None else None
                    hidden = self.occlusion.mask(face.track_id, face.index, face_crop.image, face_crop.landmarks,
                                                 pose)
                    mask = mask * (np.float32(1.0) - hidden)
                    hid = time.perf_counter()
                    if timer is not None:
                        timer.add("occlusion", hid - mid)
                    mid = hid
                region = paste_back(image, pixels, mask, align)
            except Exception:
                log.exception("recaster %s failed on track %d frame %d; passing the face through",
                              self.recaster.name, face.track_id, face.index)
                self.faces_failed += 1
                out.failed += 1
                continue
            if timer is not None:
                timer.add("recast", mid - start)
                timer.add("paste", time.perf_counter() - mid)
            if region is not None:
                out.regions.append(region)
                self.faces_recast += 1
                kept = HeldFace.of(region, last) if self.hold else None
                if kept is not None:
                    self._held[face.track_id] = kept
        if self.badge and self.recaster.synthetic and out.regions:
            out.badge = draw_badge(image)
        return out


@dataclass
class TrackingOptions:
    """Everything that decides a clip's tracks. A baked title's tracks are keyed by all of it (export/bake.py), so
    an option added here is in the key by construction; an option that does not change the tracks belongs to
    `RenderOptions` alone (tests/test_bake.py holds the list)."""

    detector: str = DEFAULT_DETECTOR  # mediapipe: BlazeFace and the face mesh on LiteRT; hog: dlib's HOG and 68 points
    detect_interval: int = 10
    detect_width: int = 640
    upsample: int = 0
    tiles: int = 2  # mediapipe: tile columns besides the whole frame (0: the whole frame only)
    max_faces: int = 16  # faces tracked (and recast) per frame at most, the largest first


@dataclass
class RenderOptions(TrackingOptions):
    mode: Mode = "offline"
    # mediapipe: threads of each LiteRT model. Two halve the tracking's latency on a 2-core machine and cost the
    # live path nothing (measured); the service gives each session one, since its sessions run side by side
    threads: int = 2
    lookahead: int = 4  # live mode only: frames the smoother looks ahead
    badge: bool = True
    occlusion: bool = True  # keep what passes in front of a face (a hand, a microphone) in front of the recast
    crf: int = 18
    preset: str = "veryfast"

    def tracking(self) -> TrackingOptions:
        return TrackingOptions(**{f.name: getattr(self, f.name) for f in fields(TrackingOptions)})


@dataclass
class RenderReport:
    frames: int
    seconds: float
    source_seconds: float
    faces_recast: int
    faces_failed: int
    dropped: int
    cuts: list[int]
    tracks: int
    ms_per_frame: dict[str, float]
    decode_errors: int
    faces_held: int = 0  # of faces_recast: a repeated frame's face, its recast kept from the frame before

    @property
    def realtime_factor(self) -> float:
        return self.source_seconds / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "realtime_factor": round(self.realtime_factor, 3),
                "fps": round(self.frames / self.seconds, 2) if self.seconds else 0.0}


def make_tracker(options: RenderOptions, predictor: LandmarkPredictor | None = None) -> Tracker:
    if options.detector == "mediapipe":
        from stream.blazeface import BlazeFace
        from stream.mesh import FaceMesh

        return MeshTracker(BlazeFace(tiles=options.tiles, threads=options.threads), FaceMesh(threads=options.threads),
                           detect_interval=options.detect_interval, max_faces=options.max_faces)
    if options.detector != "hog":
        raise ValueError(f"unknown detector {options.detector!r} (one of {', '.join(DETECTORS)})")
    return FaceTracker(FaceDetector(options.detect_width, options.upsample), predictor or LandmarkPredictor(),
                       detect_interval=options.detect_interval, max_faces=options.max_faces)


def run_tracking(location: str | Path, options: RenderOptions,
                 on_frame: Callable[[int], None] | None = None, max_frames: int | None = None) -> TrackSet:
    """The track pass (``recast track``, the first pass of an offline render and of a bake); `max_frames` stops
    after the first N frames."""
    with MediaSource(location, keep_audio=False) as source:
        frames = itertools.islice(source.frames(), max_frames)
        return track_frames(frames, source.info, make_tracker(options), mode=options.mode,
                            lookahead=options.lookahead, on_frame=on_frame)


def render(location: str | Path, output: str | Path, recaster: Recaster, options: RenderOptions, *,
           tracks: TrackSet | None = None, on_frame: Callable[[int], None] | None = None,
           on_rendered: Callable[[Frame, np.ndarray, RenderedFrame], None] | None = None) -> RenderReport:
    """Render a recast copy of ``location`` to ``output`` (mp4, audio copied, timestamps kept).

    Offline mode uses ``tracks`` (or runs the track pass first); live mode tracks causally in one pass.
    """
    timer = StageTimer()
    if options.mode == "offline" and tracks is None:
        tracks = run_tracking(location, options)
    faces_by_frame = tracks.by_frame() if tracks is not None else {}
    renderer = FaceRenderer(recaster, badge=options.badge, occlusion=options.occlusion)
    source = MediaSource(location)
    metadata = file_metadata(recaster.describe(), Path(str(location)).name, options.mode)
    sink = MediaSink(output, source.info, audio_stream=source.audio_stream, metadata=metadata,
                     crf=options.crf, preset=options.preset)
    writer = ThreadedWriter(sink, source.audio_packets, timer)
    frames = Prefetch(source.frames(), drop_old=is_live(location), timer=timer)
    stage = make_tracker(options) if options.mode == "live" else None
    live = LiveFaceStage(stage, options.lookahead) if stage is not None else None
    start = time.perf_counter()
    count = 0
    seen_tracks: set[int] = set()

    def emit(frame: Frame, faces: list[FaceState]) -> None:
        nonlocal count
        seen_tracks.update(f.track_id for f in faces)
        image = frame.image
        rendered = renderer.render(image, faces, timer)
        if on_rendered is not None:
            on_rendered(frame, image, rendered)
        writer.write(frame, image)
        count += 1
        if on_frame is not None:
            on_frame(frame.index)

    try:
        for frame in frames:
            if live is None:
                emit(frame, faces_by_frame.get(frame.index, []))
                continue
            t0 = time.perf_counter()
            ready = live.push(frame, to_gray(frame.image))
            timer.add("track", time.perf_counter() - t0)
            for item in ready:
                emit(item[0], item[1])
        if live is not None:
            for item in live.flush():
                emit(item[0], item[1])
    finally:
        frames.close()
        writer.close()
        source.close()
    seconds = time.perf_counter() - start
    info = source.info
    source_seconds = count / info.fps if info.fps else 0.0
    cuts = tracks.cuts if tracks is not None else (stage.stats.cuts if stage is not None else [])
    return RenderReport(count, seconds, source_seconds, renderer.faces_recast, renderer.faces_failed,
                        frames.dropped, list(cuts), len(seen_tracks), timer.ms_per_frame(count), source.decode_errors,
                        renderer.faces_held)


def export_crops(location: str | Path, tracks: TrackSet, folder: Path, size: int = 64, every: int = 1) -> int:
    """Aligned face crops (the smoothed STIT quad at ``size`` px) as PNGs ``t{track}_f{frame}.png``; every N-th
    face of each track. Returns how many were written."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    wanted: dict[int, list[FaceState]] = {}
    for track in tracks.tracks:
        for i, face in enumerate(track.faces):
            if i % every == 0:
                wanted.setdefault(face.index, []).append(face)
    written = 0
    with MediaSource(location, keep_audio=False) as source:
        for frame in source.frames():
            for face in wanted.get(frame.index, []):
                pixels = crop(frame.image, alignment(face.crop_params, size), cv2.INTER_AREA)
                Image.fromarray(pixels).save(folder / f"t{face.track_id:03d}_f{frame.index:06d}.png")
                written += 1
    return written
