"""A face crop by its STIT quad: the similarity that maps the quad onto a square crop, and the crop itself."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stream.perception.smoothing import quad_corners


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
