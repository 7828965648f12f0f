"""A piecewise-affine warp over a triangulation of points: the warp recaster's core."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


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
