"""Colour transfer in Lab: a cast's face moved to the actor's colour statistics."""

from __future__ import annotations

import cv2
import numpy as np

ColorStats = np.ndarray  # [4,3] float32: source mean, source spread, target mean, target spread per Lab channel


def color_stats(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> ColorStats | None:
    """Mean and spread per Lab channel of ``source`` and ``target`` inside ``mask``; None where it is too small."""
    if source.shape[0] > 128:  # statistics need no more than 128 px (a 420 px face costs 7 ms, this 0.5)
        scale = 128 / source.shape[0]
        source, target, mask = (cv2.resize(x, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                                for x in (source, target, mask))
    weights = mask > 0.5
    if weights.sum() < 16:
        return None
    src = cv2.cvtColor(source, cv2.COLOR_RGB2LAB)[weights].astype(np.float32)
    tgt = cv2.cvtColor(target, cv2.COLOR_RGB2LAB)[weights].astype(np.float32)
    return np.stack([src.mean(axis=0), src.std(axis=0) + 1e-3, tgt.mean(axis=0), tgt.std(axis=0) + 1e-3])


COLOR_GAIN = 1.25  # the most a Lab channel's spread over the face is raised, or lowered (its inverse)


def apply_color(source: np.ndarray, stats: ColorStats) -> np.ndarray:
    """Shift ``source``'s Lab statistics from the first two rows of ``stats`` to the last two. Each channel's spread
    follows within [0.8, 1.25] only: the spread over a face is mostly its features' contrast, not its light (the
    light is moved by ``look.light.transfer_light``). A flat-lit actor's lower spread, taken whole (lightness was
    allowed down to 0.5), halved the contrast of the cast's eyes and brows and washed them out; a larger gain on
    the colour channels painted the lips and eyes beyond any make-up."""
    gain = np.clip(stats[3] / stats[1], 1 / COLOR_GAIN, COLOR_GAIN)
    # per channel an affine map of 8-bit Lab values: one lookup table (a float pass over the crop cost 5 ms).
    # The colour channels are spread about the cast's own mean; their shift to the actor's mean is added after,
    # in proportion to each pixel's lightness (up to the face's mean): a skin tone is what a surface reflects, so
    # it moves a dark pixel's colour little. Shifted whole, a dark moustache, brow or eyelid took the skin's
    # whole shift and turned a saturated red-brown (a pale cast on a warm actor)
    levels = np.arange(256, dtype=np.float32)[:, None]
    centre = np.array([stats[2, 0], stats[0, 1], stats[0, 2]], np.float32)
    table = np.clip((levels - stats[0]) * gain + centre, 0, 255).astype(np.uint8).reshape(256, 1, 3)
    lightness, a, b = cv2.split(cv2.LUT(cv2.cvtColor(source, cv2.COLOR_RGB2LAB), table))
    mean = float(np.clip(stats[2, 0], 1.0, 255.0))
    # 8-bit passes, saturated and rounded (a float pass cost 1.5 ms more)
    upto = np.minimum(lightness, np.uint8(round(mean)))
    a, b = (cv2.addWeighted(x, 1.0, upto, float(stats[2, c] - stats[0, c]) / mean, 0.0) for c, x in ((1, a), (2, b)))
    return cv2.cvtColor(cv2.merge([lightness, a, b]), cv2.COLOR_LAB2RGB)
