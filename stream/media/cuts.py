"""Shot cuts, found causally from one frame to the next."""

from __future__ import annotations

import cv2
import numpy as np


class CutDetector:
    """Causal shot-cut detector: the first frame of a new shot differs from the previous frame far more
    than recent frames differed from each other, in pixels (mean absolute difference of a 64x36
    thumbnail) and in the grey-level histogram (so that fast motion within a shot is not a cut)."""

    def __init__(self, threshold: float = 20.0, ratio: float = 3.0, hist_threshold: float = 0.1,
                 history: int = 8) -> None:
        self.threshold = threshold
        self.ratio = ratio
        self.hist_threshold = hist_threshold
        self.history = history
        self._prev: np.ndarray | None = None
        self._prev_hist: np.ndarray | None = None
        self._recent: list[float] = []

    def update(self, gray: np.ndarray) -> bool:
        step = max(1, gray.shape[1] // 256)  # subsample large frames before the area average (cheaper)
        thumb = cv2.resize(gray[::step, ::step], (64, 36), interpolation=cv2.INTER_AREA).astype(np.float32)
        hist = np.bincount((thumb.astype(np.uint8) >> 3).ravel(), minlength=32).astype(np.float32)
        hist /= hist.sum()
        cut = False
        if self._prev is not None and self._prev_hist is not None:
            diff = float(np.abs(thumb - self._prev).mean())
            hist_diff = 0.5 * float(np.abs(hist - self._prev_hist).sum())
            baseline = float(np.median(self._recent)) if self._recent else 0.0
            cut = diff > self.threshold and diff > self.ratio * baseline and hist_diff > self.hist_threshold
            self._recent = [] if cut else [*self._recent[-(self.history - 1):], diff]
        self._prev, self._prev_hist = thumb, hist
        return cut
