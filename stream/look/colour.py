"""Colour transfer in Lab: a cast's face moved to the actor's colour statistics, drawn per frame or, for a cast
drawn from a fixed texture (the warp), into the texture once per change of the track's colour."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

ColorStats = np.ndarray  # [4,3] float32: source mean, source spread, target mean, target spread per Lab channel
STATS_SIZE = 128  # px: statistics need no more (a 420 px face costs 7 ms, this 0.5)


def lab_stats(image: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """Mean and spread ([2,3]) per Lab channel of ``image`` inside ``mask`` (over 1/2); None where it is too
    small."""
    if image.shape[0] > STATS_SIZE:
        scale = STATS_SIZE / image.shape[0]
        image, mask = (cv2.resize(x, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) for x in (image, mask))
    weights = mask > 0.5
    if weights.sum() < 16:
        return None
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[weights].astype(np.float32)
    return np.stack([lab.mean(axis=0), lab.std(axis=0) + 1e-3])


def color_stats(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> ColorStats | None:
    """Mean and spread per Lab channel of ``source`` and ``target`` inside ``mask``; None where it is too small."""
    ours, theirs = lab_stats(source, mask), lab_stats(target, mask)
    return None if ours is None or theirs is None else np.concatenate([ours, theirs])


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


COLOR_REDRAW = 0.5  # Lab levels: how far a track's colour statistics move before its texture is coloured again


@dataclass(frozen=True)
class ColouredTexture:
    """A cast's texture ([N,N,4] RGBA) in one track's colour, the statistics it was coloured with, and the texture
    it was coloured from."""

    stats: ColorStats
    rgba: np.ndarray
    source: np.ndarray


def colour_texture(rgba: np.ndarray, stats: ColorStats, last: ColouredTexture | None,
                   box: tuple[int, int, int, int]) -> ColouredTexture:
    """The texture coloured by ``stats`` inside ``box`` (x0, y0, x1, y1: where its alpha is not 0); ``last`` itself
    while no statistic has moved by COLOR_REDRAW since it was coloured. Colour is a per-pixel map, so colouring the
    texture before the warp draws what colouring the warped face would, at a fraction of the cost: a track's colour
    changes slowly (its statistics are averaged over frames), and the texture is coloured again only when it has."""
    if last is not None and last.source is rgba and float(np.abs(last.stats - stats).max()) < COLOR_REDRAW:
        return last
    x0, y0, x1, y1 = box
    out = rgba.copy()
    out[y0:y1, x0:x1, :3] = apply_color(np.ascontiguousarray(rgba[y0:y1, x0:x1, :3]), stats)
    return ColouredTexture(stats.copy(), out, rgba)
