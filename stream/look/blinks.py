"""Blinks on a warped face: which frames the iris model reads, and the warp's lids lowered to the actor's
opening where it does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stream.look.lids import EyeLids, TrackLids, close_lids, lid_opening

# the 68 points' eyes: outline, lower lid, upper lid (each above the lower point of the same rank) and corners
POINT_LIDS = ((range(36, 42), [41, 40], [37, 38], (36, 39)), (range(42, 48), [47, 46], [43, 44], (42, 45)))
EYES_READ_UNDER = 0.92  # of its open state: a 68-point eye opening under this may be a blink, read every frame
EYES_READ_EVERY = 2  # frames: an open eye is read this often (every 3rd or 4th, d0's gaze drifts past its test's bound)


def eyes_to_read(points: np.ndarray, lids: TrackLids) -> bool:
    """Whether the iris model (3 ms a face) is to read this frame's eyes: where either eye of the 68 points (the
    mesh's, which follow a blink part of the way) opens less than EYES_READ_UNDER of its open state, and every
    EYES_READ_EVERY frames besides. Between readings the eyes are taken as open: their lids are not lowered."""
    read = False
    for k, (_, lower, upper, (a, b)) in enumerate(POINT_LIDS):
        opening = lid_opening(points[upper], points[lower], max(float(np.linalg.norm(points[b] - points[a])), 1e-6))
        read |= opening < EYES_READ_UNDER * lids.seen[k].update(opening)
    frame = lids.frames_seen
    lids.frames_seen += 1
    return read or frame % EYES_READ_EVERY == 0


def mesh_lid_rows(ids: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]], ...]:
    """mesh.EYE_LIDS as rows of the dense warp's points (`ids`, sorted mesh vertices)."""
    from stream.perception.mesh import EYE_LIDS

    def rows(vertices: Sequence[int]) -> np.ndarray:
        return np.searchsorted(ids, np.asarray(vertices))

    return tuple((rows(ring), rows(lower), rows(upper), (int(rows(corners)[0]), int(rows(corners)[1])))
                 for ring, lower, upper, corners in EYE_LIDS)


def lower_lids(points: np.ndarray, lids: Sequence[tuple[Any, Any, Any, tuple[int, int]]], openings: np.ndarray,
               eyes: tuple[EyeLids, EyeLids]) -> np.ndarray:
    """`points` with each eye's upper lid lowered to the actor's opening (lids.close_lids)."""
    points = points.copy()
    for k, (_, lower, upper, (a, b)) in enumerate(lids):
        width = float(np.linalg.norm(points[b] - points[a]))
        points[upper] = close_lids(points[upper], points[lower], width, float(openings[k]), eyes[k])
    return points


def under_lids(lids: Sequence[tuple[Any, Any, Any, tuple[int, int]]]) -> list[tuple[list[int], list[int]]]:
    """Each eye's opening as a region beneath its upper lid (look.piecewise.PiecewiseAffine's `under`)."""
    return [([int(v) for v in ring], [int(v) for v in upper]) for ring, _, upper, _ in lids]
