"""The outline a face is pasted within: the jaw and the brows lifted over the forehead."""

from __future__ import annotations

import numpy as np

# Landmarks of the face outline: jaw (0-16) and brows (17-26); the mask is their hull, lifted to the forehead.
_JAW = list(range(17))
_BROWS = list(range(17, 27))


def mask_outline(landmarks: np.ndarray) -> np.ndarray:
    """The points whose hull is the face mask [27,2]: the jaw, and the brows lifted to the hairline. Linear in
    the landmarks, so it maps between frame and crop like they do."""
    lm = landmarks.astype(np.float64)
    lift = (lm[36:48].mean(axis=0) - lm[8]) * 0.25  # the hairline sits above the brows
    return np.concatenate([lm[_JAW], lm[_BROWS] + lift])
