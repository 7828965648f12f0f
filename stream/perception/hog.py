"""dlib's HOG face detector and 68-point landmark predictor (the `hog` detector)."""

from __future__ import annotations

import functools
import importlib.util
import os
import pickle
from pathlib import Path

import cv2
import dlib
import numpy as np

from engines.errors import InputError
from stream.perception.geometry import Box

LANDMARK_FILE = "shape_predictor_68_face_landmarks.dat"
_DEBIAN_PATHS = (Path("/usr/share/dlib") / LANDMARK_FILE,)


class ModelNotFound(InputError):
    pass


def find_landmark_model() -> Path:
    """Path of dlib's 68-point model, or :class:`ModelNotFound` naming every place looked at."""
    candidates: list[Path] = []
    env = os.environ.get("RECAST_LANDMARKS")
    if env:
        candidates.append(Path(env))
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "models" / LANDMARK_FILE for p in spec.submodule_search_locations]
    candidates += list(_DEBIAN_PATHS)
    for path in candidates:
        if path.is_file():
            return path
    raise ModelNotFound(
        f"{LANDMARK_FILE} not found (looked in: {', '.join(map(str, candidates))}); "
        "install face-recognition-models or Debian's libdlib-data, or set RECAST_LANDMARKS"
    )


@functools.cache
def _hog_detector_state() -> bytes:
    """dlib's HOG detector, built once per process and kept serialised. Building it takes 0.25-0.33 s inside dlib,
    holding the GIL all along (in a server, every thread and the event loop stand still meanwhile); a copy
    from this state takes 1.5 ms."""
    return pickle.dumps(dlib.get_frontal_face_detector())


def hog_detector() -> dlib.fhog_object_detector:
    """A detector of one's own (dlib's detectors are not safe to share between threads), from the kept state."""
    detector: dlib.fhog_object_detector = pickle.loads(_hog_detector_state())
    return detector


class FaceDetector:
    """dlib's HOG frontal face detector run on a copy of the frame scaled to at most ``detect_width``."""

    def __init__(self, detect_width: int = 640, upsample: int = 0) -> None:
        self.detect_width = detect_width
        self.upsample = upsample
        self._detector = hog_detector()

    def detect(self, gray: np.ndarray) -> list[Box]:
        h, w = gray.shape[:2]
        scale = min(1.0, self.detect_width / w) if self.detect_width > 0 else 1.0
        small = gray if scale == 1.0 else cv2.resize(gray, (round(w * scale), round(h * scale)),
                                                      interpolation=cv2.INTER_AREA)
        rects = self._detector(small, self.upsample)
        return [Box(r.left() / scale, r.top() / scale, r.right() / scale, r.bottom() / scale) for r in rects]


class LandmarkPredictor:
    """dlib's 68-point shape predictor on the full-resolution frame."""

    def __init__(self, model: Path | None = None) -> None:
        self.model = model or find_landmark_model()
        self._predictor = dlib.shape_predictor(str(self.model))

    def predict(self, gray: np.ndarray, box: Box) -> np.ndarray:
        """68 (x, y) points, float32, in frame pixels."""
        rect = dlib.rectangle(round(box.x0), round(box.y0), round(box.x1), round(box.y1))
        shape = self._predictor(gray, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)  # [68,2]
