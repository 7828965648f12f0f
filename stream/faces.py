"""Face detection (dlib HOG on a downscaled frame) and 68-point landmarks (dlib shape predictor, full frame).

The landmark model is a file found by path, never downloaded: ``$RECAST_LANDMARKS``, then the
``face-recognition-models`` package (located without importing it, since its ``__init__`` needs
``pkg_resources``), then Debian's ``libdlib-data``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np

from engines.errors import InputError

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


def landmark_box(landmarks: np.ndarray) -> Box:
    x0, y0 = landmarks.min(axis=0)
    x1, y1 = landmarks.max(axis=0)
    return Box(float(x0), float(y0), float(x1), float(y1))


DETECTORS = ("mediapipe", "hog")  # the trackers' face models; the first is the default (see stream.pipeline)
DEFAULT_DETECTOR = DETECTORS[0]

StillFaces = Callable[[np.ndarray], list[tuple[Box, np.ndarray]]]  # RGB image -> (box, 68 landmarks) per face


def still_faces(detector: str = DEFAULT_DETECTOR, predictor: LandmarkPredictor | None = None) -> StillFaces:
    """Faces with 68 landmarks in a still image (a cast portrait), found the way the tracker of ``detector`` finds
    them, so that a cast's landmarks and an actor's come from the same model (the warp maps one onto the other)."""
    if detector == "mediapipe":
        from stream.mesh import MeshLandmarker

        return MeshLandmarker().faces
    hog, model = FaceDetector(detect_width=0, upsample=1), predictor or LandmarkPredictor()

    def faces(image: np.ndarray) -> list[tuple[Box, np.ndarray]]:
        gray = to_gray(image)
        return [(box, model.predict(gray, box)) for box in hog.detect(gray)]

    return faces
