"""Per-face processors: take an aligned crop of a tracked face, return the face to paste back and its mask.

- ``identity``: the crop unchanged (proves the geometry: the output equals the input within encoding noise).
- ``warp``: the CPU default. A cast portrait, aligned once, is warped per frame (piecewise affine over the
  68 landmarks) onto the actor's landmarks, so it follows head motion and expression; the actor's own mouth
  interior shows through when the mouth opens; colours are matched to the actor's face before blending.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from engines.errors import InputError
from stream.align import PiecewiseAffine, alignment, crop, disc, face_mask, polygon_mask
from stream.casts import Cast, Prepared
from stream.compose import Finish, clean_texture, close_lids, lid_opening, open_eye
from stream.faces import DEFAULT_DETECTOR, LandmarkPredictor, StillFaces, still_faces
from stream.smoothing import quad_params

log = logging.getLogger(__name__)

class CastError(InputError):
    """A cast image that cannot be used (no face, unreadable); the message names the image."""


@dataclass
class FaceCrop:
    """What a recaster gets: the aligned crop and the actor's landmarks in crop pixels."""

    track_id: int
    image: np.ndarray  # [N,N,3] uint8 RGB
    landmarks: np.ndarray  # [68,2] crop pixels
    index: int = -1  # the frame's index in the title (baked recasters look up that frame's latent)
    mesh: np.ndarray | None = None  # [468,3] the mesh tracker's points in crop pixels and their depth
    kept: float = 1.0  # the share of the frame's crispness the crop keeps once pasted back (align.crispness_kept)


class Recaster(ABC):
    """A per-face processor. ``crop_size`` None means "the face's own size in the frame"."""

    name: str = "base"
    synthetic: bool = True  # frames it touches get the provenance badge
    crop_size: int | None = None
    max_crop: int = 512  # with crop_size None: the largest crop a face is recast at
    # head yaw (degrees) up to which the recast is whole, and past which it is faded out entirely (the face then
    # passes through); between the two it blends in and out smoothly (see stream.pipeline.pose_weight)
    usable_yaw: tuple[float, float] = (30.0, 50.0)

    @abstractmethod
    def recast(self, face: FaceCrop) -> tuple[np.ndarray, np.ndarray]:
        """The face to paste ([N,N,3] uint8) and its blend mask ([N,N] float32, 0..1)."""

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name}

    def size_for(self, track_id: int) -> int | None:
        """The crop size for this track's faces (a recaster that dispatches per track may answer per track)."""
        return self.crop_size

    # --- what a viewer may change (the service's control channel offers exactly this) ---------------------------

    def cast_ids(self) -> list[str]:
        """The casts a viewer may choose among; none for a recaster with one look (identity, a title's actor)."""
        return []

    def assign(self, track_id: int, cast_id: str) -> None:
        """Play `cast_id` on a track's faces from the next frame on; a cast it does not offer is an error."""
        if cast_id not in self.cast_ids():
            raise CastError(f"the {self.name} recaster has no cast {cast_id!r} (it has {self.cast_ids()})")

    def edit_names(self) -> list[str]:
        """The latent edits a viewer may set (a baked StyleGAN title's directions); none by default."""
        return []

    def set_edits(self, factors: dict[str, float]) -> None:
        """The viewer's edits, name -> factor (0 is off); an edit it does not offer is an error."""
        unknown = sorted(set(factors) - set(self.edit_names()))
        if unknown:
            raise CastError(f"the {self.name} recaster has no edit {unknown} (it has {self.edit_names()})")

    def session_copy(self) -> Recaster:
        """The recaster for one more viewer: what is loaded shared, the viewer's choices its own. A recaster that
        holds no choice is shared as it is."""
        return self


class CastingRecaster(Recaster):
    """A recaster with several casts, one per track: round robin by track id until a viewer chooses."""

    def __init__(self, cast_ids: Sequence[str]) -> None:
        self._order = list(cast_ids)
        self._assigned: dict[int, str] = {}

    def cast_ids(self) -> list[str]:
        return list(self._order)

    def assign(self, track_id: int, cast_id: str) -> None:
        super().assign(track_id, cast_id)
        self._assigned[track_id] = cast_id

    def cast_for(self, track_id: int) -> str:
        return self._assigned.get(track_id) or self._order[(track_id - 1) % len(self._order)]


class IdentityRecaster(Recaster):
    name = "identity"
    synthetic = False
    usable_yaw = (90.0, 90.0)  # a geometry check: never faded

    def recast(self, face: FaceCrop) -> tuple[np.ndarray, np.ndarray]:
        return face.image, face_mask(face.landmarks, face.image.shape[0])


@dataclass
class _PreparedCast:
    cast: Cast
    image: np.ndarray  # [N,N,3] aligned crop of the cast portrait
    landmarks: np.ndarray  # [68,2] in crop pixels
    warp: PiecewiseAffine = field(repr=False)
    rgba: np.ndarray = field(repr=False)  # the image and its alpha (0 where the portrait's hair was)
    # the dense warp over vertices of the cast's mesh, and which vertices (the mediapipe detector's)
    dense: tuple[PiecewiseAffine, np.ndarray] | None = field(default=None, repr=False)
    mesh_lids: Any = field(init=False, repr=False)  # the eyes' lids as rows of the dense warp's points

    def __post_init__(self) -> None:
        self.mesh_lids = None if self.dense is None else _mesh_lids(self.dense[1])


CAST_TEXTURE = 512  # px: the side of a cast's prepared texture
MOUTH_GROW = 0.02  # of the mouth's width: the teeth's edges beyond the inner lips' points
SMILE_OPEN = 0.125  # a mouth opening over this share of the mouth's width squared is a smile's (teeth), left out


class WarpRecaster(CastingRecaster):
    """Classical landmark-driven face replacement; several casts, one per track (round robin by default)."""

    name = "warp"

    def __init__(self, casts: Sequence[Cast], *, size: int = CAST_TEXTURE, color: bool = True,
                 predictor: LandmarkPredictor | None = None, detector: str = DEFAULT_DETECTOR,
                 blinks: bool = True) -> None:
        if not casts:
            raise CastError("the warp recaster needs at least one cast image")
        # each cast is prepared once as a `size` px texture; a face is recast at its own size in the frame (the
        # renderer's crop), so a large face is not upsampled from a small one. Up to 384 px: a 720p close-up's
        # crop (420) loses a tenth of its scale and the live path keeps real time
        self.crop_size = None
        self.max_crop = 384
        self.finish = Finish(color=color, mouth=True, gaze=True)
        # the cast's lids follow the actor's blinks as MediaPipe's iris model reads them (the mesh's barely close)
        self._eyes = _eye_openings() if blinks else None  # shared by the sessions' copies
        faces = still_faces(detector, predictor)  # the tracker's own landmark model: the warp maps one onto the other
        self._casts = {c.cast_id: prepare_cast(c, size, faces, detector) for c in casts}
        # where each cast's eyes visibly lie between its corners, read once on its texture (the gaze's other half)
        self._cast_spans = {k: self._eyes(p.image, p.landmarks).spans if self._eyes is not None else None
                            for k, p in self._casts.items()}
        super().__init__([c.cast_id for c in casts])

    @property
    def casts(self) -> list[Cast]:
        return [self._casts[c].cast for c in self._order]

    def texture(self, cast_id: str) -> np.ndarray:
        """The cast's prepared texture ([N,N,3] RGB, the aligned face)."""
        return self._casts[cast_id].image

    def session_copy(self) -> WarpRecaster:
        """A recaster for one more viewer: the prepared casts (read-only) shared, the track assignments its own."""
        other = copy.copy(self)
        other._assigned, other.finish = {}, self.finish.fresh()
        return other

    def recast(self, face: FaceCrop) -> tuple[np.ndarray, np.ndarray]:
        cast_id = self.cast_for(face.track_id)
        prepared = self._casts[cast_id]
        n = face.image.shape[0]
        look = self.finish.look(face.track_id)
        points = look.points(face.landmarks, n)  # steady when still, quick when moving
        reading = None if self._eyes is None or not eyes_to_read(points, look.lids) else \
            self._eyes(face.image, face.landmarks)
        open_points = points
        if reading is not None:  # the 68 points' lids too: the gaze and the masks read the eyes' openings from them
            look.read = reading
            points = _blink(points, POINT_LIDS, reading.openings, look.lids, "points")
        # where the eyes visibly lie is averaged every frame, from the last reading on the frames the model skips
        spans = None if look.read is None else look.read.spans
        if face.mesh is not None and prepared.dense is not None:
            # the dense mesh, nearest drawn last: a turned face's far side is hidden behind its nose, not stretched
            dense, ids = prepared.dense
            mesh = look.mesh(face.mesh[ids, :2], n, scale_of=face.landmarks)
            open_mesh = mesh
            if reading is not None:
                mesh = _blink(mesh, prepared.mesh_lids, reading.openings, look.lids, "mesh")
            texture = dense.warp(prepared.rgba, mesh, n, depth=face.mesh[ids, 2],
                                 under_points=open_mesh[dense.under_ids])
        else:
            texture = prepared.warp.warp(prepared.rgba, points, n, under_points=open_points[prepared.warp.under_ids])
        # the portrait's hair left out (its alpha): the actor's own forehead shows there
        mask = face_mask(points, n) * (texture[..., 3].astype(np.float32) / 255.0)
        return self.finish(np.ascontiguousarray(texture[..., :3]), face.image, points, mask, look, face.kept,
                           spans, self._cast_spans[cast_id]), mask

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "casts": [c.describe() for c in self.casts]}


def _eye_openings() -> Any:
    """mesh.EyeOpenings, or None (logged) where its model is missing: the recast's lids then follow the mesh's."""
    from stream.mesh import EyeOpenings
    from stream.models import ModelMissing

    try:
        return EyeOpenings()
    except ModelMissing as err:
        log.warning("the recast's eyes do not follow blinks: %s", err)
        return None


# the 68 points' eyes: outline, lower lid, upper lid (each above the lower point of the same rank) and corners
POINT_LIDS = ((range(36, 42), [41, 40], [37, 38], (36, 39)), (range(42, 48), [47, 46], [43, 44], (42, 45)))


EYES_READ_UNDER = 0.92  # of its open state: a 68-point eye opening under this may be a blink, read every frame
EYES_READ_EVERY = 2  # frames: an open eye is read this often (every 4th, d0's gaze drifted past its test's bound)


def eyes_to_read(points: np.ndarray, memory: dict[str, float]) -> bool:
    """Whether the iris model (3 ms a face) is to read this frame's eyes: where either eye of the 68 points (the
    mesh's, which follow a blink part of the way) opens less than EYES_READ_UNDER of its open state, and every
    EYES_READ_EVERY frames besides. Between readings the eyes are taken as open: their lids are not lowered."""
    read = False
    for k, (_, lower, upper, (a, b)) in enumerate(POINT_LIDS):
        opening = lid_opening(points[upper], points[lower], max(float(np.linalg.norm(points[b] - points[a])), 1e-6))
        read |= opening < EYES_READ_UNDER * open_eye(memory, f"seen{k}", opening)
    frame = memory.get("frames seen", 0.0)
    memory["frames seen"] = frame + 1.0
    return read or frame % EYES_READ_EVERY == 0


def _mesh_lids(ids: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]], ...]:
    """mesh.EYE_LIDS as rows of the dense warp's points (`ids`, sorted mesh vertices)."""
    from stream.mesh import EYE_LIDS

    def rows(vertices: Sequence[int]) -> np.ndarray:
        return np.searchsorted(ids, np.asarray(vertices))

    return tuple((rows(ring), rows(lower), rows(upper), (int(rows(corners)[0]), int(rows(corners)[1])))
                 for ring, lower, upper, corners in EYE_LIDS)


def _blink(points: np.ndarray, lids: Sequence[tuple[Any, Any, Any, tuple[int, int]]], openings: np.ndarray,
           memory: dict[str, float], name: str) -> np.ndarray:
    """`points` with each eye's upper lid lowered to the actor's opening (compose.close_lids)."""
    points = points.copy()
    for k, (_, lower, upper, (a, b)) in enumerate(lids):
        width = float(np.linalg.norm(points[b] - points[a]))
        points[upper] = close_lids(points[upper], points[lower], width, float(openings[k]), memory, f"{name}{k}")
    return points


def _under_lids(lids: Sequence[tuple[Any, Any, Any, tuple[int, int]]]) -> list[tuple[list[int], list[int]]]:
    """Each eye's opening as a region beneath its upper lid (align.PiecewiseAffine's `under`)."""
    return [([int(v) for v in ring], [int(v) for v in upper]) for ring, _, upper, _ in lids]


def _points_warp(points: np.ndarray, size: int) -> PiecewiseAffine:
    """The warp over a cast texture's 68 points (`points`), its eyes beneath their upper lids."""
    return PiecewiseAffine(points, size, under=_under_lids(POINT_LIDS))


DEGRAIN_FROM = 1.5  # a cast texture that enlarges its portrait's face more than this is degrained first
DEGRAIN_SLOPE, DEGRAIN_MAX = 1.5, 4.0  # the denoiser's strength per enlargement beyond 1x, and its most
MIN_CAST_FACE = 80  # px: the width of a cast's face at least (the texture is 512 px across about twice that)
MIN_CAST_SYMMETRY = 0.35  # nose-to-eye-corner distances, the shorter over the longer: under it, a profile
MIN_CAST_DETAIL = 2.0  # mean |Laplacian| of the face at 128 px: under it, a blurred portrait
MIN_CAST_EYES = 0.55  # the eyes' brightest tenth over the cheeks' median lightness: under it, the eyes are hidden


def check_portrait(cast: Cast, found: list[tuple[Any, np.ndarray]], where: str | None = None) -> np.ndarray:
    """The landmarks of a usable cast portrait's face, or CastError naming the portrait and what is wrong: no face,
    several faces, a face too small, turned, blurred, or with its eyes hidden (sunglasses). Checked once, when the
    cast is registered, never during playback."""
    where = where or cast.source
    if not found:
        raise CastError(f"{where}: no face found in the cast image")
    ranked = sorted(found, key=lambda f: f[0].width * f[0].height, reverse=True)
    others = [b for b, _ in ranked[1:] if b.width >= 0.5 * ranked[0][0].width and not _inside(b, ranked[0][0])]
    if others:
        raise CastError(f"{where}: {len(others) + 1} faces in the cast image; give a portrait of one person")
    box, landmarks = ranked[0]
    if box.width < MIN_CAST_FACE:
        raise CastError(f"{where}: the face is {box.width:.0f} px wide; a cast needs at least {MIN_CAST_FACE} px")
    left, right = abs(landmarks[30, 0] - landmarks[36, 0]), abs(landmarks[45, 0] - landmarks[30, 0])
    if min(left, right) < MIN_CAST_SYMMETRY * max(left, right, 1e-6):
        raise CastError(f"{where}: the face is turned (a profile); give a frontal portrait")
    gray = cv2.cvtColor(cast.image, cv2.COLOR_RGB2GRAY)
    x0, y0 = max(int(box.x0), 0), max(int(box.y0), 0)
    face = gray[y0 : max(int(box.y1), y0 + 1), x0 : max(int(box.x1), x0 + 1)]
    scale = 128 / max(face.shape)
    small = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA).astype(np.float32)
    if float(np.abs(cv2.Laplacian(small, cv2.CV_32F)).mean()) < MIN_CAST_DETAIL:
        raise CastError(f"{where}: the portrait is blurred; give a sharp one")
    h, w = gray.shape
    eyes = np.zeros((h, w), np.uint8)
    for eye in (landmarks[36:42], landmarks[42:48]):
        cv2.fillConvexPoly(eyes, cv2.convexHull(np.round(eye).astype(np.int32)), 1)
    cheeks = np.zeros((h, w), np.uint8)
    for part in ((41, 31, 48), (46, 35, 54)):
        cv2.fillConvexPoly(cheeks, np.round(landmarks[list(part)]).astype(np.int32), 1)
    if eyes.any() and cheeks.any():
        lightness = cv2.cvtColor(cast.image, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)
        if np.percentile(lightness[eyes > 0], 90) < MIN_CAST_EYES * np.median(lightness[cheeks > 0]):
            raise CastError(f"{where}: the eyes are hidden (sunglasses?); give a portrait with the eyes visible")
    return landmarks


def _inside(small: Any, big: Any) -> bool:
    """Whether most of box `small` lies within box `big` (a second detection of the same face)."""
    w = max(0.0, min(small.x1, big.x1) - max(small.x0, big.x0))
    h = max(0.0, min(small.y1, big.y1) - max(small.y0, big.y0))
    return w * h >= 0.5 * small.width * small.height


def prepare_cast(cast: Cast, size: int, faces: StillFaces, detector: str) -> _PreparedCast:
    """A cast made ready to warp at `size` px: its face checked (:func:`check_portrait`), aligned and cleaned of
    the portrait's hair, and with the mediapipe detector its dense mesh found. A cast registered with the same
    detector's landmarks was checked and prepared when it was added, and is only read here (aligned again at
    another size, or, when its texture was made by an older preparation, made again from its checked points)."""
    ready = cast.prepared if cast.prepared is not None and cast.prepared.detector == detector else None
    if ready is not None and ready.current and ready.rgba.shape[0] == size:
        image = np.ascontiguousarray(ready.rgba[..., :3])
        return _PreparedCast(cast, image, ready.points, _points_warp(ready.points, size), ready.rgba,
                             _dense(ready.mesh, alignment(quad_params(ready.landmarks), size), size))
    if ready is not None:
        return _texture(cast, ready.landmarks, size, ready.mesh)
    landmarks = check_portrait(cast, faces(cast.image))
    return _texture(cast, landmarks, size, _mesh_of(cast, landmarks, detector))


def _mesh_of(cast: Cast, landmarks: np.ndarray, detector: str) -> np.ndarray | None:
    if detector != "mediapipe":  # the HOG tracker gives the actor no mesh: the 68 points are warped
        return None
    from stream.mesh import portrait_mesh

    return portrait_mesh(cast.image, landmarks)[:, :2]


def _dense(mesh: np.ndarray | None, align: Any, size: int) -> tuple[PiecewiseAffine, np.ndarray] | None:
    """The dense warp over the chosen vertices of a cast's mesh (portrait pixels), and which vertices."""
    if mesh is None:
        return None
    from stream.mesh import dense_vertices

    ids = dense_vertices(mesh)
    return PiecewiseAffine(align.points_to_crop(mesh[ids].astype(np.float64)), size,
                           under=_under_lids(_mesh_lids(ids))), ids


def _texture(cast: Cast, landmarks: np.ndarray, size: int, mesh: np.ndarray | None) -> _PreparedCast:
    align = alignment(quad_params(landmarks), size)
    points = align.points_to_crop(landmarks.astype(np.float64))
    # how many times the texture (at its full size) enlarges the portrait: the alignment's scale (a similarity)
    enlarged = float(np.sqrt(abs(np.linalg.det(align.to_crop[:, :2])))) * CAST_TEXTURE / size
    image = crop(_degrained(cast.image, enlarged, align.points_to_frame(_corners(size))), align, cv2.INTER_CUBIC)
    image, alpha, hair = clean_texture(image, points)  # no strand of the portrait's hair on the actor's forehead
    if hair > 0:
        log.info("cast %s: %.0f%% of the forehead and temples was hair, left out", cast.cast_id, hair * 100)
    # a smile's teeth (a portrait's mouth open wide) are left out too: where the actor's mouth is open the actor's
    # own interior is pasted there, and where it is closed the opening is pressed to a line between the lips, where
    # the cast's teeth showed as a white blob (and, mixed into the actor's, as grey braces on open ones). A dark,
    # parted opening is kept: leaving it out let the actor's mouth through the cast's lips (d20 with s42: mouth
    # 0.92 -> 0.67)
    mouth_width = float(np.linalg.norm(points[54] - points[48]))
    grow = max(1, round(MOUTH_GROW * mouth_width))
    opening = cv2.dilate(polygon_mask(points[60:68], size), disc(grow))
    lips = (polygon_mask(points[48:60], size) > 0.5) & (opening < 0.5)
    if _smiles_open(opening > 0.5, mouth_width):
        alpha = alpha * (1.0 - cv2.GaussianBlur(opening, (0, 0), max(1.0, size / 256)))
    image = _matte_lips(image, lips)
    rgba = np.dstack([image, np.round(alpha * 255).astype(np.uint8)])
    return _PreparedCast(cast, image, points, _points_warp(points, size), rgba, _dense(mesh, align, size))


def _smiles_open(opening: np.ndarray, width: float) -> bool:
    """Whether a portrait's mouth is open wide (a smile's teeth): its opening over an eighth of the mouth's width
    squared (Collins 0.15, Obama 0.19, Cruise 0.17; s42's parted lips 0.105, Hopper 0.07, s12 0.07)."""
    return float(opening.sum()) > SMILE_OPEN * width**2


def _matte_lips(image: np.ndarray, lips: np.ndarray) -> np.ndarray:
    """A portrait's lips with their glints (a glossy lower lip's highlight) brought down to the lips' own bright
    end: a glint is the portrait's light, and on an actor's lips pressed together it showed as a white dot."""
    if lips.sum() < 20:
        return image
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lightness = lab[..., 0].astype(np.float32)
    low, high = np.percentile(lightness[lips], (25, 75))
    bar = high + 1.5 * (high - low)
    weight = cv2.GaussianBlur(lips.astype(np.float32), (0, 0), 1.0)
    lab[..., 0] = np.round(lightness - weight * np.maximum(lightness - bar, 0.0)).astype(np.uint8)
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def _corners(size: int) -> np.ndarray:
    return np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64)


def _degrained(portrait: np.ndarray, enlarged: float, region: np.ndarray) -> np.ndarray:
    """A portrait whose face the cast texture enlarges `enlarged` times, with its grain and JPEG noise taken out
    in proportion, within `region` (the texture's corners in the portrait): enlarged, a photo's grain turns into
    blotches (freckles on every actor), which the detail step then sharpens and a moving warp makes flicker. The
    shot's own fine detail is added back in the skin when the face is drawn (`compose.match_detail`). A portrait
    used at about its own size is left as it is."""
    if enlarged <= DEGRAIN_FROM:
        return portrait
    strength = min(DEGRAIN_MAX, DEGRAIN_SLOPE * (enlarged - 1.0))
    h, w = portrait.shape[:2]
    x0, y0 = np.clip(np.floor(region.min(axis=0)).astype(int) - 8, 0, (w, h))
    x1, y1 = np.clip(np.ceil(region.max(axis=0)).astype(int) + 8, 0, (w, h))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return portrait
    out = portrait.copy()
    part = np.ascontiguousarray(portrait[y0:y1, x0:x1])
    out[y0:y1, x0:x1] = cv2.fastNlMeansDenoisingColored(part, None, strength, strength, 5, 15)
    return out


def registered(cast: Cast, detector: str, where: str, fomm: Path | None = None) -> Cast:
    """`cast` checked and prepared for the registry (`recast casts add`) by `detector`'s landmark model; a problem
    names `where` (the portrait's file)."""
    landmarks = check_portrait(cast, still_faces(detector)(cast.image), where)
    mesh = _mesh_of(cast, landmarks, detector)
    ready = _texture(cast, landmarks, CAST_TEXTURE, mesh)
    return dataclasses.replace(cast, prepared=Prepared(detector, landmarks, ready.rgba, ready.landmarks, mesh),
                               fomm=fomm)


def thumbnail(texture: np.ndarray, size: int = 96) -> bytes:
    """A JPEG of a cast's face for the page's cast picker: the middle of its aligned texture ([N,N,3] RGB)."""
    n = texture.shape[0]
    lo, hi = round(n * 0.2), round(n * 0.8)
    face = cv2.resize(texture[lo:hi, lo:hi], (size, size), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(face, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return bytes(data.tobytes())


def make_recaster(engine: str, casts: Sequence[Cast] = (), *, color: bool = True,
                  detector: str = DEFAULT_DETECTOR) -> Recaster:
    """The recaster named on the command line (``identity`` or ``warp``); ``detector`` is the tracker's."""
    if engine == "identity":
        return IdentityRecaster()
    if engine == "warp":
        return WarpRecaster(casts, color=color, detector=detector)
    if engine in ("stylegan", "fomm"):
        raise NotImplementedError(f"the {engine} recaster needs a baked title and model weights "
                                  "(not part of this release)")
    raise ValueError(f"unknown engine {engine!r}")


class ByCastRecaster(Recaster):
    """A session's recaster when some casts are served by other engines: a track whose cast is one of ``engines``
    (the baked title's ``actor``, rendered by its tuned generator; a cast registered with a FOMM checkpoint) goes
    there, every other track to ``casts``."""

    def __init__(self, casts: WarpRecaster, engines: dict[str, Recaster]) -> None:
        self.casts, self.engines = casts, engines
        self.name = "+".join([casts.name, *(e.name for e in engines.values())])
        self._engine_of: dict[int, str] = {}

    def cast_ids(self) -> list[str]:
        return [*self.engines, *(c for c in self.casts.cast_ids() if c not in self.engines)]

    def assign(self, track_id: int, cast_id: str) -> None:
        if cast_id in self.engines:
            self._engine_of[track_id] = cast_id
            engine = self.engines[cast_id]
            if cast_id in engine.cast_ids():  # an engine with several casts (FOMM) plays the one chosen
                engine.assign(track_id, cast_id)
        else:
            self.casts.assign(track_id, cast_id)
            self._engine_of.pop(track_id, None)

    def edit_names(self) -> list[str]:
        return sorted({name for engine in self.engines.values() for name in engine.edit_names()})

    def _for(self, track_id: int) -> Recaster:
        name = self._engine_of.get(track_id)
        return self.casts if name is None else self.engines[name]

    def size_for(self, track_id: int) -> int | None:
        return self._for(track_id).size_for(track_id)

    def recast(self, face: FaceCrop) -> tuple[np.ndarray, np.ndarray]:
        return self._for(face.track_id).recast(face)

    def set_edits(self, factors: dict[str, float]) -> None:
        super().set_edits(factors)
        for engine in self.engines.values():
            engine.set_edits({k: v for k, v in factors.items() if k in engine.edit_names()})

    def session_copy(self) -> ByCastRecaster:
        return ByCastRecaster(self.casts.session_copy(), {k: e.session_copy() for k, e in self.engines.items()})

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "parts": [self.casts.describe(), *(e.describe() for e in self.engines.values())]}
