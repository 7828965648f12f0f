"""The sample title of the main job, generated from data shipped inside a dependency.

scikit-image ships NASA's public-domain portrait of astronaut Eileen Collins; the demo title animates it
(a slow camera move, a small head turn and a mouth that opens and closes, from a piecewise-affine warp of
her own landmarks) at 640x360, 25 fps, with a generated audio track whose loudness follows the mouth.
The file is written once into a cache folder and reused.
"""

from __future__ import annotations

import logging
import math
import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from stream.look.masks import polygon_mask
from stream.look.piecewise import PiecewiseAffine
from stream.perception.geometry import to_gray
from stream.perception.hog import FaceDetector, LandmarkPredictor

log = logging.getLogger(__name__)

DEMO_VERSION = 1
WIDTH, HEIGHT, FPS, SECONDS = 640, 360, 25, 6
SAMPLE_RATE = 44100
_JAW_LOWER = [4, 5, 6, 7, 8, 9, 10, 11, 12]
_LOWER_LIP = [55, 56, 57, 58, 59, 64, 65, 66, 67]


def cache_dir() -> Path:
    root = os.environ.get("RECAST_CACHE") or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "recast"


def demo_title_path() -> Path:
    """The sample title, generated on first use."""
    path = cache_dir() / "demo" / f"astronaut-v{DEMO_VERSION}.mp4"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        write_demo_title(tmp)
        tmp.replace(path)
    return path


def _mouth_open(t: float) -> float:
    """0..1, a few syllables a second with pauses."""
    syllables = max(0.0, math.sin(2 * math.pi * 2.2 * t)) ** 2
    phrase = 0.5 + 0.5 * math.sin(2 * math.pi * 0.35 * t)
    return syllables * phrase


def write_demo_title(path: Path) -> None:
    from skimage import data

    portrait = np.ascontiguousarray(data.astronaut())  # [512,512,3]
    gray = to_gray(portrait)
    boxes = FaceDetector(detect_width=0).detect(gray)
    if not boxes:
        raise RuntimeError("no face found in scikit-image's astronaut portrait")
    landmarks = LandmarkPredictor().predict(gray, boxes[0]).astype(np.float64)
    size = portrait.shape[0]
    warp = PiecewiseAffine(landmarks, size)
    face_height = float(landmarks[8, 1] - landmarks[27, 1])
    frames = FPS * SECONDS
    with av.open(str(path), mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.codec_context.options = {"crf": "20", "preset": "veryfast"}
        audio = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for i in range(frames):
            t = i / FPS
            opening = _mouth_open(t)
            dst = landmarks.copy()
            drop = opening * 0.09 * face_height
            dst[_JAW_LOWER, 1] += drop * np.array([0.2, 0.4, 0.7, 0.9, 1.0, 0.9, 0.7, 0.4, 0.2])
            dst[_LOWER_LIP, 1] += drop
            face = warp.warp(portrait, dst)
            inner = polygon_mask(dst[60:68], size, blur=1.0)[..., None] * min(1.0, opening * 3)
            face = (face * (1 - inner) + np.array([60, 20, 25]) * inner).astype(np.uint8)
            angle = 4.0 * math.sin(2 * math.pi * 0.25 * t)
            scale = 1.4 + 0.08 * math.sin(2 * math.pi * 0.15 * t)
            cx, cy = 225 + 12 * math.sin(2 * math.pi * 0.2 * t), 150
            m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
            m[:, 2] += np.array([WIDTH / 2 - cx, HEIGHT / 2 - cy])
            frame = cv2.warpAffine(face, m, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE)
            vf = av.VideoFrame.from_ndarray(np.asarray(frame, dtype=np.uint8), format="rgb24")
            vf.pts = i
            vf.time_base = Fraction(1, FPS)
            container.mux(video.encode(vf))
        container.mux(video.encode(None))
        _write_audio(container, audio, SECONDS)


def _write_audio(container: av.container.OutputContainer, stream: av.audio.AudioStream, seconds: float) -> None:
    total = int(seconds * SAMPLE_RATE)
    t = np.arange(total) / SAMPLE_RATE
    loudness = np.array([_mouth_open(x) for x in t[::441]]).repeat(441)[:total]
    tone = np.sin(2 * np.pi * 180 * t) + 0.4 * np.sin(2 * np.pi * 360 * t)
    samples = (0.25 * loudness * tone).astype(np.float32)
    chunk = 1024
    for start in range(0, total, chunk):
        piece = samples[start:start + chunk]
        af = av.AudioFrame.from_ndarray(piece[None, :], format="fltp", layout="mono")
        af.sample_rate = SAMPLE_RATE
        af.pts = start
        af.time_base = Fraction(1, SAMPLE_RATE)
        container.mux(stream.encode(af))
    container.mux(stream.encode(None))
