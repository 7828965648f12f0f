"""Crop a face by its quad to N x N, warp back, masks, colour match and paste-back.

The STIT quad is a rotated square, so frame -> crop is a similarity transform: one 2x3 matrix each way.
Paste-back touches only the bounding rectangle of the warped mask, and inside it only the pixels whose
mask weight is above zero: nothing outside the face mask changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from stream.smoothing import quad_corners

# Landmarks of the face outline: jaw (0-16) and brows (17-26); the mask is their hull, lifted to the forehead.
_JAW = list(range(17))
_BROWS = list(range(17, 27))


@dataclass(frozen=True)
class Alignment:
    """Where one face's N x N crop sits in its frame."""

    size: int
    to_crop: np.ndarray  # [2,3] frame -> crop
    to_frame: np.ndarray  # [2,3] crop -> frame

    def points_to_crop(self, points: np.ndarray) -> np.ndarray:
        return points @ self.to_crop[:, :2].T + self.to_crop[:, 2]

    def points_to_frame(self, points: np.ndarray) -> np.ndarray:
        return points @ self.to_frame[:, :2].T + self.to_frame[:, 2]


def alignment(params: np.ndarray, size: int) -> Alignment:
    """The crop of the quad with parameters ``[cx, cy, xx, xy]`` at ``size`` x ``size`` pixels."""
    corners = quad_corners(params).astype(np.float32)  # TL, BL, BR, TR
    dst = np.array([[0, 0], [0, size], [size, size]], dtype=np.float32)
    to_crop = cv2.getAffineTransform(corners[:3], dst)
    to_frame = cv2.invertAffineTransform(to_crop)
    return Alignment(size, to_crop.astype(np.float64), to_frame.astype(np.float64))


def crop(image: np.ndarray, align: Alignment, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """The N x N aligned crop (pixels outside the frame replicate the border)."""
    return cv2.warpAffine(image, align.to_crop, (align.size, align.size), flags=interpolation,
                          borderMode=cv2.BORDER_REPLICATE)


def crispness(gray: np.ndarray, inside: np.ndarray) -> float:
    """The mean absolute 3x3 Laplacian inside a region: detail at the pixel scale."""
    return float(np.abs(cv2.Laplacian(gray, cv2.CV_32F))[inside].mean())


def crispness_kept(frame: np.ndarray, face: np.ndarray, align: Alignment, landmarks: np.ndarray) -> float:
    """How much of the frame's crispness inside the face's outline (68 points in frame pixels) survives its crop
    ``face`` and the paste back: both resample with cubic weights at sub-pixel offsets, which smooths the finest
    detail (d0's textured skin keeps 0.81 of it, d20's smoother one 0.93). Measured on the crop pasted back as it
    is, in the face's bounding rectangle."""
    outline = mask_outline(landmarks)
    h, w = frame.shape[:2]
    x0, y0 = np.maximum(np.floor(outline.min(axis=0)).astype(int) - 2, 0)
    x1, y1 = np.minimum(np.ceil(outline.max(axis=0)).astype(int) + 3, (w, h))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return 1.0
    inside = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillConvexPoly(inside, cv2.convexHull((outline - (x0, y0)).astype(np.int32)), 1)
    inside = cv2.erode(inside, disc(2)) > 0
    if not inside.any():
        return 1.0
    shift = align.to_frame.copy()
    shift[:, 2] -= (x0, y0)
    back = cv2.warpAffine(face, shift, (x1 - x0, y1 - y0), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    grey = cv2.COLOR_RGB2GRAY
    shot = crispness(cv2.cvtColor(frame[y0:y1, x0:x1], grey).astype(np.float32), inside)
    kept = crispness(cv2.cvtColor(back, grey).astype(np.float32), inside)
    return kept / shot if shot > 1e-3 else 1.0


def mask_outline(landmarks: np.ndarray) -> np.ndarray:
    """The points whose hull is the face mask [27,2]: the jaw, and the brows lifted to the hairline. Linear in
    the landmarks, so it maps between frame and crop like they do."""
    lm = landmarks.astype(np.float64)
    lift = (lm[36:48].mean(axis=0) - lm[8]) * 0.25  # the hairline sits above the brows
    return np.concatenate([lm[_JAW], lm[_BROWS] + lift])


def face_mask(landmarks_crop: np.ndarray, size: int, feather: float = 0.06) -> np.ndarray:
    """Feathered float mask [N,N] in 0..1 over the face hull (jaw, brows lifted to the forehead).

    The hull is eroded by the feather width before blurring, so the soft edge falls inside the hull and
    the mask is zero outside it.
    """
    outline = mask_outline(landmarks_crop)
    mask = hull_fill(outline, size)
    # the feather is smooth: above 192 px it is made at 192 and scaled up (an erosion by a 50 px disc and a wide
    # blur cost 10 ms at 420 px, the scaled one under 1 ms)
    work = min(size, 192)
    small = mask if work == size else hull_fill(outline * (work / size), work)
    radius = max(1, round(feather * work))
    inner = cv2.erode(small, disc(radius))
    out = cv2.GaussianBlur(inner, (0, 0), radius / 2).astype(np.float32) / 255.0
    if work != size:
        out = np.asarray(cv2.resize(out, (size, size), interpolation=cv2.INTER_LINEAR), np.float32)
    out[mask < 128] = 0.0  # the feather never reaches past the hull
    return out


def disc(radius: int) -> np.ndarray:
    """A disc-shaped structuring element ((2 radius + 1) px square) for growing, shrinking or filtering masks."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def hull_fill(points: np.ndarray, shape: int | tuple[int, int]) -> np.ndarray:
    """uint8 mask (255 inside) of the convex hull of ``points`` (pixels, quarter-pixel precise, anti-aliased) in
    an N x N crop or an (h, w) picture: the one rasteriser of every face, eye and lip mask."""
    h, w = (shape, shape) if isinstance(shape, int) else shape
    mask = np.zeros((h, w), dtype=np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points * 4).astype(np.int32)), 255, lineType=cv2.LINE_AA,
                       shift=2)
    return mask


ColorStats = np.ndarray  # [4,3] float32: source mean, source spread, target mean, target spread per Lab channel


def color_stats(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> ColorStats | None:
    """Mean and spread per Lab channel of ``source`` and ``target`` inside ``mask``; None where it is too small."""
    if source.shape[0] > 128:  # statistics need no more than 128 px (a 420 px face costs 7 ms, this 0.5)
        scale = 128 / source.shape[0]
        source, target, mask = (cv2.resize(x, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                                for x in (source, target, mask))
    weights = mask > 0.5
    if weights.sum() < 16:
        return None
    src = cv2.cvtColor(source, cv2.COLOR_RGB2LAB)[weights].astype(np.float32)
    tgt = cv2.cvtColor(target, cv2.COLOR_RGB2LAB)[weights].astype(np.float32)
    return np.stack([src.mean(axis=0), src.std(axis=0) + 1e-3, tgt.mean(axis=0), tgt.std(axis=0) + 1e-3])


COLOR_GAIN = 1.25  # the most a Lab channel's spread over the face is raised, or lowered (its inverse)


def apply_color(source: np.ndarray, stats: ColorStats) -> np.ndarray:
    """Shift ``source``'s Lab statistics from the first two rows of ``stats`` to the last two. Each channel's spread
    follows within [0.8, 1.25] only: the spread over a face is mostly its features' contrast, not its light (the
    light is moved by ``compose.transfer_light``). A flat-lit actor's lower spread, taken whole (lightness was
    allowed down to 0.5), halved the contrast of the cast's eyes and brows and washed them out; a larger gain on
    the colour channels painted the lips and eyes beyond any make-up."""
    gain = np.clip(stats[3] / stats[1], 1 / COLOR_GAIN, COLOR_GAIN)
    # per channel an affine map of 8-bit Lab values: one lookup table (a float pass over the crop cost 5 ms).
    # The colour channels are spread about the cast's own mean; their shift to the actor's mean is added after,
    # in proportion to each pixel's lightness (up to the face's mean): a skin tone is what a surface reflects, so
    # it moves a dark pixel's colour little. Shifted whole, a dark moustache, brow or eyelid took the skin's
    # whole shift and turned a saturated red-brown (a pale cast on a warm actor)
    levels = np.arange(256, dtype=np.float32)[:, None]
    centre = np.array([stats[2, 0], stats[0, 1], stats[0, 2]], np.float32)
    table = np.clip((levels - stats[0]) * gain + centre, 0, 255).astype(np.uint8).reshape(256, 1, 3)
    lightness, a, b = cv2.split(cv2.LUT(cv2.cvtColor(source, cv2.COLOR_RGB2LAB), table))
    mean = float(np.clip(stats[2, 0], 1.0, 255.0))
    # 8-bit passes, saturated and rounded (a float pass cost 1.5 ms more)
    upto = np.minimum(lightness, np.uint8(round(mean)))
    a, b = (cv2.addWeighted(x, 1.0, upto, float(stats[2, c] - stats[0, c]) / mean, 0.0) for c, x in ((1, a), (2, b)))
    return cv2.cvtColor(cv2.merge([lightness, a, b]), cv2.COLOR_LAB2RGB)


@dataclass(frozen=True)
class PastedRegion:
    """Where a paste-back wrote: the blend weight over the rectangle starting at (x0, y0)."""

    x0: int
    y0: int
    alpha: np.ndarray  # [h,w] float32 in 0..1
    over: np.ndarray | None = None  # [h,w,3] uint8: the face as pasted, before the blend
    under: np.ndarray | None = None  # [h,w,3] uint8: the frame's own pixels there, before the blend

    def add_to(self, weight: np.ndarray) -> None:
        h, w = self.alpha.shape
        region = weight[self.y0:self.y0 + h, self.x0:self.x0 + w]
        np.maximum(region, self.alpha, out=region)


def paste_back(frame: np.ndarray, face: np.ndarray, mask: np.ndarray, align: Alignment) -> PastedRegion | None:
    """Blend ``face`` (an N x N crop) into ``frame`` in place through ``mask``; returns where it wrote,
    or None when the face lies outside the frame."""
    h, w = frame.shape[:2]
    # only the rectangle around the mask's support is warped and blended (the face is about half the crop)
    bx, by, bw, bh = cv2.boundingRect((mask > 0).astype(np.uint8))
    if bw == 0 or bh == 0:
        return None
    box = np.array([[bx - 1, by - 1], [bx - 1, by + bh + 1], [bx + bw + 1, by + bh + 1], [bx + bw + 1, by - 1]],
                   dtype=np.float64)
    corners = align.points_to_frame(box)
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    shift = align.to_frame.copy()
    shift[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    alpha = cv2.warpAffine(mask, shift, size, flags=cv2.INTER_LINEAR, borderValue=0.0)  # [h,w]
    # cubic: a linear resample at sub-pixel offsets averages neighbours and halves the finest detail
    pasted = cv2.warpAffine(face, shift, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    region = frame[y0:y1, x0:x1]
    under = region.copy()
    # where alpha is 0 the blend is the frame's own pixel exactly (weights 1 and 0), so the whole rectangle is
    # written back (a boolean-indexed write cost 0.8 ms a face)
    region[...] = blend(region, pasted, alpha)
    return PastedRegion(int(x0), int(y0), alpha, pasted, under)


def blend(under: np.ndarray, over: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``over`` on ``under`` (uint8 [h,w,3] each) through ``alpha`` ([h,w] float32 in 0..1), rounded; in one
    OpenCV pass (a float blend in numpy cost several ms a face)."""
    alpha = np.ascontiguousarray(alpha, dtype=np.float32)
    return cv2.blendLinear(np.ascontiguousarray(under), np.ascontiguousarray(over), 1.0 - alpha, alpha)


class PiecewiseAffine:
    """Warp of an N x N crop that moves ``src`` control points onto ``dst`` ones, triangle by triangle.

    The triangulation is fixed once (Delaunay over the source points, with the crop's corners and edge
    midpoints added so that the border stays put); each call rasterises the destination triangles into an
    id image and builds one dense remap from their affine maps, so a frame costs two array passes and one
    ``cv2.remap`` whatever the number of triangles.
    """

    def __init__(self, src_points: np.ndarray, size: int,
                 under: Sequence[tuple[Sequence[int], Sequence[int]]] = ()) -> None:
        """`under`: regions that lie beneath an edge that can move over them (an eye's opening beneath its upper
        lid), each the ring of point ids around it and the ids of the edge. The region's triangles get their own
        copies of the edge's points, placed where `maps`'s `under_points` says (by default with the edge), and are
        drawn first: an edge moved over the region covers it, as a lid covers the eye, instead of pressing it
        flat (a blink drew the cast's iris, white and glint as a dark line with white specks)."""
        from scipy.spatial import Delaunay

        self.size = size
        self.border = _border_points(size)
        self.src = np.concatenate([src_points.astype(np.float64), self.border])
        self.triangles = Delaunay(self.src).simplices.astype(np.int32)  # [T,3]
        if len(self.triangles) > 65535:
            raise ValueError("too many triangles")
        self.under_ids = np.zeros(0, dtype=np.int32)  # the points whose copies the regions beneath edges use
        self._beneath = np.zeros(len(self.triangles), dtype=bool)  # the triangles of those regions
        for ring, edge in under:
            self._put_under(np.asarray(ring, dtype=np.int32), np.asarray(edge, dtype=np.int32))
        self._grids: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._src_ids: np.ndarray | None = None

    def _put_under(self, ring: np.ndarray, edge: np.ndarray) -> None:
        outline = self.src[ring].astype(np.float32)
        centres = self.src[self.triangles].mean(axis=1)
        inside = np.array([cv2.pointPolygonTest(outline, (float(x), float(y)), False) > 0 for x, y in centres])
        region = inside & np.isin(self.triangles, ring).all(axis=1)
        first = len(self.src)
        self.src = np.concatenate([self.src, self.src[edge]])
        copy_of = dict(zip(edge.tolist(), range(first, first + len(edge)), strict=True))
        for t in np.flatnonzero(region):
            self.triangles[t] = [copy_of.get(int(v), int(v)) for v in self.triangles[t]]
        self.under_ids = np.concatenate([self.under_ids, edge])
        self._beneath |= region

    def _dst(self, dst_points: np.ndarray, size: int, under_points: np.ndarray | None = None) -> np.ndarray:
        """The destination points with the crop's border and the copies of the points beneath edges."""
        dst_points = dst_points.astype(np.float64)
        copies = dst_points[self.under_ids] if under_points is None else under_points.astype(np.float64)
        return np.concatenate([dst_points, _border_points(size), copies])

    def _grid(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        if size not in self._grids:
            ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
            self._grids[size] = (xs, ys)
        return self._grids[size]

    def maps(self, dst_points: np.ndarray, size: int | None = None, depth: np.ndarray | None = None,
             under_points: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``cv2.remap`` maps that pull source pixels onto the destination geometry, a ``size`` x ``size`` crop
        (the source's size by default; the crops' borders correspond whatever the two sizes). With a `depth` per
        destination point (smaller is nearer), triangles are drawn far to near, so where the destination folds
        over itself (a turned face's far cheek behind its nose) the nearest surface is what shows. `under_points`
        place the copies of the edges' points that the regions beneath them use (see `under`)."""
        size = size or self.size
        dst = self._dst(dst_points, size, under_points)
        order = None
        if depth is not None:
            far = float(np.max(depth)) + 1.0  # the crop's border lies behind the face
            z = np.concatenate([depth.astype(np.float64), np.full(len(self.border), far), depth[self.under_ids]])
            order = np.argsort(-z[self.triangles].mean(axis=1), kind="stable")
        if self._beneath.any():  # the regions beneath edges first, the edges drawn over them
            order = np.arange(len(self.triangles)) if order is None else order
            order = np.concatenate([order[self._beneath[order]], order[~self._beneath[order]]])
        # per triangle, the affine map dst -> src: [x y 1] @ A = [u v]
        d = np.concatenate([dst[self.triangles], np.ones((len(self.triangles), 3, 1))], axis=2)  # [T,3,3]
        affine = np.linalg.solve(d + np.eye(3) * 1e-9, self.src[self.triangles])  # [T,3,2]
        if size <= 256:
            return self._dense(_raster(dst[self.triangles], size, order), affine, size)
        # a large crop: the maps are made on a grid of every other pixel and scaled up. They are continuous and
        # piecewise linear, so the scaled maps differ only a little along the triangles' edges (a third of the
        # cost at 420 px)
        half = (size + 1) // 2
        grid = ((dst[self.triangles] + 0.5) / 2 - 0.5)
        xs, ys = self._grid(half)
        map_x, map_y = self._dense(_raster(grid, half, order), affine, half, (xs * 2 + 0.5, ys * 2 + 0.5))
        map_x = cv2.resize(map_x, (size, size), interpolation=cv2.INTER_LINEAR)
        map_y = cv2.resize(map_y, (size, size), interpolation=cv2.INTER_LINEAR)
        if under_points is not None and self._beneath.any():
            self._exact_beneath(map_x, map_y, dst, affine, order)
        return map_x, map_y

    def _exact_beneath(self, map_x: np.ndarray, map_y: np.ndarray, dst: np.ndarray, affine: np.ndarray,
                       order: np.ndarray | None) -> None:
        """The maps made again at every pixel (in place) around the regions beneath edges. Where an edge has moved
        over its region (a lid lowered over the eye) the map jumps there, from the edge's side of the source to the
        region's far side, and the maps scaled up from every other pixel would sample the region itself along that
        line (the cast's iris, white and glint as a dark line with white specks under a closed lid)."""
        size = map_x.shape[0]
        edges = dst[self.triangles[self._beneath]].reshape(-1, 2)
        copies = dst[len(dst) - len(self.under_ids):]
        if np.abs(copies - dst[self.under_ids]).max(initial=0.0) < 0.25:
            return  # no edge has moved: the map is continuous there
        x0, y0 = np.floor(edges.min(axis=0)).astype(int) - 3
        x1, y1 = np.ceil(edges.max(axis=0)).astype(int) + 4
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)
        if x1 <= x0 or y1 <= y0:
            return
        corners = dst[self.triangles] - (x0, y0)
        near = ((corners.max(axis=1) >= -1) & (corners.min(axis=1) <= (x1 - x0, y1 - y0))).all(axis=1)
        order = np.arange(len(self.triangles)) if order is None else order
        ids = _raster(corners, (y1 - y0, x1 - x0), order[near[order]])
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        exact_x, exact_y = self._dense(ids, affine, 0, (xs, ys))
        drawn = ids > 0
        map_x[y0:y1, x0:x1][drawn] = exact_x[drawn]
        map_y[y0:y1, x0:x1][drawn] = exact_y[drawn]

    def _dense(self, ids: np.ndarray, affine: np.ndarray, size: int,
               at: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Remap maps from a triangle id image and one affine map per triangle ([T,3,2], ``[x y 1] @ A``), at the
        pixels of a `size` grid or at the coordinates `at`."""
        identity = np.array([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
        table = np.concatenate([identity, affine]).astype(np.float32)  # id 0 (no triangle) maps to itself
        m = table[ids]  # [N,N,3,2]
        xs, ys = at if at is not None else self._grid(size)
        map_x = m[..., 0, 0] * xs + m[..., 1, 0] * ys + m[..., 2, 0]
        map_y = m[..., 0, 1] * xs + m[..., 1, 1] * ys + m[..., 2, 1]
        return map_x, map_y

    def warp(self, image: np.ndarray, dst_points: np.ndarray, size: int | None = None,
             depth: np.ndarray | None = None, under_points: np.ndarray | None = None) -> np.ndarray:
        """``image`` (the source crop) moved onto ``dst_points`` in a ``size`` crop (nearest surface on top, with a
        `depth`; see :meth:`maps`). A source larger than the destination is sampled with area averaging where the
        warp shrinks it, not point-sampled (no aliasing)."""
        size = size or self.size
        map_x, map_y = self.maps(dst_points, size, depth, under_points)
        if size < self.size * 0.75:  # shrinking: sample a copy pre-scaled near the destination's size
            scale = size / self.size
            small = cv2.resize(image, None, fx=scale * 1.25, fy=scale * 1.25, interpolation=cv2.INTER_AREA)
            k = small.shape[0] / image.shape[0]
            return cv2.remap(small, (map_x + 0.5) * k - 0.5, (map_y + 0.5) * k - 0.5, cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
        return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def unwarp(self, image: np.ndarray, dst_points: np.ndarray) -> np.ndarray:
        """The inverse of ``warp``: ``image`` is in the destination geometry, the result in the source one. The
        source triangles never move, so their id image is rasterised once."""
        if self._src_ids is None:
            self._src_ids = _raster(self.src[self.triangles], self.size)
        dst = self._dst(dst_points, self.size)
        s = np.concatenate([self.src[self.triangles], np.ones((len(self.triangles), 3, 1))], axis=2)  # [T,3,3]
        map_x, map_y = self._dense(self._src_ids, np.linalg.solve(s + np.eye(3) * 1e-9, dst[self.triangles]),
                                   self.size)
        return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _raster(triangles: np.ndarray, size: int | tuple[int, int], order: np.ndarray | None = None) -> np.ndarray:
    """An id image [N,N] (or [h,w]) uint16: k + 1 where triangle k ([T,3,2] pixels) covers the pixel, 0 where none
    does; where triangles overlap, the one drawn last (in `order`, by default their own) wins."""
    ids = np.zeros((size, size) if isinstance(size, int) else size, dtype=np.uint16)
    corners = np.round(triangles * 16).astype(np.int32)
    order = np.arange(len(corners)) if order is None else order
    # a sliver (under half a pixel: the underside of a nose as the head tips or the mouth smiles) still gets drawn
    # as a line of pixels, whose centres lie outside it, and its ill-conditioned map sends them far across the
    # texture (a bright speck under the nose). Slivers go first, so the triangles around them cover those pixels
    sliver = _area(triangles[order]) < 0.5
    for k in np.concatenate([order[sliver], order[~sliver]]).tolist():
        cv2.fillConvexPoly(ids, corners[k], k + 1, shift=4)
    return ids


def _area(triangles: np.ndarray) -> np.ndarray:
    """The areas of triangles [T,3,2]."""
    a, b = triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]
    return np.abs(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]) / 2


def _border_points(size: int) -> np.ndarray:
    n = float(size - 1)
    h = n / 2
    return np.array([[0, 0], [h, 0], [n, 0], [n, h], [n, n], [h, n], [0, n], [0, h]], dtype=np.float64)


def polygon_mask(points: np.ndarray, size: int | tuple[int, int], blur: float = 0.0) -> np.ndarray:
    """Float mask [N,N] (or [h,w]) of the convex hull of ``points`` (pixels), optionally softened."""
    out = hull_fill(points, size).astype(np.float32) / 255.0
    return cv2.GaussianBlur(out, (0, 0), blur) if blur > 0 else out
