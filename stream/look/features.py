"""The 68 points' feature groups (eyes, brows, nose, lips) and the mask over them."""

from __future__ import annotations

import cv2
import numpy as np

from stream.look.masks import disc, polygon_mask

EYES = (list(range(36, 42)), list(range(42, 48)))
BROWS = (list(range(17, 22)), list(range(22, 27)))
NOSE = list(range(27, 36))
LIPS = list(range(48, 60))
INNER_MOUTH = list(range(60, 68))


def features_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Float mask [N,N] over the eyes, brows, nose and lips, grown by a tenth of the eye distance and feathered."""
    work = min(size, 128)  # a soft mask: made at 128 px at most and scaled up
    points = landmarks * (work / size)
    iod = float(np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0)))
    grow = max(1.0, 0.12 * iod)
    mask = np.zeros((work, work), np.float32)
    for part in (*EYES, *BROWS, NOSE, LIPS):
        mask = np.maximum(mask, polygon_mask(points[part], work))
    grown = cv2.dilate(mask, disc(round(grow)))
    out = np.asarray(cv2.GaussianBlur(grown, (0, 0), grow / 2), np.float32)
    return out if work == size else np.asarray(cv2.resize(out, (size, size)), np.float32)
