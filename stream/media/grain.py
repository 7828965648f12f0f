"""How grainy a video is, which decides how an offline render is encoded.

x264's `grain` tuning keeps a grainy or finely textured source's texture (at crf 18 its default tuning smooths away
a fifth to a quarter of such a face's finest detail), but on a clean source it draws noise of its own afresh on
every frame: the face then changes more from frame to frame than the source's and turns crisper than it. So a render
takes the `grain` tuning where the source is grainy and x264's default elsewhere.

The measure is Immerkær's fast estimate of a picture's noise (the mean absolute response of a 3x3 operator that
cancels smooth shading and straight edges), over the luma of a few frames of the video's first seconds, the median.
Measured on the shared clips: 1.15 on the crisp close-up (d0), 0.36-0.45 on the others (s18, d20, hamilton).
"""

from __future__ import annotations

import math
from pathlib import Path

import av
import cv2
import numpy as np

GRAINY = 0.7  # the noise estimate from which a source counts as grainy (grey levels, full range)
SAMPLED, SAMPLE_EVERY = 12, 4  # frames measured, one in this many from the start
_OPERATOR = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def noise_level(gray: np.ndarray) -> float:
    """Immerkær's estimate of the noise's standard deviation in a grey picture (grey levels)."""
    if gray.shape[0] < 3 or gray.shape[1] < 3:
        return 0.0
    response = np.abs(cv2.filter2D(gray.astype(np.float32), -1, _OPERATOR))[1:-1, 1:-1]
    return float(math.sqrt(math.pi / 2) * response.mean() / 6)


def source_noise(location: str | Path) -> float | None:
    """The median noise estimate over SAMPLED frames of a video's start (one in SAMPLE_EVERY), or None where it
    cannot be read (the render itself then says why)."""
    levels: list[float] = []
    try:
        with av.open(str(location)) as container:
            if not container.streams.video:
                return None
            for index, frame in enumerate(container.decode(video=0)):
                if index % SAMPLE_EVERY == 0:
                    levels.append(noise_level(frame.to_ndarray(format="gray")))
                if len(levels) >= SAMPLED:
                    break
    except (av.error.FFmpegError, OSError, ValueError):
        return None
    return float(np.median(levels)) if levels else None


def offline_tuning(location: str | Path) -> str | None:
    """x264's tuning for an offline render of `location`: `grain` for a grainy source, None (x264's default)
    otherwise."""
    level = source_noise(location)
    return "grain" if level is not None and level >= GRAINY else None
