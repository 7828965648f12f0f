"""A cast portrait checked and prepared once into what the warp draws with: the aligned texture (hair and an
open smile left out), its 68 points and their warp, and its dense mesh where the portrait has one."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stream.casts.cast import Cast, CastError, Prepared
from stream.casts.texture import clean_texture
from stream.look.align import alignment, crop
from stream.look.blinks import POINT_LIDS, mesh_lid_rows, under_lids
from stream.look.masks import disc, polygon_mask
from stream.look.piecewise import PiecewiseAffine
from stream.perception.smoothing import quad_params
from stream.perception.stills import StillFaces, still_faces

log = logging.getLogger(__name__)


@dataclass
class PreparedCast:
    cast: Cast
    image: np.ndarray  # [N,N,3] aligned crop of the cast portrait
    landmarks: np.ndarray  # [68,2] in crop pixels
    warp: PiecewiseAffine = field(repr=False)
    rgba: np.ndarray = field(repr=False)  # the image and its alpha (0 where the portrait's hair was)
    # the dense warp over vertices of the cast's mesh, and which vertices (the mediapipe detector's)
    dense: tuple[PiecewiseAffine, np.ndarray] | None = field(default=None, repr=False)
    mesh_lids: Any = field(init=False, repr=False)  # the eyes' lids as rows of the dense warp's points

    def __post_init__(self) -> None:
        self.mesh_lids = None if self.dense is None else mesh_lid_rows(self.dense[1])


CAST_TEXTURE = 512  # px: the side of a cast's prepared texture
MOUTH_GROW = 0.02  # of the mouth's width: the teeth's edges beyond the inner lips' points
SMILE_OPEN = 0.125  # a mouth opening over this share of the mouth's width squared is a smile's (teeth), left out


def _points_warp(points: np.ndarray, size: int) -> PiecewiseAffine:
    """The warp over a cast texture's 68 points (`points`), its eyes beneath their upper lids."""
    return PiecewiseAffine(points, size, under=under_lids(POINT_LIDS))


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


def prepare_cast(cast: Cast, size: int, faces: StillFaces, detector: str) -> PreparedCast:
    """A cast made ready to warp at `size` px: its face checked (:func:`check_portrait`), aligned and cleaned of
    the portrait's hair, and with the mediapipe detector its dense mesh found. A cast registered with the same
    detector's landmarks was checked and prepared when it was added, and is only read here (aligned again at
    another size, or, when its texture was made by an older preparation, made again from its checked points)."""
    ready = cast.prepared if cast.prepared is not None and cast.prepared.detector == detector else None
    if ready is not None and ready.current and ready.rgba.shape[0] == size:
        image = np.ascontiguousarray(ready.rgba[..., :3])
        return PreparedCast(cast, image, ready.points, _points_warp(ready.points, size), ready.rgba,
                             _dense(ready.mesh, alignment(quad_params(ready.landmarks), size), size))
    if ready is not None:
        return _texture(cast, ready.landmarks, size, ready.mesh)
    landmarks = check_portrait(cast, faces(cast.image))
    return _texture(cast, landmarks, size, _mesh_of(cast, landmarks, detector))


def _mesh_of(cast: Cast, landmarks: np.ndarray, detector: str) -> np.ndarray | None:
    if detector != "mediapipe":  # the HOG tracker gives the actor no mesh: the 68 points are warped
        return None
    from stream.perception.mesh import portrait_mesh

    return portrait_mesh(cast.image, landmarks)[:, :2]


def _dense(mesh: np.ndarray | None, align: Any, size: int) -> tuple[PiecewiseAffine, np.ndarray] | None:
    """The dense warp over the chosen vertices of a cast's mesh (portrait pixels), and which vertices."""
    if mesh is None:
        return None
    from stream.perception.mesh import dense_vertices

    ids = dense_vertices(mesh)
    return PiecewiseAffine(align.points_to_crop(mesh[ids].astype(np.float64)), size,
                           under=under_lids(mesh_lid_rows(ids))), ids


def _texture(cast: Cast, landmarks: np.ndarray, size: int, mesh: np.ndarray | None) -> PreparedCast:
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
    # parted opening is kept: leaving it out lets the actor's mouth through the cast's lips (d20 with s42: mouth
    # 0.67 against 0.92)
    mouth_width = float(np.linalg.norm(points[54] - points[48]))
    grow = max(1, round(MOUTH_GROW * mouth_width))
    opening = cv2.dilate(polygon_mask(points[60:68], size), disc(grow))
    lips = (polygon_mask(points[48:60], size) > 0.5) & (opening < 0.5)
    if _smiles_open(opening > 0.5, mouth_width):
        alpha = alpha * (1.0 - cv2.GaussianBlur(opening, (0, 0), max(1.0, size / 256)))
    image = _matte_lips(image, lips)
    rgba = np.dstack([image, np.round(alpha * 255).astype(np.uint8)])
    return PreparedCast(cast, image, points, _points_warp(points, size), rgba, _dense(mesh, align, size))


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
    shot's own fine detail is added back in the skin when the face is drawn (`look.detail.match_detail`). A portrait
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
