"""Plain geometry of a face in a frame: boxes, the landmark box, the outline a face is pasted within, the grey
picture the models read."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Box:
    """An axis-aligned face box in frame pixels."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.width * self.height + other.width * other.height - inter
        return inter / union if union > 0 else 0.0

    def as_list(self) -> list[float]:
        return [round(self.x0, 2), round(self.y0, 2), round(self.x1, 2), round(self.y1, 2)]


def to_gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def landmark_box(landmarks: np.ndarray) -> Box:
    x0, y0 = landmarks.min(axis=0)
    x1, y1 = landmarks.max(axis=0)
    return Box(float(x0), float(y0), float(x1), float(y1))


# Landmarks of the face outline: jaw (0-16) and brows (17-26); the mask is their hull, lifted to the forehead.
_JAW = list(range(17))
_BROWS = list(range(17, 27))


def mask_outline(landmarks: np.ndarray) -> np.ndarray:
    """The points whose hull is the face mask [27,2]: the jaw, and the brows lifted to the hairline. Linear in
    the landmarks, so it maps between frame and crop like they do."""
    lm = landmarks.astype(np.float64)
    lift = (lm[36:48].mean(axis=0) - lm[8]) * 0.25  # the hairline sits above the brows
    return np.concatenate([lm[_JAW], lm[_BROWS] + lift])
