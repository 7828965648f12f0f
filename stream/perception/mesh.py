"""MediaPipe's face mesh (`face_landmark.tflite`, Apache-2.0) on LiteRT: 468 points in 3-D, a face-presence score,
the 68-point layout of the track file, and the head's yaw and pitch.

The model looks at a square crop around the face (the face's box scaled by 1.5 and turned so the eyes are level,
as MediaPipe's face_landmark graph does), 192x192 in [0, 1], and returns 468 (x, y, z) in crop pixels plus the logit
of "a face is in this crop". The crop for the next frame comes from this frame's mesh, so a track needs the
detector only to start and to recover.

The 68 points keep dlib's layout (DESIGN.md 3.2): the jaw is the mesh's face oval from the right tragus (127)
down to the chin (152) and up to the left one (356), resampled by arc length to 9 points a side (measured against
dlib's, the best spacing); brows, nose, eyes and lips are mesh vertices on the same feature's contour, chosen where
dlib's points fall (see FEATURES).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from stream.perception.litert import LiteModel
from stream.perception.model_files import mediapipe_model

if TYPE_CHECKING:
    from stream.perception.blazeface import Detection
    from stream.perception.geometry import Box

INPUT = 192
CROP_SCALE = 1.5

# the face oval from the right tragus over the chin to the left one (MediaPipe's FACEMESH_FACE_OVAL, lower half)
JAW_CHAIN = [127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152,
             377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 356]
# dlib points 17-67 as mesh vertices (a pair is averaged). Each is a vertex, or the middle of two, of the same
# feature's contour (brow, nose, eye ring, outer or inner lip ring, so a blink or an open mouth moves it as it moves
# dlib's point): the one nearest dlib's point over 230 frames of five people (the shared clips and portraits,
# normalised by the eye distance), kept only where the choice made without each person also helps on that person.
# The brows stay on their upper edge (dlib's are nearer the middle): they are the top of the box the tracker
# follows and matches detections with, and the lower box cost a turned face in the hamilton audience 4 frames.
# The eyes keep single vertices, their corners included: the pairs nearer dlib's points lie on the lids, moved with
# every blink, and make the recast flicker (d20: 0.83 against 0.77 on the scorer's measure).
FEATURES: list[tuple[int, ...]] = [
    (70,), (63,), (105,), (66,), (107,),  # 17-21 right brow, outer to inner
    (336,), (296,), (334,), (293,), (300,),  # 22-26 left brow, inner to outer
    (168, 6), (6, 195), (3, 281), (4,),  # 27-30 nose bridge to tip
    (98, 60), (97,), (94, 164), (326,), (327, 290),  # 31-35 under the nose
    (33,), (160,), (158,), (133,), (153,), (144,),  # 36-41 right eye
    (362,), (385,), (387,), (263,), (373,), (380,),  # 42-47 left eye
    (61,), (40, 39), (37,), (0,), (267,), (267, 409), (291,), (321, 405), (314,), (17,), (84,), (181, 91),  # 48-59
    (78,), (80, 13), (13,), (312,), (308,), (402, 14), (14,), (14, 88),  # 60-67 inner lips
]
RIGHT_EYE_CORNER, LEFT_EYE_CORNER = 33, 263
RIGHT_TRAGUS, LEFT_TRAGUS, FOREHEAD, CHIN = 234, 454, 10, 152


def _resample(chain: np.ndarray, count: int) -> np.ndarray:
    """``count`` points evenly spaced by arc length along a polyline [N,2], its ends included."""
    steps = np.hypot(*np.diff(chain, axis=0).T)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    if along[-1] <= 0:
        return np.repeat(chain[:1], count, axis=0)
    targets = np.linspace(0.0, along[-1], count)
    return np.stack([np.interp(targets, along, chain[:, 0]), np.interp(targets, along, chain[:, 1])], axis=1)


_FEATURE_PAIRS = np.array([ids if len(ids) == 2 else ids * 2 for ids in FEATURES])  # singletons doubled: [51,2]
_MIDDLE = JAW_CHAIN.index(CHIN)
_RIGHT_JAW, _LEFT_JAW = np.array(JAW_CHAIN[: _MIDDLE + 1]), np.array(JAW_CHAIN[_MIDDLE:])


def to_68(mesh: np.ndarray) -> np.ndarray:
    """[468,2+] mesh -> [68,2] float32 in dlib's layout."""
    points = mesh[:, :2].astype(np.float64)
    jaw = np.concatenate([_resample(points[_RIGHT_JAW], 9), _resample(points[_LEFT_JAW], 9)[1:]])
    features = points[_FEATURE_PAIRS].mean(axis=1)
    return np.concatenate([jaw, features]).astype(np.float32)


def head_pose(mesh: np.ndarray) -> tuple[float, float]:
    """Yaw and pitch in degrees from the mesh's 3-D points: yaw from the line between the tragi (0 facing the
    camera, positive turned to the picture's right), pitch from the line from forehead to chin (positive looking
    down). The mesh's z is in the same units as x and y (crop pixels, scaled like them)."""
    across = mesh[LEFT_TRAGUS] - mesh[RIGHT_TRAGUS]
    down = mesh[CHIN] - mesh[FOREHEAD]
    yaw = float(np.degrees(np.arctan2(-across[2], np.hypot(across[0], across[1]))))
    pitch = float(np.degrees(np.arctan2(down[2], np.hypot(down[0], down[1]))))
    return yaw, pitch


@dataclass
class Crop:
    """A square, rotated crop of the frame: centre, side and angle (radians, the eyes' tilt)."""

    cx: float
    cy: float
    side: float
    angle: float

    def matrix(self) -> np.ndarray:
        """Affine map from frame pixels to the 192x192 model input."""
        scale = INPUT / max(self.side, 1.0)
        cos, sin = np.cos(-self.angle) * scale, np.sin(-self.angle) * scale
        return np.array([[cos, -sin, INPUT / 2 - cos * self.cx + sin * self.cy],
                         [sin, cos, INPUT / 2 - sin * self.cx - cos * self.cy]])


def crop_from_points(points: np.ndarray, right_eye: np.ndarray, left_eye: np.ndarray,
                     scale: float = CROP_SCALE) -> Crop:
    """The crop around a set of face points (a detection's box corners, or last frame's mesh), turned level."""
    angle = float(np.arctan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0]))
    cos, sin = np.cos(-angle), np.sin(-angle)
    centre = points[:, :2].mean(axis=0)
    local = (points[:, :2] - centre) @ np.array([[cos, sin], [-sin, cos]])
    lo, hi = local.min(axis=0), local.max(axis=0)
    middle = (lo + hi) / 2 @ np.array([[cos, -sin], [sin, cos]]) + centre
    side = float(max(hi - lo)) * scale
    return Crop(float(middle[0]), float(middle[1]), side, angle)


@dataclass
class MeshResult:
    mesh: np.ndarray  # [468,3] frame pixels (z scaled like x)
    score: float  # probability that the crop holds a face
    crop: Crop

    @functools.cached_property
    def landmarks(self) -> np.ndarray:
        return to_68(self.mesh)

    def next_crop(self) -> Crop:
        return crop_from_points(self.mesh, self.mesh[RIGHT_EYE_CORNER], self.mesh[LEFT_EYE_CORNER])


class FaceMesh:
    """One LiteRT interpreter of face_landmark.tflite (not thread-safe: one per tracker)."""

    def __init__(self, threads: int = 1, model: Path | None = None) -> None:
        self._model = LiteModel(model or mediapipe_model("face_landmark"), threads)
        self._score, self._points = self._model.by_width[:2]

    def run(self, rgb: np.ndarray, crop: Crop) -> MeshResult:
        m = crop.matrix()
        patch = cv2.warpAffine(rgb, m, (INPUT, INPUT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        points, scores = self._model.run((patch.astype(np.float32) / 255.0)[None], self._points, self._score)
        raw = points.reshape(468, 3).astype(np.float64)
        logit = float(scores.ravel()[0])
        inverse = cv2.invertAffineTransform(m)
        xy = raw[:, :2] @ inverse[:, :2].T + inverse[:, 2]
        z = raw[:, 2:3] * (crop.side / INPUT)
        score = 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))
        return MeshResult(np.concatenate([xy, z], axis=1), float(score), crop)


# MediaPipe's iris model (`iris_landmark.tflite`, Apache-2.0) reads one eye from a 64 px square around its corners,
# 2.3 times their distance across and turned level, in [0, 1]: MediaPipe's left eye (mesh vertices 33 and 133, dlib's
# 36 and 39) as it is and the other mirrored (the model knows left eyes only). Its first 16 points are the eye's
# outline in the mesh's order: a corner, 7 along the lower lid, the other corner, 7 along the upper lid, each upper
# point above the lower one of the same rank.
IRIS_INPUT, IRIS_CROP = 64, 2.3
_LOWER_LID, _UPPER_LID = np.arange(1, 8), np.arange(9, 16)
_EYE_CORNERS = ((36, 39, False), (42, 45, True))  # in the 68 points: each eye's corners and whether it is mirrored


@dataclass
class EyeReading:
    """Two eyes as the iris model reads them: each one's opening (the mean height between its lids over its width)
    and its visible span along the line through the corners it was read at: where its middle lies from theirs and
    how wide it is, both in their distance (the mesh's corners lie outside the visible ones on some faces)."""

    openings: np.ndarray  # [2]
    spans: np.ndarray  # [2, 2]: (offset of the middle, width), per eye


class EyeOpenings:
    """How open each of a face's eyes is (the mean height between its lids over its width) and where it visibly
    lies between its corners, as MediaPipe's iris model reads them (1.2 ms an eye here; one LiteRT interpreter per
    thread that reads at once). The face mesh's lids follow a blink only part way: where s18's actor lowers her lids to
    0.44 of their opening (dlib's points), the mesh's close to 0.77 of theirs, the iris model's to 0.33."""

    def __init__(self, model: Path | None = None) -> None:
        self._model = LiteModel(model or mediapipe_model("iris_landmark"))
        self._contour = self._model.by_name["output_eyes_contours_and_brows"]

    def __call__(self, rgb: np.ndarray, landmarks: np.ndarray) -> EyeReading:
        """The eyes at dlib's points 36-41 and 42-47 of `landmarks` (pixels of `rgb`); nan for an eye narrower than
        4 px."""
        reading = EyeReading(np.full(2, np.nan), np.full((2, 2), np.nan))
        for k, (a, b, mirrored) in enumerate(_EYE_CORNERS):
            self._read(rgb, landmarks[a].astype(np.float64), landmarks[b].astype(np.float64), mirrored, reading, k)
        return reading

    def _read(self, rgb: np.ndarray, a: np.ndarray, b: np.ndarray, mirrored: bool, reading: EyeReading,
              k: int) -> None:
        across = b - a
        width = float(np.hypot(*across))
        if width < 4:
            return
        centre = (a + b) / 2
        level = float(np.degrees(np.arctan2(across[1], across[0])))
        m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), level, IRIS_INPUT / (width * IRIS_CROP))
        m[:, 2] += IRIS_INPUT / 2 - centre
        if mirrored:
            m = np.array([[-1.0, 0.0, IRIS_INPUT], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0.0, 0.0, 1.0]])
        patch = cv2.warpAffine(rgb, m, (IRIS_INPUT, IRIS_INPUT), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        (contour,) = self._model.run((patch.astype(np.float32) / 255.0)[None], self._contour)
        outline = contour.reshape(-1, 3)[:16, :2].astype(np.float64)
        height = float(np.mean(outline[_LOWER_LID, 1] - outline[_UPPER_LID, 1]))  # the patch is level: y is up-down
        reading.openings[k] = max(height, 0.0) / max(abs(outline[8, 0] - outline[0, 0]), 1e-6)
        back = cv2.invertAffineTransform(m)
        ends = outline[[0, 8]] @ back[:, :2].T + back[:, 2]  # the visible corners, in `rgb`'s pixels
        along = across / width
        reading.spans[k] = (float(((ends[0] + ends[1]) / 2 - (a + b) / 2) @ along) / width,
                            float(abs((ends[1] - ends[0]) @ along)) / width)


def crop_from_detection(detection: Detection, scale: float = CROP_SCALE) -> Crop:
    """MediaPipe's detection-to-ROI: the box's centre, its longer side scaled by 1.5, turned by the eyes' tilt."""
    box, (right_eye, left_eye) = detection.box, detection.keypoints[:2]
    angle = float(np.arctan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0]))
    cx, cy = box.center
    return Crop(cx, cy, max(box.width, box.height) * scale, angle)


# the mesh vertices the dense warp always follows: the contours of the eyes, lips, brows and nose and the face oval
# (the features that move, and the outline); the rest of its vertices are picked spread over the face
EYE_RINGS = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
             362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398]
LIP_RINGS = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146,
             78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95]
BROWS = [70, 63, 105, 66, 107, 46, 53, 52, 65, 55, 300, 293, 334, 296, 336, 276, 283, 282, 295, 285]
NOSE = [168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 164, 98, 97, 326, 327, 75, 305, 60, 290, 48, 278, 64, 294]
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
DENSE_KEEP = sorted(set(EYE_RINGS + LIP_RINGS + BROWS + NOSE + FACE_OVAL))
# each eye's ring in EYE_RINGS' order (an outline) and its lids from corner to corner, each upper vertex above the
# lower one of the same rank, with its corners
EYE_LIDS = ((EYE_RINGS[:16], [7, 163, 144, 145, 153, 154, 155], [246, 161, 160, 159, 158, 157, 173], (33, 133)),
            (EYE_RINGS[16:], [382, 381, 380, 374, 373, 390, 249], [398, 384, 385, 386, 387, 388, 466], (362, 263)))


def dense_vertices(mesh: np.ndarray, count: int = 200) -> np.ndarray:
    """The mesh vertices a dense warp follows: the features' contours and the oval, then the vertex farthest from
    those chosen, again and again, up to `count` (the skin between them evenly; 468 cost twice the time)."""
    points = mesh[:, :2].astype(np.float64)
    chosen = list(DENSE_KEEP)
    distance = np.min(np.linalg.norm(points[:, None] - points[chosen][None], axis=2), axis=1)
    while len(chosen) < count:
        far = int(np.argmax(distance))
        chosen.append(far)
        distance = np.minimum(distance, np.linalg.norm(points - points[far], axis=1))
    return np.array(sorted(chosen))


def portrait_mesh(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 468-point mesh [468,3] of the face whose 68 points are given (a cast portrait's, checked once), from a
    crop around those points refined twice, as the tracker refines its own."""
    mesh = FaceMesh()
    result = mesh.run(image, crop_from_points(landmarks, landmarks[36:42].mean(axis=0), landmarks[42:48].mean(axis=0)))
    for _ in range(2):
        result = mesh.run(image, result.next_crop())
    return result.mesh


class MeshLandmarker:
    """Faces in a still image: BlazeFace over the picture and tiles, then the mesh, refined twice; a detection the
    mesh does not confirm (presence under 0.5) is left out."""

    def __init__(self, min_presence: float = 0.5) -> None:
        from stream.perception.blazeface import BlazeFace

        self.detector, self.mesh, self.min_presence = BlazeFace(tiles=2), FaceMesh(), min_presence

    def faces(self, image: np.ndarray) -> list[tuple[Box, np.ndarray]]:
        from stream.perception.geometry import landmark_box

        out = []
        for found in self.detector.detect_rgb(image):
            result = self.mesh.run(image, crop_from_detection(found))
            for _ in range(2):
                result = self.mesh.run(image, result.next_crop())
            if result.score >= self.min_presence:
                out.append((landmark_box(result.landmarks), result.landmarks))
        return out
