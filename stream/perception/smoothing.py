"""STIT crop quads and their smoothing over time.

A quad is held as its parameters ``[cx, cy, xx, xy]``: the centre ``c`` and the half-axis ``x``; the other
half-axis is ``y = (-x[1], x[0])`` (FFHQ alignment), so the corners are ``c - x - y, c - x + y, c + x + y,
c + x - y`` and the side length is ``2 |x|``. See ``shared/reference/stit-pipeline.md`` section 1.

Two smoothers: :func:`smooth_offline`, STIT's Gaussian over a whole track segment (non-causal), and
:class:`LiveSmoother`, causal with a look-ahead of at most :data:`MAX_LOOKAHEAD` frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d

MAX_LOOKAHEAD = 4


def quad_params(landmarks: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The STIT crop of one frame from its 68 landmarks, as ``[cx, cy, xx, xy]`` (float64)."""
    lm = np.asarray(landmarks, dtype=np.float64)  # [68,2]
    eye_left = lm[36:42].mean(axis=0)
    eye_right = lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    norm = math.hypot(*x)
    if norm == 0:
        raise ValueError("degenerate landmarks: eyes and mouth coincide")
    x /= norm
    x *= max(math.hypot(*eye_to_eye) * 2.0, math.hypot(*eye_to_mouth) * 1.8)
    x *= scale
    c = eye_avg + eye_to_mouth * 0.1
    return np.array([c[0], c[1], x[0], x[1]])


def quad_corners(params: np.ndarray) -> np.ndarray:
    """``[4,2]`` corners (top-left, bottom-left, bottom-right, top-right) of one quad."""
    c = params[:2]
    x = params[2:4]
    y = np.array([-x[1], x[0]])
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def quad_side(params: np.ndarray) -> np.ndarray:
    """Side length(s) of quads given as ``[..., 4]`` parameters."""
    return 2.0 * np.hypot(params[..., 2], params[..., 3])


def smooth_offline(params: np.ndarray, center_sigma: float = 1.0, xy_sigma: float = 3.0) -> np.ndarray:
    """STIT's smoothing over one track segment: Gaussian on the centre and on the axes, along time."""
    params = np.asarray(params, dtype=np.float64)  # [T,4]
    if len(params) < 2:
        return params.copy()
    out = np.empty_like(params)
    out[:, :2] = gaussian_filter1d(params[:, :2], center_sigma, axis=0) if center_sigma > 0 else params[:, :2]
    out[:, 2:] = gaussian_filter1d(params[:, 2:], xy_sigma, axis=0) if xy_sigma > 0 else params[:, 2:]
    return out


def _local_linear(values: np.ndarray, offsets: np.ndarray, sigma: float) -> np.ndarray:
    """Value at offset 0 of a Gaussian-weighted straight-line fit (no lag on steady motion)."""
    if sigma <= 0:
        return values[offsets == 0][0]
    w = np.exp(-0.5 * (offsets / sigma) ** 2)
    sw = w.sum()
    mean_t = (w * offsets).sum() / sw
    var_t = (w * (offsets - mean_t) ** 2).sum() / sw
    mean_v = (w[:, None] * values).sum(axis=0) / sw
    if var_t < 1e-9:
        return mean_v
    cov = (w[:, None] * (offsets - mean_t)[:, None] * (values - mean_v)).sum(axis=0) / sw
    return mean_v - (cov / var_t) * mean_t


class LiveSmoother:
    """Causal smoothing of one track's quads with a bounded look-ahead.

    ``push`` one frame's raw parameters; once ``lookahead`` later frames have arrived the frame is
    emitted, smoothed by a Gaussian-weighted local-linear fit over the past ``3 sigma`` frames and the
    look-ahead. ``flush`` emits what is left when the track ends (with less look-ahead).
    """

    def __init__(self, lookahead: int = MAX_LOOKAHEAD, center_sigma: float = 1.0, xy_sigma: float = 3.0) -> None:
        if not 0 <= lookahead <= MAX_LOOKAHEAD:
            raise ValueError(f"look-ahead must be 0..{MAX_LOOKAHEAD} frames, got {lookahead}")
        self.lookahead = lookahead
        self.center_sigma = center_sigma
        self.xy_sigma = xy_sigma
        self._past = max(1, math.ceil(3 * max(center_sigma, xy_sigma)))
        self._history: list[np.ndarray] = []
        self._next = 0  # position in history of the next frame to emit
        self._dropped = 0

    def push(self, params: np.ndarray) -> list[np.ndarray]:
        self._history.append(np.asarray(params, dtype=np.float64))
        out = []
        while self._next + self.lookahead < len(self._history):
            out.append(self._smoothed(self._next))
            self._next += 1
        self._trim()
        return out

    def flush(self) -> list[np.ndarray]:
        out = [self._smoothed(i) for i in range(self._next, len(self._history))]
        self._next = len(self._history)
        return out

    def _smoothed(self, i: int) -> np.ndarray:
        lo = max(0, i - self._past)
        hi = min(len(self._history), i + self.lookahead + 1)
        window = np.stack(self._history[lo:hi])  # [W,4]
        offsets = np.arange(lo, hi, dtype=np.float64) - i
        center = _local_linear(window[:, :2], offsets, self.center_sigma)
        axes = _local_linear(window[:, 2:], offsets, self.xy_sigma)
        return np.concatenate([center, axes])

    def _trim(self) -> None:
        excess = self._next - self._past
        if excess > 0:
            del self._history[:excess]
            self._next -= excess


def smooth_live(params: np.ndarray, lookahead: int = MAX_LOOKAHEAD, center_sigma: float = 1.0,
                xy_sigma: float = 3.0) -> np.ndarray:
    """Run :class:`LiveSmoother` over a whole segment (what the live path computes frame by frame)."""
    smoother = LiveSmoother(lookahead, center_sigma, xy_sigma)
    out: list[np.ndarray] = []
    for p in params:
        out += smoother.push(p)
    out += smoother.flush()
    return np.stack(out) if out else np.zeros((0, 4))


def jitter(params: np.ndarray) -> float:
    """RMS over t of ``|c[t+1] - 2c[t] + c[t-1]| / s[t]`` (DESIGN.md 3.3); 0 for segments under 3 frames."""
    params = np.asarray(params, dtype=np.float64)
    if len(params) < 3:
        return 0.0
    c = params[:, :2]
    accel = np.linalg.norm(c[2:] - 2 * c[1:-1] + c[:-2], axis=1) / quad_side(params[1:-1])
    return float(np.sqrt(np.mean(accel**2)))


def lag(live: np.ndarray, offline: np.ndarray) -> float:
    """Mean ``|c_live[t] - c_offline[t]| / s[t]`` (DESIGN.md 3.3)."""
    live = np.asarray(live, dtype=np.float64)
    offline = np.asarray(offline, dtype=np.float64)
    if len(live) == 0:
        return 0.0
    return float(np.mean(np.linalg.norm(live[:, :2] - offline[:, :2], axis=1) / quad_side(offline)))


def pooled(values: Sequence[float], weights: Sequence[int]) -> float:
    """Weighted mean over tracks (weights: frames per track)."""
    total = sum(weights)
    return float(sum(v * w for v, w in zip(values, weights, strict=True)) / total) if total else 0.0
