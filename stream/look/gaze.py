"""The cast's irises moved to where the actor's look (blinks follow already: the lids are warped onto the
actor's). Keeping the actor's own eyes would follow too, but it pulls the identity back towards the actor, so
the cast's eyes move."""

from __future__ import annotations

import cv2
import numpy as np

from stream.look.features import EYES
from stream.look.filters import smoothstep
from stream.look.masks import polygon_mask

GAZE_STEADY = 0.5  # the share of a new iris measurement taken each frame
GAZE_REACH = 0.38  # of the eye's width: the farthest the cast's iris is moved from where it was drawn
GAZE_IRIS = 0.26  # of the eye's width: the radius of the iris disc that is lifted and moved
GAZE_EMPTIED = 1.2  # of the iris disc's radius: the place filled with white where the iris was lifted from
# the white filled in: this percentile of the brighter half of the eye's white (its median is a dull grey once the
# iris moves far; with the 75th, Collins's flicker on d0 is 0.98-1.00)
GAZE_WHITE = 75
GAZE_FIND = 0.2  # of the eye's width: the radius of the disc an iris is looked for with
SPAN_STEADY = 0.03  # the share of a new reading of where the actor's eyes visibly lie taken each frame
GAZE_DEAD = 0.05  # of the eye's width: so much of a measured shift is taken for the measurement's error


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
    dark = np.clip(_percentile_90(gray[inside]) - gray, 0, None) * inside
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
    mass = float(weight.sum())
    if mass < 1e-6:
        return None
    # the weighted centre, from the weight's sums along rows and columns
    across = weight.sum(axis=0, dtype=np.float64) @ np.arange(weight.shape[1])
    down = weight.sum(axis=1, dtype=np.float64) @ np.arange(weight.shape[0])
    return np.array([across / mass, down / mass]), total


def _percentile_90(values: np.ndarray) -> float:
    """np.percentile(values, 90) (linear between the two nearest ranks), by a partial sort: a third of the time."""
    position = 0.9 * (values.size - 1)
    low = int(position)
    high = min(low + 1, values.size - 1)
    ranked = np.partition(values, (low, high))
    return float(ranked[low] + (ranked[high] - ranked[low]) * (position - low))


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
    for side, eye in enumerate(EYES):
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
