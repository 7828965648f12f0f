"""Face tracks with stable ids, shot-cut detection and the per-frame tracking loop.

Detection (HOG, downscaled) runs every ``detect_interval`` frames, on the frame where a track's landmarks
become implausible (a detection near its last place takes it back under the same id; otherwise it is lost)
and on the first frame of a new shot; in between, each track's landmarks are predicted on the full frame
from a box derived from its previous landmarks. A cut ends every track, so no track (and no smoothing)
crosses a cut; a lost face that comes back gets a new id.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from stream.faces import Box, FaceDetector, LandmarkPredictor, landmark_box

log = logging.getLogger(__name__)


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


@dataclass
class TrackedFace:
    """One face in one frame, as the tracker sees it."""

    track_id: int
    box: Box
    landmarks: np.ndarray  # [68,2] float32, frame pixels
    detected: bool


@dataclass
class _Track:
    track_id: int
    landmarks: np.ndarray
    calibration: np.ndarray  # detector box relative to the landmark box: [dx, dy, sx, sy]
    box: Box
    misses: int = 0
    age: int = 0


def _calibrate(det: Box, landmarks: np.ndarray) -> np.ndarray:
    lb = landmark_box(landmarks)
    w, h = max(lb.width, 1.0), max(lb.height, 1.0)
    (dcx, dcy), (lcx, lcy) = det.center, lb.center
    return np.array([(dcx - lcx) / w, (dcy - lcy) / h, det.width / w, det.height / h])


def _box_from_landmarks(landmarks: np.ndarray, calibration: np.ndarray) -> Box:
    lb = landmark_box(landmarks)
    w, h = max(lb.width, 1.0), max(lb.height, 1.0)
    cx, cy = lb.center
    cx += calibration[0] * w
    cy += calibration[1] * h
    bw, bh = calibration[2] * w, calibration[3] * h
    return Box(cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)


@dataclass
class TrackerStats:
    frames: int = 0
    detections: int = 0
    landmark_calls: int = 0
    lost: int = 0
    cuts: list[int] = field(default_factory=list)


class FaceTracker:
    """Frame-by-frame multi-face tracker (causal; usable live)."""

    def __init__(self, detector: FaceDetector, predictor: LandmarkPredictor, *, detect_interval: int = 10,
                 max_misses: int = 2, max_faces: int = 16, cut_detector: CutDetector | None = None) -> None:
        if detect_interval < 1:
            raise ValueError(f"detect interval must be >= 1 frame, got {detect_interval}")
        self.detector = detector
        self.predictor = predictor
        self.detect_interval = detect_interval
        self.max_misses = max_misses
        self.max_faces = max_faces
        self.cuts = cut_detector or CutDetector()
        self.stats = TrackerStats()
        self._tracks: list[_Track] = []
        self._ids = itertools.count(1)
        self._since_detect = detect_interval  # detect on the first frame

    def update(self, index: int, gray: np.ndarray) -> tuple[bool, list[TrackedFace]]:
        """Track one frame; returns (is this frame the first of a new shot, the faces in it)."""
        self.stats.frames += 1
        cut = self.cuts.update(gray)
        if cut:
            self.stats.cuts.append(index)
            self._tracks = []
        h, w = gray.shape[:2]
        suspects: list[_Track] = []
        for track in self._tracks:
            box = _box_from_landmarks(track.landmarks, track.calibration)
            landmarks = self.predictor.predict(gray, box)
            self.stats.landmark_calls += 1
            if not _plausible(track.landmarks, landmarks, w, h):
                suspects.append(track)  # keeps last frame's position; a detection may take it back
                continue
            track.landmarks, track.box = landmarks, _box_from_landmarks(landmarks, track.calibration)
            track.age += 1
        detected_ids: set[int] = set()
        if cut or suspects or self._since_detect >= self.detect_interval:
            detected_ids = self._detect(gray)
            self._since_detect = 0
        for track in suspects:
            if track.track_id not in detected_ids and track in self._tracks:
                self._tracks.remove(track)  # lost: the detector did not find it near its last place
                self.stats.lost += 1
        self._since_detect += 1
        faces = [TrackedFace(t.track_id, t.box, t.landmarks, t.track_id in detected_ids) for t in self._tracks]
        return cut, faces

    def _detect(self, gray: np.ndarray) -> set[int]:
        self.stats.detections += 1
        boxes = self.detector.detect(gray)
        pairs = sorted(((t.box.iou(b), ti, bi) for ti, t in enumerate(self._tracks) for bi, b in enumerate(boxes)),
                       reverse=True)
        matched_tracks: set[int] = set()
        matched_boxes: set[int] = set()
        detected: set[int] = set()
        for overlap, ti, bi in pairs:
            if overlap < 0.3 or ti in matched_tracks or bi in matched_boxes:
                continue
            matched_tracks.add(ti)
            matched_boxes.add(bi)
            track = self._tracks[ti]
            landmarks = self.predictor.predict(gray, boxes[bi])
            self.stats.landmark_calls += 1
            track.landmarks, track.box = landmarks, boxes[bi]
            track.calibration = _calibrate(boxes[bi], landmarks)
            track.misses = 0
            detected.add(track.track_id)
        survivors = []
        for ti, track in enumerate(self._tracks):
            if ti not in matched_tracks:
                track.misses += 1
                if track.misses > self.max_misses:
                    self.stats.lost += 1
                    continue
            survivors.append(track)
        self._tracks = survivors
        for bi, box in enumerate(boxes):
            if bi in matched_boxes or len(self._tracks) >= self.max_faces:
                continue
            if any(box.iou(t.box) > 0.3 for t in self._tracks):
                continue
            landmarks = self.predictor.predict(gray, box)
            self.stats.landmark_calls += 1
            track = _Track(next(self._ids), landmarks, _calibrate(box, landmarks), box)
            self._tracks.append(track)
            detected.add(track.track_id)
        self._tracks = _drop_duplicates(self._tracks)
        return detected


def _plausible(previous: np.ndarray, current: np.ndarray, width: int, height: int) -> bool:
    """Landmarks that jumped, collapsed or left the frame mean the face was lost."""
    a, b = landmark_box(previous), landmark_box(current)
    if b.width < 8 or b.height < 8:
        return False
    size = max(a.width, a.height)
    ratio = max(b.width, b.height) / max(size, 1.0)
    if not 0.7 < ratio < 1.4:
        return False
    (ax, ay), (bx, by) = a.center, b.center
    if np.hypot(bx - ax, by - ay) > 0.5 * size:
        return False
    inside_x = max(0.0, min(b.x1, width) - max(b.x0, 0.0)) / b.width
    inside_y = max(0.0, min(b.y1, height) - max(b.y0, 0.0)) / b.height
    return inside_x * inside_y > 0.6


def _drop_duplicates(tracks: list[_Track]) -> list[_Track]:
    """Two tracks that converged on one face: keep the older id."""
    kept: list[_Track] = []
    for track in sorted(tracks, key=lambda t: t.track_id):
        if all(track.box.iou(k.box) < 0.5 for k in kept):
            kept.append(track)
    return kept
