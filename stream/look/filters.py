"""Per-track steadiness: the 1-euro landmark filter, the smooth step, and the bounded store of track state."""

from __future__ import annotations

from typing import TypeVar

import numpy as np

T = TypeVar("T")
MAX_TRACKS = 64  # tracks whose steadiness state is kept (the least recently seen goes first)


def keep_recent(store: dict[int, T], track_id: int, value: T) -> T:
    """`value` stored as the track's state, the most recently seen last; past MAX_TRACKS tracks the one seen least
    recently is dropped. The caller pops the track's old state first. Tracks of one store may be kept from several
    threads (the faces of a frame are drawn side by side)."""
    store[track_id] = value
    if len(store) > MAX_TRACKS:
        store.pop(next(iter(store)), None)
    return value


def smoothstep(zero: float, one: float, x: float | np.ndarray) -> float | np.ndarray:
    """0 at `zero`, 1 at `one` (either may be the larger), a smooth S between and flat beyond: no pop at either end.
    Elementwise for an array."""
    t = np.clip((np.asarray(x, dtype=np.float64) - zero) / (one - zero), 0.0, 1.0)
    out = t * t * (3.0 - 2.0 * t)
    return float(out) if out.ndim == 0 else out


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
