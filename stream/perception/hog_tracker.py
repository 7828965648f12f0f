"""The `hog` tracker: dlib's HOG detector every few frames and its 68-point predictor on every frame.

Detection (HOG, downscaled) runs every ``detect_interval`` frames, on the frame where a track's landmarks
become implausible (a detection near its last place takes it back under the same id; otherwise it is lost)
and on the first frame of a new shot; in between, each track's landmarks are predicted on the full frame
from a box derived from its previous landmarks. A cut ends every track, so no track (and no smoothing)
crosses a cut; a lost face that comes back gets a new id.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from stream.media.cuts import CutDetector
from stream.perception.geometry import Box, landmark_box
from stream.perception.hog import FaceDetector, LandmarkPredictor
from stream.perception.tracker import TrackedFace, TrackerStats, drop_duplicates, plausible


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


class FaceTracker:
    """Frame-by-frame multi-face tracker (causal; usable live): dlib's HOG detector and 68-point predictor."""

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

    def update(self, index: int, gray: np.ndarray, rgb: np.ndarray | None = None
               ) -> tuple[bool, list[TrackedFace]]:
        """Track one frame; returns (is this frame the first of a new shot, the faces in it). Works on grey."""
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
            if not plausible(track.landmarks, landmarks, w, h):
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
        self._tracks = drop_duplicates(self._tracks, lambda t: t.box)
        return detected
