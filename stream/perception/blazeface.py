"""BlazeFace (MediaPipe's full-range face detector, Apache-2.0) on LiteRT, over the whole frame and over tiles.

The model takes a 192x192 RGB picture scaled to [-1, 1] and scores 2304 anchors (a 48x48 grid, stride 4); each
anchor regresses a box and six key points (eyes, nose tip, mouth, ears). The decoding and the weighted
non-maximum suppression follow MediaPipe's `face_detection_full_range.pbtxt` (anchor offsets 0.5, fixed anchor
size, coordinates scaled by 192, scores through a sigmoid, a 0.6 floor, suppression at IoU 0.3).

A face must cover some 10 of the 192 input pixels to be found, so the whole frame alone finds faces down to about
a twentieth of its longer side; overlapping square tiles (each letterboxed to 192) find smaller ones, at the cost
of one inference (about 5 ms here) per tile. Detections of all passes are merged by the same suppression.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stream.perception.geometry import Box
from stream.perception.litert import LiteModel
from stream.perception.model_files import mediapipe_model

INPUT = 192
GRID = 48  # 192 / stride 4
MIN_SCORE = 0.6
SUPPRESSION_IOU = 0.3


@dataclass
class Detection:
    """A face found by the detector, in frame pixels."""

    box: Box
    score: float
    keypoints: np.ndarray  # [6,2]: right eye, left eye, nose tip, mouth, right ear tragion, left ear tragion


def _anchors() -> np.ndarray:
    """[2304,2] anchor centres in [0, 1] (x, y), row by row."""
    ys, xs = np.mgrid[0:GRID, 0:GRID].astype(np.float32)
    return np.stack([(xs.ravel() + 0.5) / GRID, (ys.ravel() + 0.5) / GRID], axis=1)


ANCHORS = _anchors()


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_suppression(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray,
                         threshold: float = SUPPRESSION_IOU) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """MediaPipe's weighted NMS: each cluster of boxes overlapping the best one by more than ``threshold`` is
    replaced by the score-weighted mean of its boxes and key points, with the best score."""
    order = np.argsort(-scores)
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    out = []
    remaining = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        if not remaining[i]:
            continue
        overlap = _iou(boxes[i], boxes) > threshold
        cluster = overlap & remaining
        cluster[i] = True
        weights = scores[cluster][:, None]
        box = (boxes[cluster] * weights).sum(0) / weights.sum()
        points = (keypoints[cluster] * weights[:, :, None]).sum(0) / weights.sum()
        out.append((box, float(scores[i]), points))
        remaining &= ~cluster
    return out


class BlazeFace:
    """One LiteRT interpreter of the full-range model; `detect_rgb` runs it on the frame and on tiles.

    ``tiles`` is the number of tile columns for a landscape frame (0: the whole frame only); rows follow from
    the aspect ratio, tiles overlap by a quarter. An interpreter is not thread-safe: each tracker has its own."""

    def __init__(self, tiles: int = 0, min_score: float = MIN_SCORE, threads: int = 1,
                 model: Path | None = None) -> None:
        self.tiles, self.min_score = tiles, min_score
        self._model = LiteModel(model or mediapipe_model("face_detection_full_range_sparse"), threads)
        self._scores, self._regressors = self._model.by_width[:2]

    def _infer(self, rgb: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes [N,4] (x0,y0,x1,y1), scores [N], key points [N,6,2] of one square-letterboxed picture, in the
        picture's own pixels."""
        h, w = rgb.shape[:2]
        side = max(h, w)
        scale = INPUT / side
        step = max(1, int(side / INPUT / 2))  # take every step-th pixel first: the area average then reads less
        resized = cv2.resize(rgb[::step, ::step], (max(1, round(w * scale)), max(1, round(h * scale))),
                             interpolation=cv2.INTER_AREA)
        canvas = np.zeros((INPUT, INPUT, 3), np.float32)
        oy, ox = (INPUT - resized.shape[0]) // 2, (INPUT - resized.shape[1]) // 2
        canvas[oy:oy + resized.shape[0], ox:ox + resized.shape[1]] = resized.astype(np.float32) / 127.5 - 1.0
        regressors, logits = self._model.run(canvas[None], self._regressors, self._scores)
        raw, logits = regressors[0], logits[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100, 100)))
        keep = scores >= min_score
        if not keep.any():
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 6, 2), np.float32)
        raw, scores, anchors = raw[keep], scores[keep], ANCHORS[keep]
        centre = raw[:, 0:2] / INPUT + anchors
        size = raw[:, 2:4] / INPUT
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        points = raw[:, 4:16].reshape(-1, 6, 2) / INPUT + anchors[:, None, :]
        # from the 192 canvas back to the picture's pixels
        offset = np.array([ox, oy], np.float32) / INPUT
        boxes = (boxes - np.tile(offset, 2)) * (INPUT / scale)
        points = (points - offset) * (INPUT / scale)
        return boxes.astype(np.float32), scores.astype(np.float32), points.astype(np.float32)

    def regions(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """The whole frame, then the tiles: (x0, y0, x1, y1) each."""
        out = [(0, 0, width, height)]
        if self.tiles <= 0:
            return out
        longer, shorter = max(width, height), min(width, height)
        across = self.tiles
        side = min(shorter, round(longer / (across * 0.75 + 0.25)))  # tiles overlap by a quarter of a side
        along = max(1, int(np.ceil((shorter - side) / (0.75 * side))) + 1) if side < shorter else 1
        xs = np.linspace(0, width - side, across if width >= height else along).round().astype(int)
        ys = np.linspace(0, height - side, along if width >= height else across).round().astype(int)
        out += [(int(x), int(y), int(x) + side, int(y) + side) for y in ys for x in xs]
        return out

    def detect_rgb(self, rgb: np.ndarray, regions: Sequence[tuple[int, int, int, int]] | None = None,
                   min_score: float | None = None) -> list[Detection]:
        """Faces in an RGB frame: every region (default: the whole frame and the tiles) merged by suppression."""
        h, w = rgb.shape[:2]
        all_boxes, all_scores, all_points = [], [], []
        for x0, y0, x1, y1 in regions if regions is not None else self.regions(w, h):
            boxes, scores, points = self._infer(rgb[y0:y1, x0:x1], self.min_score if min_score is None else min_score)
            if len(scores):
                all_boxes.append(boxes + np.array([x0, y0, x0, y0], np.float32))
                all_scores.append(scores)
                all_points.append(points + np.array([x0, y0], np.float32))
        if not all_scores:
            return []
        merged = weighted_suppression(np.concatenate(all_boxes), np.concatenate(all_scores),
                                      np.concatenate(all_points))
        return [Detection(Box(*map(float, box)), score, points) for box, score, points in merged]
