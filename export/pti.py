"""Pivotal tuning (PTI): the generator's synthesis weights fitted so that G(pivot_i) reproduces crop i.

L2, plus LPIPS when its weights are present locally (never fetched); Adam; a fixed permutation of the crops per
epoch, so that a run resumed from a checkpoint draws exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from engines import stylegan2
from engines.checkpoints import build_modules, generator_of
from engines.official import Checkpoint
from export.options import PTIOptions

log = logging.getLogger(__name__)


def fresh_generator(ckpt: Checkpoint) -> stylegan2.Generator:
    """A private copy of the checkpoint's generator to tune (the loaded one stays as it was)."""
    generator = build_modules("stylegan2", ckpt.config)["generator"]
    assert isinstance(generator, stylegan2.Generator)
    generator.load_state_dict(generator_of(ckpt).state_dict())
    return generator.eval()


class PerceptualLoss(nn.Module):
    """LPIPS from local weights (engines/lpips.py); absent unless the operator gives the file."""

    def __init__(self, path: str) -> None:
        super().__init__()
        from engines.lpips import load_lpips

        self.net = load_lpips(path)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(a, b).mean()


def _batches(count: int, batch: int, steps: int, seed: int, start: int) -> Iterator[tuple[int, np.ndarray]]:
    """The crops of each step: a fixed permutation per epoch, so a resumed run draws exactly what the uninterrupted
    one would have."""
    per_epoch = max(1, math.ceil(count / batch))
    for step in range(start, steps):
        epoch, offset = divmod(step, per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(count)
        yield step, order[offset * batch : (offset + 1) * batch]


def tune(generator: Any, pivots: torch.Tensor, targets: torch.Tensor, options: PTIOptions,
         checkpoint: Callable[[int, dict[str, Any]], None] | None = None, resume: dict[str, Any] | None = None,
         progress: Callable[[int, float], None] | None = None) -> list[float]:
    """Pivotal tuning of `generator.synthesis` in place; returns the loss per step. `resume` is a checkpoint
    written by `checkpoint` (step, synthesis and optimizer state)."""
    synthesis = generator.synthesis
    synthesis.train()
    for p in generator.parameters():
        p.requires_grad_(False)
    params = [p for p in synthesis.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=options.lr, betas=(0.9, 0.999))
    start = 0
    if resume is not None:
        synthesis.load_state_dict(resume["synthesis"])
        optimizer.load_state_dict(resume["optimizer"])
        start = int(resume["step"])
        log.info("PTI resumes at step %d of %d", start, options.steps)
    lpips = PerceptualLoss(options.lpips) if options.lpips else None
    losses: list[float] = []
    for step, index in _batches(len(pivots), options.batch, options.steps, options.seed, start):
        idx = torch.from_numpy(index)
        fake = synthesis(pivots[idx], noise_mode="const")
        real = targets[idx]
        loss = options.l2_weight * torch.nn.functional.mse_loss(fake, real)
        if lpips is not None:
            loss = loss + options.lpips_weight * lpips(fake, real)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, losses[-1])
        done = step + 1
        if checkpoint is not None and (done % options.checkpoint_every == 0) and done < options.steps:
            checkpoint(done, {"step": done, "synthesis": synthesis.state_dict(), "optimizer": optimizer.state_dict()})
    synthesis.eval()
    for p in params:
        p.requires_grad_(False)
    return losses


@torch.no_grad()
def reconstruction_error(generator: Any, pivots: torch.Tensor, targets: torch.Tensor, batch: int = 8) -> float:
    """Mean squared error of G(pivot) against the crops, in [-1,1] units."""
    total, count = 0.0, 0
    for i in range(0, len(pivots), batch):
        fake = generator.synthesis(pivots[i : i + batch], noise_mode="const")
        total += float(((fake - targets[i : i + batch]) ** 2).mean()) * len(fake)
        count += len(fake)
    return total / max(count, 1)


def load_resume(path: Any, key: str) -> dict[str, Any] | None:
    """A PTI checkpoint written under the same stage key, or None (absent, unreadable, or of other inputs)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a checkpoint cut short by the kill: start over
        log.warning("%s: unreadable PTI checkpoint (%s); tuning starts over", path, err)
        return None
    if not isinstance(state, dict) or state.get("key") != key:
        log.warning("%s: PTI checkpoint of other inputs; tuning starts over", path)
        return None
    return state
