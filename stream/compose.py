"""The look of a recast face: where its eyes look, its detail, and its steadiness.

- ``Finish``: what every recaster's face goes through before it is pasted (warp, fomm, stylegan alike): the
  actor's own mouth interior, the actor's colour (steadied per track) and light (``transfer_light``), the cast's
  gaze moved to the actor's, and the detail of the shot; each track carries its colour, light, gaze and landmark
  filters from frame to frame.

- ``cast_gaze``: the cast's irises moved to where the actor's look (blinks follow already: the lids are warped
  onto the actor's). Keeping the actor's own eyes instead would follow too, but measured with dlib's face
  embedding it pulls the identity back towards the actor (d_cast 0.36 -> 0.48 on s18), so the cast's eyes move.
- ``OneEuro``: the landmarks a recaster warps to, steadied per track without lag on fast motion.
- ``clean_texture``: a cast portrait's hair over the forehead, temples and cheeks' sides (a fringe, strands) is
  replaced by its own skin once, when the cast is prepared, so no strand of the portrait's hair lands on the
  actor's face.
- ``match_detail``: a recast face is smoother than the picture around it (a portrait of smooth skin, resampled
  twice). Its fine detail is brought to the actor's level: the cast's own detail is sharpened (up to twice), and
  in the plain skin (cheeks, forehead, chin; not eyes, brows, nose or lips, which are the cast's) the actor's
  fine texture makes up the rest, so the face has the grain and focus of the shot it sits in.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, TypeVar

import cv2
import numpy as np

from stream.align import apply_color, blend, color_stats, crispness, disc, face_mask, polygon_mask

T = TypeVar("T")

_EYES = (list(range(36, 42)), list(range(42, 48)))
_BROWS = (list(range(17, 22)), list(range(22, 27)))
_NOSE = list(range(27, 36))
_LIPS = list(range(48, 60))
_INNER_MOUTH = list(range(60, 68))
GAZE_STEADY = 0.5  # the share of a new iris measurement taken each frame
GAZE_REACH = 0.38  # of the eye's width: the farthest the cast's iris is moved from where it was drawn
GAZE_IRIS = 0.26  # of the eye's width: the radius of the iris disc that is lifted and moved
GAZE_EMPTIED = 1.2  # of the iris disc's radius: the place filled with white where the iris was lifted from
# the white filled in: this percentile of the brighter half of the eye's white (its median was a dull grey once the
# iris moved far; session 15 found its 75th took Collins's flicker on d0 to 1.07, since then 0.98-1.00)
GAZE_WHITE = 75
GAZE_FIND = 0.2  # of the eye's width: the radius of the disc an iris is looked for with
SPAN_STEADY = 0.03  # the share of a new reading of where the actor's eyes visibly lie taken each frame
GAZE_DEAD = 0.05  # of the eye's width: so much of a measured shift is taken for the measurement's error
COLOR_STEADY = 0.3  # the share of a new colour measurement taken each frame (the light changes slowly)
MAX_TRACKS = 64  # tracks whose steadiness state is kept (the least recently seen goes first)


def keep_recent(store: dict[int, T], track_id: int, value: T) -> T:
    """`value` stored as the track's state, the most recently seen last; past MAX_TRACKS tracks the one seen least
    recently is dropped. The caller pops the track's old state first."""
    store[track_id] = value
    if len(store) > MAX_TRACKS:
        store.pop(next(iter(store)))
    return value


def smoothstep(zero: float, one: float, x: float | np.ndarray) -> float | np.ndarray:
    """0 at `zero`, 1 at `one` (either may be the larger), a smooth S between and flat beyond: no pop at either end.
    Elementwise for an array."""
    t = np.clip((np.asarray(x, dtype=np.float64) - zero) / (one - zero), 0.0, 1.0)
    out = t * t * (3.0 - 2.0 * t)
    return float(out) if out.ndim == 0 else out


def features_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Float mask [N,N] over the eyes, brows, nose and lips, grown by a tenth of the eye distance and feathered."""
    work = min(size, 128)  # a soft mask: made at 128 px at most and scaled up
    points = landmarks * (work / size)
    iod = float(np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0)))
    grow = max(1.0, 0.12 * iod)
    mask = np.zeros((work, work), np.float32)
    for part in (*_EYES, *_BROWS, _NOSE, _LIPS):
        mask = np.maximum(mask, polygon_mask(points[part], work))
    grown = cv2.dilate(mask, disc(round(grow)))
    out = np.asarray(cv2.GaussianBlur(grown, (0, 0), grow / 2), np.float32)
    return out if work == size else np.asarray(cv2.resize(out, (size, size)), np.float32)


SOFTEN_PROBES = (0.5, 1.0)  # px: the blurs whose crispness is measured to pick the one that softens a portrait
SOFTEN_MOST = 2.5  # px: the most a portrait is blurred
# the crop and the paste keep `kept` of the shot's crispness (FaceCrop.kept): what is lost beyond KEPT_FREE is made up
# when the cast's detail is raised, at most down to KEPT_LEAST. d0's textured skin keeps 0.80 (the scorer's sharp 0.77
# -> 0.85 made up); s18's and d20's keep 0.93: made up wholly, s18's recast flickered more (1.108 -> 1.122) and came
# out no crisper once encoded (sharp 1.20 either way)
KEPT_FREE, KEPT_LEAST = 0.95, 0.7
SOFTEN_EVERY, SOFTEN_STEADY = 4, 0.5  # a track's blur is measured every 4th frame and averaged (half the new one)


def _detail(gray: np.ndarray, sigma: float) -> np.ndarray:
    return gray - cv2.GaussianBlur(gray, (0, 0), sigma)


def match_detail(face: np.ndarray, actor: np.ndarray, landmarks: np.ndarray, mask: np.ndarray,
                 max_sharpen: float = 2.0, memory: dict[str, float] | None = None, kept: float = 1.0) -> np.ndarray:
    """`face` with fine detail at the actor's level inside `mask` (uint8 [N,N,3] each). The detail is the
    luminance above a Gaussian of about a pixel at 256 px (scaled with the crop); it is added to all three
    channels alike, so colour stays the cast's. How far the cast's own detail is raised is read at the pixel scale
    (a 3x3 Laplacian), the crispness of lashes, brows and lips' edges that the eye reads first: matched on the
    wider band, d0's recast stayed visibly softer than the shot (sharp 0.70 -> 0.75 with the pixel scale). A face
    crisper than the shot is first blurred down to its crispness (`_soften_sigma`): a sharp portrait's grain,
    pores and creases on a soft or blurred shot read as pasted on (s12 on s18: 1.77 times the shot's crispness,
    Cruise on d20 1.83). `memory` (one per track) keeps the blur, measured again every SOFTEN_EVERY frames. `kept`
    is the share of the shot's crispness the crop and the paste keep; a soft face is raised to make up for most of
    the loss (see KEPT_FREE)."""
    n = face.shape[0]
    sigma = max(0.8, n / 320)
    inside = mask > 0.5
    if inside.sum() < 64:
        return face
    gray_face = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gray_actor = cv2.cvtColor(actor, cv2.COLOR_RGB2GRAY).astype(np.float32)
    crisp_ours, crisp_theirs = crispness(gray_face, inside), crispness(gray_actor, inside)
    if crisp_theirs < crisp_ours:  # a portrait crisper than the shot (its grain, pores, creases) is softened to it
        sharpen = 0.0
        if memory is not None and "sigma" in memory and memory["age"] % SOFTEN_EVERY:
            blur = memory["sigma"]  # the focus of a shot changes slowly; measuring it costs 0.5-1 ms
        else:
            blur = _soften_sigma(gray_face, inside, crisp_ours, crisp_theirs)
            if memory is not None:
                if "sigma" in memory:
                    blur = memory["sigma"] + SOFTEN_STEADY * (blur - memory["sigma"])
                memory["sigma"] = blur
        if memory is not None:
            memory["age"] = memory.get("age", 0.0) + 1.0
        if blur >= 0.3:
            face = np.asarray(cv2.GaussianBlur(face, (0, 0), blur))
            gray_face = np.asarray(cv2.GaussianBlur(gray_face, (0, 0), blur))
    else:  # the cast's own detail raised, and further by what the crop and the paste will lose of it
        aim = crisp_theirs * max(1.0, KEPT_FREE / float(np.clip(kept, KEPT_LEAST, 1.0)))
        sharpen = float(np.clip(aim / max(crisp_ours, 1e-3) - 1.0, 0.0, max_sharpen))
    ours, theirs = _detail(gray_face, sigma), _detail(gray_actor, sigma)  # the face's detail once it is softened
    e_ours, e_theirs = float(np.abs(ours[inside]).mean()), float(np.abs(theirs[inside]).mean())
    if e_theirs <= e_ours or e_theirs < 1e-3:
        return face
    left = max(0.0, 1.0 - ((1.0 + sharpen) * e_ours / e_theirs) ** 2)  # what sharpening could not reach
    skin = (1.0 - features_mask(landmarks, n)) * mask
    # the cast's detail raised only well inside the face: at the feathered border (and where the portrait's hair was
    # painted over) a raised edge would show as a bright or dark seam
    core = np.clip(mask * 2.0 - 1.0, 0.0, 1.0)
    add = sharpen * ours * core + np.sqrt(left) * skin * theirs
    return np.clip(face.astype(np.float32) + add[..., None], 0, 255).astype(np.uint8)


def _soften_sigma(gray: np.ndarray, inside: np.ndarray, crisp: float, target: float) -> float:
    """The Gaussian blur (px) that brings `gray`'s crispness inside (`crisp`) down to `target`. The crispness is
    measured after two blurs (SOFTEN_PROBES) and read between them, linearly; past the larger one it is taken to
    fall as 1 / (1 + a sigma^2), a fitted to it (on four portraits' textures that model was within 0.2 of the
    measured crispness, 1-5, from 0.6 to 1.7 px). At most SOFTEN_MOST."""
    sigmas, crisps = [0.0], [crisp]
    for probe in SOFTEN_PROBES:
        sigmas.append(probe)
        crisps.append(crispness(cv2.GaussianBlur(gray, (0, 0), probe), inside))
        if crisps[-1] <= target:
            return float(np.interp(target, crisps[::-1], sigmas[::-1]))
    a = max(crisp / max(crisps[-1], 1e-6) - 1.0, 1e-3) / sigmas[-1] ** 2
    return min(float(np.sqrt(max(crisp / max(target, 1e-6) - 1.0, 0.0) / a)), SOFTEN_MOST)


def _iris(gray: np.ndarray, opening: np.ndarray, radius: float | None = None) -> tuple[np.ndarray, float] | None:
    """The iris centre in an eye opening and how sure: the share of the opening's darkness within it. None where
    the opening is closed or flat. With `radius` (px) the iris is where a disc of that radius (a square of its
    area) gathers the most darkness, refined by the darkness's weighted centre within the disc: the darkness of
    the whole opening, its lashes and lid shadow included, put an iris in the eye's corner a third of the way
    back to the middle (d0, looking aside: 0.17 of the eye's width from the middle where it is 0.32). Without,
    the weighted centre of all of it."""
    inside = opening > 0.5
    if inside.sum() < 12:
        return None
    values = gray[inside]
    dark = np.clip(np.percentile(values, 90) - gray, 0, None) * inside
    total = float(dark.sum())
    if total < 1e-3:
        return None
    weight = dark**2
    if radius is not None and radius >= 1.5:
        # a square of the disc's area gathers nearly as a disc would, at a fraction of the cost
        side = max(3, round(radius * np.sqrt(np.pi)) | 1)
        gathered = cv2.boxFilter(dark.astype(np.float32), -1, (side, side), normalize=False,
                                 borderType=cv2.BORDER_CONSTANT)
        py, px = np.unravel_index(int(np.argmax(gathered)), gathered.shape)
        ys, xs = np.ogrid[0 : dark.shape[0], 0 : dark.shape[1]]
        weight = weight * ((xs - px) ** 2 + (ys - py) ** 2 <= radius**2)
        if float(weight.sum()) < 1e-6:
            return None
    ys, xs = np.nonzero(weight)
    w = weight[ys, xs]
    return np.array([np.average(xs, weights=w), np.average(ys, weights=w)]), total


def cast_gaze(face: np.ndarray, actor: np.ndarray, landmarks: np.ndarray,
              memory: dict[int, np.ndarray] | None = None, spans: np.ndarray | None = None,
              cast_spans: np.ndarray | None = None) -> np.ndarray:
    """`face` (the cast warped onto the actor) with each of its irises moved to where the actor's looks: the
    cast's iris disc is lifted, its place filled with the white of its eye, and the disc set down at the actor's
    iris position within the same opening (the lids, the cast's, cover what falls outside it). `memory` (one per
    track) steadies the shift over frames, as eyes do not tremble; it is measured in eye widths, so it holds
    while the face moves. `spans` ([2,2], mesh.EyeReading's) say where the actor's eyes visibly lie between the
    corners of `landmarks`, and `cast_spans` where the cast's do between the same corners (its portrait's, read
    once): the cast's iris is then placed as far along its visible eye as the actor's lies along his (the mesh's
    corners lie outside d0's actor's visible ones, unevenly, and the cast's irises looked aside unevenly)."""
    n = face.shape[0]
    out = face.copy()
    for side, eye in enumerate(_EYES):
        points = landmarks[eye]
        width = float(np.linalg.norm(points[3] - points[0]))
        height = float(np.linalg.norm(points[1] - points[5]) + np.linalg.norm(points[2] - points[4])) / 2
        if width < 6 or height < 0.12 * width:  # too small, or a blink: the cast's own closed eye
            continue
        # everything happens in a box around the eye (a whole-crop pass per eye cost 12 ms at 420 px)
        pad = 0.5 * width
        x0, y0 = np.maximum(np.floor(points.min(axis=0) - pad).astype(int), 0)
        x1, y1 = np.minimum(np.ceil(points.max(axis=0) + pad).astype(int) + 1, n)
        if x1 - x0 < 4 or y1 - y0 < 4:
            continue
        local = points - (x0, y0)
        h, w = y1 - y0, x1 - x0
        opening = polygon_mask(local, (h, w))
        ours_rgb = face[y0:y1, x0:x1].astype(np.float32)
        find = GAZE_FIND * width
        theirs = _iris(cv2.cvtColor(np.ascontiguousarray(actor[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY).astype(np.float32),
                       opening, find)
        ours = _iris(cv2.cvtColor(np.ascontiguousarray(face[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY).astype(np.float32),
                     opening, find)
        if theirs is None or ours is None:
            continue
        looks = theirs[0]
        if spans is not None and cast_spans is not None and np.all(np.isfinite(spans[side])) \
                and np.all(np.isfinite(cast_spans[side])):
            along = (points[3] - points[0]) / width
            (offset, span), (cast_offset, cast_span) = spans[side], cast_spans[side]
            lies = float((looks - ((local[0] + local[3]) / 2)) @ along) / width
            goes = cast_offset + cast_span * (lies - offset) / max(span, 0.5)
            looks = looks + (goes - lies) * width * along
        shift = np.clip(looks - ours[0], -GAZE_REACH * width, GAZE_REACH * width)
        # a shift within the measurement's own error (each eye's lashes, make-up and glints pull its iris a little
        # its own way; on s18 the two irises were pushed apart) is no shift: eyes looking ahead stay the cast's.
        # From twice that on the shift is taken whole
        shift = shift * smoothstep(GAZE_DEAD * width, 2 * GAZE_DEAD * width, np.abs(shift))
        if memory is not None:
            relative = shift / width
            if side in memory:
                relative = memory[side] + GAZE_STEADY * (relative - memory[side])
            memory[side] = relative
            shift = relative * width
        if float(np.abs(shift).max()) < 0.5:
            continue
        radius = GAZE_IRIS * width
        disc = _soft_disc((h, w), ours[0], radius, max(0.5, radius * 0.15))
        white = opening * (1 - disc) > 0.5
        if white.sum() < 4:
            continue
        # the white of the eye: the brighter half of the opening outside the disc (lashes, lid shadow and the
        # iris's rim darken the rest; their median left a grey ghost of the iris where it had been)
        rest = ours_rgb[white]
        light = rest.sum(axis=1)
        sclera = np.percentile(rest[light >= np.median(light)], GAZE_WHITE, axis=0)
        move = np.array([[1, 0, shift[0]], [0, 1, shift[1]]], np.float32)
        moved = cv2.warpAffine(ours_rgb, move, (w, h), borderMode=cv2.BORDER_REPLICATE)
        moved_disc = cv2.warpAffine(disc, move, (w, h))[..., None]
        soft = cv2.GaussianBlur(opening, (0, 0), max(0.6, width * 0.03))[..., None]
        # the disc's old place, white: a wider disc, or the iris's dark rim and the shade under it stayed as a grey
        # crescent along the lower lid
        wide = _soft_disc((h, w), ours[0], radius * GAZE_EMPTIED, max(0.5, radius * 0.15))[..., None]
        emptied = ours_rgb * (1 - wide) + sclera * wide
        iris = emptied * (1 - moved_disc) + moved * moved_disc
        blended = ours_rgb * (1 - soft) + iris * soft
        out[y0:y1, x0:x1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out


def _soft_disc(shape: tuple[int, int], centre: np.ndarray, radius: float, blur: float) -> np.ndarray:
    """A float32 disc [h,w] of `radius` at `centre` (pixels, drawn at a quarter pixel), its edge softened by `blur`."""
    drawn = np.zeros(shape, np.float32)
    cv2.circle(drawn, tuple(np.round(centre * 4).astype(int)), round(radius * 4), 1.0, -1, lineType=cv2.LINE_AA,
               shift=2)
    return np.asarray(cv2.GaussianBlur(drawn, (0, 0), blur), np.float32)


LID_RISE, LID_SETTLE = 0.3, 0.05  # the share of a new opening a track's open eye takes: one above it, one near it
LID_NEAR = 0.8  # of the open eye: an opening under it (a blink, a squint) leaves the open eye as it is
LID_DEAD = (0.7, 0.9)  # of the open eye: an eye as open as 0.9 of it is taken as open (the measure's own noise),
# and the whole closure is taken from 0.7 down


def open_eye(memory: dict[str, float], key: str, opening: float) -> float:
    """A track's open eye for `key`: an average that rises quickly to a larger opening, settles slowly on openings
    near it and ignores blinks."""
    held = memory.get(key)
    if held is None:
        held = opening
    elif opening > held:
        held += LID_RISE * (opening - held)
    elif opening > LID_NEAR * held:
        held += LID_SETTLE * (opening - held)
    memory[key] = held
    return held


def lid_opening(upper: np.ndarray, lower: np.ndarray, width: float) -> float:
    """An eye's opening: the mean distance between its `upper` and `lower` lids' points of the same rank ([K,2]
    each) over its `width` between corners."""
    return float(np.mean(np.linalg.norm(upper - lower, axis=1))) / width


def close_lids(upper: np.ndarray, lower: np.ndarray, width: float, opening: float, memory: dict[str, float],
               key: str) -> np.ndarray:
    """The `upper` lid's points ([K,2]) moved straight towards the `lower` lid's of the same rank so that the warp's
    eye (`width` between its corners) is as open, for its open state, as the actor's is for his: `opening` is his
    eye's opening as the iris model reads it (mesh.EyeOpenings). Each open state is the track's own (`open_eye`,
    kept in `memory` under `key`). Lids are only ever lowered: the mesh's own lids follow a blink part way."""
    if not np.isfinite(opening) or width <= 0:
        return upper
    share = min(opening / max(open_eye(memory, key + "/actor", opening), 1e-6), 1.0)
    share += (1.0 - share) * float(smoothstep(LID_DEAD[0], LID_DEAD[1], share))
    now = lid_opening(upper, lower, width)
    aim = open_eye(memory, key + "/lids", now) * share
    if now <= 1e-6 or aim >= now:
        return upper
    return lower + (upper - lower) * (aim / now)


LIGHT_WORK = 64  # px: the light is measured and moved at this size (it is smooth by definition)
LIGHT_SIGMA = 0.07  # of the crop: the scale of shading moved from the actor (a cheek, a side of the nose)
LIGHT_STEADY = 0.5  # the share of a new light measurement taken each frame
LIGHT_RANGE = (0.5, 2.0)  # the most a channel of the cast's skin is scaled at a place


def transfer_light(face: np.ndarray, actor: np.ndarray, landmarks: np.ndarray, mask: np.ndarray,
                   memory: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """`face` lit and coloured as the actor's skin is, place by place: per channel, the ratio of the actor's
    low-frequency colour to the face's, each measured over the plain skin only (not eyes, brows, nostrils or lips,
    whose darkness is not light: normalised convolution fills the skin's values in across them), multiplied into
    the face (light and skin tone scale what a surface reflects, so the cast's features keep their contrast).
    Where light falls from one side, or a cheek is in shadow or flushed, the cast's face is too, and its border
    meets the actor's skin at the same colour. `memory` (one per track) averages the ratio over frames."""
    n = face.shape[0]
    scale = LIGHT_WORK / n
    small = [cv2.resize(x, (LIGHT_WORK, LIGHT_WORK), interpolation=cv2.INTER_AREA).astype(np.float32)
             for x in (face, actor)]
    # plain skin only, strictly: a feature's darkness taken for shade would brighten the cast around its eyes.
    # The actor's skin is all of the actor's face; the cast's is where its face is pasted (not where the
    # portrait's hair was), so at the paste's border the cast meets the actor's own shade there
    plain = features_mask(landmarks * scale, LIGHT_WORK) < 0.1
    small_mask = cv2.resize(mask, (LIGHT_WORK, LIGHT_WORK), interpolation=cv2.INTER_AREA)
    inside = small_mask > 0.5
    cast_skin = (inside & plain).astype(np.float32)
    actor_skin = ((face_mask(landmarks * scale, LIGHT_WORK) > 0.5) & plain).astype(np.float32)
    if float(cast_skin.sum()) < max(16.0, 0.1 * float(inside.sum())):  # too little plain skin to measure
        return face
    sigma = LIGHT_SIGMA * LIGHT_WORK
    weight, actor_weight = (cv2.GaussianBlur(x, (0, 0), sigma) + 1e-4 for x in (cast_skin, actor_skin))
    ours = cv2.GaussianBlur(small[0] * cast_skin[..., None], (0, 0), sigma) / weight[..., None]
    theirs = cv2.GaussianBlur(small[1] * actor_skin[..., None], (0, 0), sigma) / actor_weight[..., None]
    # only where both skins were measured near enough: further off (a wide open mouth) the change fades out
    near = np.minimum(weight / max(float(weight.max()), 1e-4), actor_weight / max(float(actor_weight.max()), 1e-4))
    reach = np.clip(near * 2.0, 0.0, 1.0)[..., None]
    # all of the face, its feathered border too; nothing a work pixel or more outside it (made small, then scaled up:
    # a pass over the whole crop cost more than the rest together)
    pasted = cv2.dilate((small_mask > 0).astype(np.uint8), np.ones((3, 3), np.uint8))[..., None]
    ratio = np.clip((theirs + 1.0) / (ours + 1.0), *LIGHT_RANGE)
    if memory is not None:  # one per track: the light of a face changes slowly, its measurement is noisy
        if "ratio" in memory:
            ratio = memory["ratio"] + LIGHT_STEADY * (ratio - memory["ratio"])
        memory["ratio"] = ratio
    ratio = np.where(pasted > 0, 1.0 + (ratio - 1.0) * reach, 1.0)
    full = cv2.resize(ratio.astype(np.float32), (n, n), interpolation=cv2.INTER_LINEAR)
    return np.asarray(cv2.multiply(face, full, dtype=cv2.CV_8U))  # rounded, saturated


class OneEuro:
    """A landmark filter that is steady when the face is still and quick when it moves (Casiez et al., the 1€
    filter): per point, a low-pass whose cut-off rises with the point's speed. Points are in crop units (divided
    by the crop size) and speeds in eye distances per frame, so it behaves alike at any face size."""

    def __init__(self, min_cutoff: float = 0.03, beta: float = 6.0, d_cutoff: float = 0.2) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float) -> np.ndarray:
        tau = 1.0 / (2 * np.pi * np.asarray(cutoff))
        return 1.0 / (1.0 + tau)

    def __call__(self, points: np.ndarray, size: int, scale_of: np.ndarray | None = None) -> np.ndarray:
        """`points` filtered; speeds are measured in eye distances of `scale_of` (68 points; `points` by default)."""
        x = points.astype(np.float64) / size
        if self._x is None or self._x.shape != x.shape:
            self._x, self._dx = x, np.zeros_like(x)
            return points
        assert self._dx is not None
        ref = x if scale_of is None else scale_of.astype(np.float64) / size
        iod = max(float(np.linalg.norm(ref[36:42].mean(0) - ref[42:48].mean(0))), 1e-3)
        dx = self._dx + self._alpha(self.d_cutoff) * ((x - self._x) - self._dx)
        speed = np.linalg.norm(dx, axis=1, keepdims=True) / iod
        alpha = self._alpha(self.min_cutoff + self.beta * speed)
        self._x, self._dx = self._x + alpha * (x - self._x), dx
        return (self._x * size).astype(points.dtype)


# of the eye distance: how far the hair left out is grown, and its edge feathered. Next to a portrait's hair its skin
# is rarely clean (a strand's fringe, its shadow, the inpaint's smear). Grown 0.02, a pale patch above d0's brow and
# a dark streak at d20's temple stayed with s42; at 0.05 they mostly go; at 0.08 wholly, but with the default cast
# (Collins, whose fringe covers her forehead down to the brows) so much of the actor's forehead shows that on d0 the
# recast is nearer the actor in 15 % of frames (cast_closer 1.00 -> 0.85; 0.96 at 0.05)
HAIR_GROW, HAIR_FEATHER = 0.05, 0.04
OUTSIDE_REACH = 0.06  # of the face's width: how far outside its outline a portrait's hair is looked for
STRAND_BAR, STRAND_FLOOR = 4.0, 6.0  # a strand's black-hat: over 4x the cheeks' typical one and over 6 levels
SKIN_SPREADS = 3.5  # skin is within this many robust spreads of the cheeks' colour (per Lab channel, combined)
# a strand hanging from the hair, thinned to a few hairs over the skin, is hair down to this distance from the
# cheeks' colour (SKIN_SPREADS elsewhere), and down to this share of the black-hat's bar: s42's faint strands by
# the eye
HAIR_WEAK = 2.5
HAIR_FILL = 0.12  # of the eye distance: the reach of the skin painted over the hair left out


def _filled(outline: np.ndarray, n: int) -> np.ndarray:
    """Bool mask [n,n] inside a polygon (pixels, not necessarily convex)."""
    inside = np.zeros((n, n), np.uint8)
    cv2.fillPoly(inside, [np.round(outline * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return inside > 0


def clean_texture(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """A cast texture (uint8 [N,N,3], its 68 landmarks in pixels) with the hair over its forehead, temples and the
    sides of its cheeks (long hair falling over the face, and the faint strands hanging from it) painted over with
    the skin around it; where it was (grown by HAIR_GROW, feathered) 0 in the returned alpha [N,N] float32, 1
    elsewhere, so that the actor's own skin shows there rather than a smear; and the share of that band that was
    hair. A ring just outside the face's outline is looked at too: hair and background there are left out the same
    way. Skin is what matches the colour of the cheeks' middle (per Lab channel, within SKIN_SPREADS robust
    spreads) and is not a thin dark line (a strand); the brows are kept."""
    n = image.shape[0]
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    lm = landmarks
    # the middle of each cheek, well inside the face (a portrait's hair often falls over the cheeks' sides)
    cheeks = (polygon_mask(np.stack([lm[41], lm[31], lm[48], (lm[3] + lm[31]) / 2, (lm[1] + lm[41]) / 2]), n) > 0.5) | (
        polygon_mask(np.stack([lm[46], lm[35], lm[54], (lm[13] + lm[35]) / 2, (lm[15] + lm[46]) / 2]), n) > 0.5)
    opaque = np.ones((n, n), np.float32)
    if cheeks.sum() < 50:
        return image, opaque, 0.0
    skin = lab[cheeks]
    mean = np.median(skin, axis=0)  # robust: a strand or a shadow in the sample does not move them
    spread = np.maximum(1.4826 * np.median(np.abs(skin - mean), axis=0), (4.0, 2.0, 2.0))
    lift = (landmarks[36:48].mean(axis=0) - landmarks[8]) * 0.25  # as the face mask lifts the brows
    top = landmarks[17:27] + lift
    # the forehead (the band from the brows' top edge up to the lifted brows, following their arch: its convex
    # hull also took in the brows under the arch, and a portrait's thick brows, s12's, were left out as hair) and
    # each temple (from the face's side at eye level up)
    band = (_filled(np.concatenate([landmarks[17:27], top[::-1]]), n)
            | (polygon_mask(np.stack([landmarks[0], landmarks[17], top[0]]), n) > 0.5)
            | (polygon_mask(np.stack([landmarks[16], landmarks[26], top[9]]), n) > 0.5))
    # the cheeks' sides: from the jaw line a quarter of the way in towards the nose, ear to jaw corner
    inward = landmarks[0:17] + (landmarks[30] - landmarks[0:17]) * 0.25
    for side in (slice(0, 7), slice(10, 17)):
        band |= _filled(np.concatenate([landmarks[side], inward[side][::-1]]), n)
    # and just outside the face's outline, where the paste's border can reach (the dense warp follows the mesh's
    # oval, which runs past the 68 points' jaw on many portraits): whatever is not skin there is hair or background
    hull = polygon_mask(np.concatenate([landmarks[0:17], top[::-1]]), n) > 0.5
    reach = max(3, round(OUTSIDE_REACH * float(np.linalg.norm(landmarks[0] - landmarks[16]))))
    grown = cv2.dilate(hull.astype(np.uint8), disc(reach))
    band |= (grown > 0) & ~hull
    for eye in (landmarks[36:42], landmarks[42:48]):  # never an eye
        centre = eye.mean(axis=0)
        band &= polygon_mask(centre + (eye - centre) * 1.8, n) < 0.5
    iod = float(np.linalg.norm(landmarks[36:42].mean(0) - landmarks[42:48].mean(0)))
    brows = np.zeros((n, n), np.uint8)
    for brow in (landmarks[17:22], landmarks[22:27]):
        cv2.polylines(brows, [np.round(brow).astype(np.int32)], False, 1, max(2, round(0.25 * iod)))
    distance = np.sqrt((((lab - mean) / spread) ** 2).sum(axis=2))
    # thin strands nearly of skin colour still show as dark lines: a black-hat of the lightness finds them
    lines = cv2.morphologyEx(lab[..., 0], cv2.MORPH_BLACKHAT, disc(max(3, round(0.12 * iod)) // 2))
    # a strand is a line darker than the cheeks' own fine texture gives: measured on the cheeks' black-hat (the
    # lightness's spread, which it was measured on before, is mostly the portrait's shading and let faint strands
    # over a forehead through)
    texture = lines[cheeks]
    typical = float(np.median(texture))
    bar = max(STRAND_FLOOR, STRAND_BAR * (typical + 1.4826 * float(np.median(np.abs(texture - typical)))))
    searched = band & (brows == 0)
    hair = (((distance > SKIN_SPREADS) | (lines > bar)) & searched).astype(np.uint8)
    hair = cv2.morphologyEx(hair, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    seeds = (hair > 0) & hull
    if seeds.any():  # and the faint strands that hang from the hair over the face (weak, where connected to it)
        weak = ((distance > HAIR_WEAK) | (lines > bar * HAIR_WEAK / SKIN_SPREADS)) & searched & hull
        weak = (cv2.morphologyEx(weak.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0) | seeds
        count, labels = cv2.connectedComponents(weak.astype(np.uint8), connectivity=8)
        keep = np.zeros(count, bool)
        keep[np.unique(labels[seeds])] = True
        keep[0] = False
        hair = np.maximum(hair, keep[labels].astype(np.uint8))
    share = float(hair.sum()) / max(float(band.sum()), 1.0)
    if not hair.any():
        return image, opaque, 0.0
    grow = max(2, round(HAIR_GROW * iod))
    hair = cv2.dilate(hair, disc(grow))
    image = _lift_hair_shadow(image, lab, hair, hull, landmarks, brows, iod, mean, spread)
    feather = max(1.0, HAIR_FEATHER * iod)
    alpha = np.clip(1.0 - cv2.GaussianBlur(hair.astype(np.float32), (0, 0), feather) * 1.5, 0.0, 1.0)
    # painted with the skin around it, smoothly (normalised convolution of the skin left; far from any skin, as in a
    # thumbnail's corner, the skin's typical colour): at the alpha's feathered edge only skin shows. Inpainted from
    # the hair's edge (Telea), the hair-shadowed skin there was drawn in as a grey smear, which showed as a pale
    # band down s18's cheek with s42
    skin_left = (hull & (hair == 0) & (distance <= SKIN_SPREADS)).astype(np.float32)
    reach_fill, typical_skin = max(2.0, HAIR_FILL * iod), np.median(image[cheeks].astype(np.float32), axis=0)
    fill = cv2.GaussianBlur(image.astype(np.float32) * skin_left[..., None], (0, 0), reach_fill) + 0.02 * typical_skin
    fill /= cv2.GaussianBlur(skin_left, (0, 0), reach_fill)[..., None] + 0.02
    painted = np.where(hair[..., None] > 0, np.clip(fill, 0, 255).astype(np.uint8), image)
    return painted, alpha.astype(np.float32), share


SHADOW_REACH = 0.35  # of the eye distance: how far from a portrait's hair its shadow on the skin is lifted
SHADOW_SCALE = 0.12  # of the eye distance: the scale at which the shadow's darkness is measured
SHADOW_FLOOR = 0.35  # of the cheeks' lightness: darker is hair, a brow or a moustache, never shaded skin


def _lift_hair_shadow(image: np.ndarray, lab: np.ndarray, hair: np.ndarray, hull: np.ndarray, landmarks: np.ndarray,
                      brows: np.ndarray, iod: float, skin: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """`image` with the skin beside the hair left out lightened to the cheeks' lightness, where it is darker: hair
    shades the skin it falls beside (s42's temple beside her eye is 74-120 in lightness against 180 on her
    cheeks), and stretched over an actor's brighter temple that shade reads as a grey wedge. Shaded skin is skin
    by its colour (a, b within SKIN_SPREADS of the cheeks'), whatever its lightness down to SHADOW_FLOOR, and not
    a brow; the shade is measured smoothly over it (SHADOW_SCALE), and what it lacks is added to the lightness of
    all that is kept there, smoothly, so the skin's grain, a lash or a strand of moustache keep their contrast and
    no patch of darker pixels is left behind. The eyes' openings and the lips are left as they are."""
    n = image.shape[0]
    chroma = np.sqrt((((lab[..., 1:] - skin[1:]) / spread[1:]) ** 2).sum(axis=2))
    shaded_skin = (hull & (hair == 0) & (brows == 0) & (chroma <= SKIN_SPREADS)
                   & (lab[..., 0] >= SHADOW_FLOOR * skin[0])).astype(np.float32)
    # all that is kept near the hair, the brows' ends too (left darker than the lightened skin, they framed the
    # brows in a dark band; with them lightened Collins's d_cast on d0 was 0.48 against 0.51)
    kept = (hull & (hair == 0)).astype(np.float32)
    near = cv2.GaussianBlur(hair.astype(np.float32), (0, 0), max(1.0, SHADOW_REACH * iod / 2))
    near = np.clip(near * 4.0, 0.0, 1.0) * kept
    for part, grow in ((landmarks[36:42], 1.3), (landmarks[42:48], 1.3), (landmarks[48:60], 1.15)):
        centre = part.mean(axis=0)
        near *= 1.0 - polygon_mask(centre + (part - centre) * grow, n, blur=max(1.0, 0.05 * iod))
    if float(near.max()) < 0.05:
        return image
    sigma = max(1.0, SHADOW_SCALE * iod)
    weight = cv2.GaussianBlur(shaded_skin, (0, 0), sigma)[..., None] + 1e-4
    local = cv2.GaussianBlur(lab * shaded_skin[..., None], (0, 0), sigma) / weight
    deficit = np.clip(skin[0] - local[..., 0], 0.0, None)
    # never past the skin's own lightness (and its spread): skin beside a dark lash, lit already, is not lightened.
    # Added, not multiplied: divided out, the shade's grain (on an old photograph, its noise) came back coloured
    rise = np.minimum(deficit * near, np.clip(skin[0] + spread[0] - lab[..., 0], 0.0, None))
    # a shade is darker and, lightened alone, more saturated than the skin: its colour goes to the skin's as far
    # as its darkness is lifted
    share = (near * np.clip(deficit / max(0.5 * skin[0], 1.0), 0.0, 1.0))[..., None]
    shift = np.concatenate([rise[..., None], (skin[1:] - local[..., 1:]) * share], axis=2)
    lifted = cv2.cvtColor(np.clip(lab + shift, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    return np.where((near > 0)[..., None], lifted, image)  # elsewhere not even 8-bit Lab's round trip


@dataclass
class TrackLook:
    """What a track carries from frame to frame, so its face does not flicker: the colour statistics, the light's
    ratio, the gaze shift, the softening blur and the open eyes, each an exponential average, and the filters of its
    landmarks and mesh."""

    color: np.ndarray | None = None
    gaze: dict[int, np.ndarray] = field(default_factory=dict)
    points: OneEuro = field(default_factory=OneEuro)
    mesh: OneEuro = field(default_factory=OneEuro)  # the dense mesh's points, where the tracker gives them
    light: dict[str, np.ndarray] = field(default_factory=dict)  # the light's ratio field, averaged
    soften: dict[str, float] = field(default_factory=dict)  # the blur that softens a crisp portrait to the shot
    # the open eye of the actor, of the warp's lids and of the 68 points (recasters.eyes_to_read), and a frame count
    lids: dict[str, float] = field(default_factory=dict)
    spans: np.ndarray | None = None  # where the actor's eyes visibly lie between the mesh's corners, averaged
    read: Any = None  # the iris model's last reading of the eyes (mesh.EyeReading), for the frames it skips


class Finish:
    """The steps a recast face goes through before it is pasted, the same for every recaster: the actor's own
    mouth interior where the mouth opens (`mouth`; teeth and tongue never smear), the actor's colour (`color`)
    and light (`light`, with the colour unless told), the cast's irises moved to the actor's gaze (`gaze`), and
    the shot's detail (`detail`). A recaster whose face is not drawn on the actor's landmarks (FOMM moves the
    cast's own mouth and eyes) leaves `mouth` and `gaze` off."""

    def __init__(self, *, color: bool = True, light: bool | None = None, mouth: bool = False, gaze: bool = False,
                 detail: bool = True) -> None:
        self.color, self.mouth, self.gaze, self.detail = color, mouth, gaze, detail
        self.light = color if light is None else light
        self._looks: dict[int, TrackLook] = {}

    def fresh(self) -> Finish:
        """The same steps with no track state (a session's own)."""
        other = copy.copy(self)
        other._looks = {}
        return other

    def look(self, track_id: int) -> TrackLook:
        look = self._looks.pop(track_id, None)
        return keep_recent(self._looks, track_id, look if look is not None else TrackLook())

    def __call__(self, face: np.ndarray, actor: np.ndarray, points: np.ndarray, mask: np.ndarray,
                 look: TrackLook, kept: float = 1.0, spans: np.ndarray | None = None,
                 cast_spans: np.ndarray | None = None) -> np.ndarray:
        """`face` ([N,N,3] uint8, drawn on `points`) finished against the `actor`'s crop, inside `mask`; `spans`
        and `cast_spans` where the actor's and the cast's eyes visibly lie (mesh.EyeReading), for the gaze."""
        n = face.shape[0]
        if self.mouth:
            inner = polygon_mask(points[_INNER_MOUTH], n, blur=1.5)
            if inner.any():
                face = blend(face, actor, inner)
        if self.color:
            # over the whole face: statistics of the skin alone matched skin tones more closely, but moved the
            # identity towards the actor's (d20: d_cast 0.449 -> 0.479) and flickered more
            stats = color_stats(face, actor, mask)
            if stats is not None:
                look.color = stats if look.color is None else look.color + COLOR_STEADY * (stats - look.color)
                face = apply_color(face, look.color)
        if self.light:
            face = transfer_light(face, actor, points, mask, look.light)
        if self.gaze:
            if spans is not None and np.all(np.isfinite(spans)):  # a face's own bias: averaged slowly
                look.spans = spans if look.spans is None else look.spans + SPAN_STEADY * (spans - look.spans)
            # the cast's eyes look where the actor's do
            face = cast_gaze(face, actor, points, look.gaze, look.spans, cast_spans)
        if self.detail:
            # the grain and focus of the shot
            face = match_detail(face, actor, points, mask, memory=look.soften, kept=kept)
        return face
