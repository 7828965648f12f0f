"""Things put in front of the faces of a real clip, with the truth of where they are: the occlusion tests' input.

Two occluders, drawn over the face the tracker follows in the clean clip:
- a *hand* cut from the actor's own cheek in the same frame (his own skin tone: colour alone cannot tell it
  from the face), a fifth brighter in its middle (nearer the light) and darker towards its rim, with four
  fingers and the shadows between them; it
  rises from below the chin over the mouth and cheek, rests, and leaves;
- a *microphone*: a dark metal handle and a grille ball with a highlight, held before the chin.
The frames and the masks come back in memory and the clip is written (lossless-ish crf) for the render path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stream.media.sinks import MediaSink
from stream.media.sources import MediaSource


@dataclass
class OccludedClip:
    path: Path
    masks: dict[int, np.ndarray]  # frame index -> [H,W] bool, where the occluder is
    kinds: dict[int, str]  # frame index -> "hand" | "microphone"


def _hand_shape(size: int) -> np.ndarray:
    """A hand's silhouette (palm and four fingers, fingers up) in a ``size`` x ``size`` float mask."""
    m = np.zeros((size, size), np.uint8)
    s = size
    cv2.ellipse(m, (s // 2, int(s * 0.68)), (int(s * 0.3), int(s * 0.3)), 0, 0, 360, 255, -1)
    for k in range(4):
        x = int(s * (0.28 + 0.148 * k))
        top = int(s * (0.08 + 0.06 * abs(k - 1.5)))
        cv2.line(m, (x, int(s * 0.6)), (x, top), 255, max(2, int(s * 0.12)))
        cv2.circle(m, (x, top), max(1, int(s * 0.06)), 255, -1)
    return m.astype(np.float32) / 255.0


def _hand(frame: np.ndarray, landmarks: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """The hand at phase ``t`` (0..1: rise, rest, leave) over the actor's mouth and left cheek."""
    width = float(np.linalg.norm(landmarks[16] - landmarks[0]))
    size = int(width * 0.75)
    rise = min(1.0, t / 0.3) if t < 0.7 else max(0.0, (1.0 - t) / 0.3)
    centre = landmarks[48] * 0.5 + landmarks[4] * 0.5
    cx = int(centre[0])
    cy = int(centre[1] + (1.0 - rise) * size * 1.2)
    shape = _hand_shape(size)
    # skin from the actor's own cheek, stretched over the hand, shaded to its rim, shadows between the fingers
    a, b = landmarks[2], landmarks[31]
    x0, x1 = sorted((int(a[0]), int(b[0])))
    y0, y1 = int(landmarks[29][1]), int(landmarks[33][1]) + 2
    patch = frame[max(y0, 0):max(y1, y0 + 2), max(x0, 0):max(x1, x0 + 2)].astype(np.float32)
    skin = cv2.resize(patch, (size, size), interpolation=cv2.INTER_CUBIC)
    shade = cv2.GaussianBlur(shape, (0, 0), size * 0.08)
    skin *= (0.75 + 0.45 * shade)[..., None]  # nearer the light than the face, darker towards its rim
    for k in range(3):
        x = int(size * (0.354 + 0.148 * k))
        cv2.line(skin, (x, int(size * 0.55)), (x, int(size * 0.15)), (60, 40, 32), max(2, size // 30))
    return _place(frame, skin, shape, cx - size // 2, cy - size // 2)


def _microphone(frame: np.ndarray, landmarks: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    width = float(np.linalg.norm(landmarks[16] - landmarks[0]))
    size = int(width * 0.9)
    m = np.zeros((size, size), np.float32)
    r = int(size * 0.2)
    head = (int(size * 0.5), int(size * 0.3))
    cv2.circle(m, head, r, 1.0, -1)
    cv2.rectangle(m, (int(size * 0.43), head[1]), (int(size * 0.57), size - 1), 1.0, -1)
    img = np.full((size, size, 3), (38, 38, 42), np.float32)
    grille = (np.indices((size, size)).sum(axis=0) % 4 < 2)
    ball = np.zeros((size, size), np.float32)
    cv2.circle(ball, head, r, 1.0, -1)
    img[(ball > 0) & grille] = (95, 95, 100)
    cv2.circle(img, (head[0] - r // 3, head[1] - r // 3), max(2, r // 4), (200, 200, 205), -1)
    img = cv2.GaussianBlur(img, (0, 0), 0.8)
    sway = np.sin(t * 2 * np.pi) * width * 0.05
    cx = int(landmarks[8][0] + sway)
    cy = int(landmarks[57][1] + size * 0.15)
    return _place(frame, img, m, cx - size // 2, cy - size // 2)


def _place(frame: np.ndarray, pixels: np.ndarray, alpha: np.ndarray, x: int, y: int) -> tuple[np.ndarray, np.ndarray]:
    h, w = frame.shape[:2]
    size = alpha.shape[0]
    out = frame.copy()
    full = np.zeros((h, w), bool)
    fx0, fy0, fx1, fy1 = max(x, 0), max(y, 0), min(x + size, w), min(y + size, h)
    if fx1 <= fx0 or fy1 <= fy0:
        return out, full
    a = alpha[fy0 - y:fy1 - y, fx0 - x:fx1 - x, None]
    p = pixels[fy0 - y:fy1 - y, fx0 - x:fx1 - x]
    region = out[fy0:fy1, fx0:fx1].astype(np.float32)
    out[fy0:fy1, fx0:fx1] = np.clip(region * (1 - a) + p * a + 0.5, 0, 255).astype(np.uint8)
    full[fy0:fy1, fx0:fx1] = a[..., 0] > 0.5
    return out, full


def occluded_clip(source: Path, landmarks: dict[int, np.ndarray], out: Path,
                  hand: tuple[int, int], microphone: tuple[int, int], max_frames: int) -> OccludedClip:
    """``source`` with the hand over frames ``hand`` (first, last) and the microphone over ``microphone``;
    ``landmarks`` (frame -> [68,2]) place them on the face."""
    masks: dict[int, np.ndarray] = {}
    kinds: dict[int, str] = {}
    with MediaSource(source, keep_audio=False) as src:
        sink = MediaSink(out, src.info, crf=8, preset="veryfast")
        try:
            for frame in src.frames():
                if frame.index >= max_frames:
                    break
                image = frame.image
                lm = landmarks.get(frame.index)
                for kind, (first, last), draw in (("hand", hand, _hand), ("microphone", microphone, _microphone)):
                    if lm is not None and first <= frame.index <= last:
                        image, where = draw(image, lm, (frame.index - first) / max(1, last - first))
                        masks[frame.index] = where
                        kinds[frame.index] = kind
                sink.write(frame, image)
        finally:
            sink.close()
    return OccludedClip(out, masks, kinds)
