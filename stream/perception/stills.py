"""Faces in a still picture (a cast portrait): the detector named by `--detector`, and the choice of detectors."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stream.media.watermark import FaceOutlines
from stream.perception.geometry import Box, to_gray
from stream.perception.hog import FaceDetector, LandmarkPredictor

# the trackers' face models; the first is the default (see stream.render.pipeline.make_tracker)
DETECTORS = ("mediapipe", "hog")
DEFAULT_DETECTOR = DETECTORS[0]
StillFaces = Callable[[np.ndarray], list[tuple[Box, np.ndarray]]]  # RGB image -> (box, 68 landmarks) per face


def still_faces(detector: str = DEFAULT_DETECTOR, predictor: LandmarkPredictor | None = None) -> StillFaces:
    """Faces with 68 landmarks in a still image (a cast portrait), found the way the tracker of ``detector`` finds
    them, so that a cast's landmarks and an actor's come from the same model (the warp maps one onto the other)."""
    if detector == "mediapipe":
        from stream.perception.mesh import MeshLandmarker

        return MeshLandmarker().faces
    hog, model = FaceDetector(detect_width=0, upsample=1), predictor or LandmarkPredictor()

    def faces(image: np.ndarray) -> list[tuple[Box, np.ndarray]]:
        gray = to_gray(image)
        return [(box, model.predict(gray, box)) for box in hog.detect(gray)]

    return faces


def face_outlines(detector: str = DEFAULT_DETECTOR) -> FaceOutlines:
    """Each face's outline in an RGB picture (the jaw and the brows of its 68 landmarks, [27,2] pixels): what a
    reader of the invisible mark leaves out (stream.media.watermark.VideoReader), the renderer having spared it."""
    faces = still_faces(detector)
    return lambda image: [landmarks[:27].astype(np.float64) for _, landmarks in faces(image)]


def installed_face_outlines() -> FaceOutlines | None:
    """`face_outlines` with the default face models, or None where they are not installed."""
    from stream.perception.model_files import ModelMissing

    try:
        return face_outlines()
    except ModelMissing:
        return None
