"""Bake-time edits with STIT's stitching tuning, per track segment (stit-pipeline.md section 4).

An edited crop, G(pivot + edit), pasted back leaves a seam where it meets the original frame. For each segment of
a track (`segment` consecutive faces), a copy of the title's tuned generator is optimised so that its edited crops
match the **original** crops in a border band around the face mask (border loss, masked L2) while staying close to
the **edited** crops inside the face (content loss, weighted by `content_weight`, STIT's 0.01); it stops early once
the border loss falls under `threshold`. STIT does this per frame and spends hours per clip; Recast does it per
segment at bake time only and stores the stitched crops, so playback of that edit is a lookup and a paste.

The face mask is the feathered landmark hull that playback pastes with (`stream.look.masks.face_mask`), not a face
parsing network: the band covers its soft edge, from the fully opaque core (eroded) to just outside the hull
(dilated). `stitch_segment` is a pure function of file paths and arrays, so segments run in this process or as Ray
tasks (`--executor ray`) with the same results.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from engines.checkpoints import open_checkpoint
from engines.images import to_tensor, to_uint8
from export.options import StitchOptions
from export.pti import fresh_generator
from export.tasks import run_tasks


@dataclass
class StitchJob:
    """One segment: the tuned generator's file, the edited pivots, the original crops and their face masks."""

    generator: str
    pivots: np.ndarray  # [n, styles, 512] float32, edits applied
    crops: np.ndarray  # [n, S, S, 3] uint8
    masks: np.ndarray  # [n, S, S] float32, the paste mask
    options: StitchOptions


def band_and_core(mask: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """For a paste mask [S,S]: the border band around its soft edge (from its opaque core eroded to its hull
    dilated by `width` of the crop size) and the face inside the band; float32 0/1 each."""
    k = max(1, round(mask.shape[0] * width))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
    core = cv2.erode((mask >= 0.999).astype(np.uint8), kernel)
    outer = cv2.dilate((mask > 0).astype(np.uint8), kernel)
    return ((outer > 0) & (core == 0)).astype(np.float32), (core > 0).astype(np.float32)


def _masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weight = mask[:, None]
    return ((a - b) ** 2 * weight).sum() / (weight.sum() * a.shape[1]).clamp_min(1.0)


def stitch_segment(job: StitchJob) -> tuple[np.ndarray, dict[str, float]]:
    """The segment's stitched crops [n,S,S,3] uint8 and its figures (border and content losses before/after)."""
    options = job.options
    generator = fresh_generator(open_checkpoint(job.generator, "stylegan2"))
    bands, cores = zip(*(band_and_core(mask, options.band) for mask in job.masks), strict=True)
    band, core = torch.from_numpy(np.stack(bands)), torch.from_numpy(np.stack(cores))
    w = torch.from_numpy(job.pivots)
    real = to_tensor(job.crops)
    synthesis = generator.synthesis
    with torch.no_grad():
        edited = synthesis(w, noise_mode="const")
    border_before = float(_masked_mse(edited, real, band))
    for p in generator.parameters():
        p.requires_grad_(False)
    params = list(synthesis.parameters())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=options.lr)
    rng = np.random.default_rng(options.seed)
    steps = 0
    while steps < options.steps:
        steps += 1
        index = torch.from_numpy(rng.choice(len(w), min(options.batch, len(w)), replace=False))
        fake = synthesis(w[index], noise_mode="const")
        border = _masked_mse(fake, real[index], band[index])
        content = _masked_mse(fake, edited[index], core[index])
        loss = border + options.content_weight * content
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if float(border.detach()) < options.threshold:
            break
    with torch.no_grad():
        out = synthesis(w, noise_mode="const")
        border_after = float(_masked_mse(out, real, band))
        content_after = float(_masked_mse(out, edited, core))
    pixels = to_uint8(out)
    return pixels, {"border_before": border_before, "border_after": border_after, "content_after": content_after,
                    "steps": float(steps)}


def map_segments(jobs: list[StitchJob], executor: str,
                 on_done: Callable[[int, dict[str, float]], None] | None = None
                 ) -> list[tuple[np.ndarray, dict[str, float]]]:
    """Run the segments here (`local`) or as Ray tasks (`ray`; inside a Ray task they become nested tasks of the
    same cluster): export/tasks.py."""
    return run_tasks(stitch_segment, jobs, executor, on_done=(lambda n, r: on_done(n, r[1])) if on_done else None)


def segments(count: int, size: int) -> list[tuple[int, int]]:
    """[start, end) row ranges of at most `size`; a short tail joins the segment before it."""
    ranges = list(itertools.pairwise([*range(0, count, size), count]))
    if len(ranges) > 1 and ranges[-1][1] - ranges[-1][0] < size // 2:
        (a, _), (_, d) = ranges[-2], ranges[-1]
        ranges[-2:] = [(a, d)]
    return ranges

