"""A small DCGAN (Radford et al. 2016) trainable on a laptop CPU on aligned face crops.

The seed of the product at toy scale: `recast track --crops DIR` exports aligned crops, `recast dcgan train --faces
DIR -o MODEL` trains on them and writes the generator (our safetensors format) and a grid of samples.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from engines.images import to_tensor, to_uint8

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _levels(size: int) -> int:
    levels = int(math.log2(size)) - 2
    if size not in (16, 32, 64, 128):
        raise ValueError(f"DCGAN image size must be 16, 32, 64 or 128, got {size}")
    return levels


class Generator(nn.Module):
    """z [N,nz] -> image [N,nc,size,size] in [-1,1] (transposed convolutions, batch norm, ReLU, tanh)."""

    def __init__(self, nz: int = 64, ngf: int = 32, nc: int = 3, size: int = 32) -> None:
        super().__init__()
        self.nz, self.ngf, self.nc, self.size = nz, ngf, nc, size
        levels = _levels(size)
        width = ngf * 2 ** (levels - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width),
                                   nn.ReLU(True)]
        for _ in range(levels - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2),
                       nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.reshape(z.shape[0], self.nz, 1, 1))

    def config(self) -> dict[str, int]:
        return {"nz": self.nz, "ngf": self.ngf, "nc": self.nc, "size": self.size}


class Discriminator(nn.Module):
    """image [N,nc,size,size] -> logit [N] (strided convolutions, batch norm, LeakyReLU 0.2)."""

    def __init__(self, ndf: int = 32, nc: int = 3, size: int = 32) -> None:
        super().__init__()
        levels = _levels(size)
        layers: list[nn.Module] = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        width = ndf
        for _ in range(levels - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2),
                       nn.LeakyReLU(0.2, True)]
            width *= 2
        layers += [nn.Conv2d(width, 1, 4, 1, 0, bias=False)]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).reshape(-1)


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), batch-norm scales N(1, 0.02)."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class GeneratorEngine(nn.Module):
    """Engine boundary: z [N,nz] -> image [N,nc,S,S] in [-1,1]."""

    input_names = ("z",)
    output_names = ("image",)

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch, self.generator.nz),)


def load_faces(folder: Path, size: int) -> torch.Tensor:
    """Every image in `folder` resized to size x size, as [N,3,S,S] in [-1,1]."""
    from PIL import Image, UnidentifiedImageError

    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder of face images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no face images ({', '.join(IMAGE_SUFFIXES)})")
    images = []
    for path in files:
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{path}: not a readable image ({err})") from err
        images.append(np.asarray(rgb, dtype=np.uint8))
    return to_tensor(np.stack(images)).contiguous()


@dataclass
class TrainReport:
    steps: int = 0
    d_loss: list[float] = field(default_factory=list)
    g_loss: list[float] = field(default_factory=list)


def train(
    faces: torch.Tensor,
    epochs: int = 60,
    batch_size: int = 16,
    nz: int = 64,
    width: int = 32,
    lr: float = 2e-4,
    seed: int = 0,
    flip: bool = True,
    real_label: float = 0.9,
    instance_noise: float = 0.1,
    progress: Callable[[int, float, float], None] | None = None,
) -> tuple[Generator, Discriminator, TrainReport]:
    """Non-saturating GAN training with Adam(0.5, 0.999) on [N,3,S,S] faces in [-1,1].

    A few hundred crops of one clip are a tiny, repetitive set on which D wins within an epoch; one-sided label
    smoothing (`real_label`) and Gaussian instance noise that fades to zero over the run keep G learning."""
    size = faces.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    G, D = Generator(nz, width, faces.shape[1], size), Discriminator(width, faces.shape[1], size)
    G.apply(init_weights)
    D.apply(init_weights)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    report = TrainReport()
    n = faces.shape[0]
    for epoch in range(epochs):
        sigma = instance_noise * max(0.0, 1 - epoch / max(epochs * 0.75, 1))
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            real = faces[order[start : start + batch_size]]
            if real.shape[0] < 2:
                continue
            if flip:  # horizontal flips double a small set of crops
                mask = torch.rand(real.shape[0], generator=gen) < 0.5
                real = torch.where(mask[:, None, None, None], real.flip(3), real)
            b = real.shape[0]
            z = torch.randn(b, nz, generator=gen)
            fake = G(z)

            def noisy(x: torch.Tensor, sigma: float = sigma) -> torch.Tensor:
                return x + sigma * torch.randn(x.shape, generator=gen) if sigma > 0 else x

            opt_d.zero_grad()
            d_loss = F.binary_cross_entropy_with_logits(
                D(noisy(real)), torch.full((b,), real_label)
            ) + F.binary_cross_entropy_with_logits(D(noisy(fake.detach())), torch.zeros(b))
            d_loss.backward()
            opt_d.step()
            opt_g.zero_grad()
            g_loss = F.binary_cross_entropy_with_logits(D(noisy(fake)), torch.ones(b))
            g_loss.backward()
            opt_g.step()
            report.steps += 1
            report.d_loss.append(float(d_loss.detach()))
            report.g_loss.append(float(g_loss.detach()))
        if progress is not None and report.d_loss:
            progress(epoch, report.d_loss[-1], report.g_loss[-1])
    return G.eval(), D.eval(), report


def sample_grid(G: Generator, count: int = 16, seed: int = 0) -> np.ndarray:
    """uint8 HxWx3 grid of `count` samples (sqrt(count) per row)."""
    z = torch.randn(count, G.nz, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        images = to_uint8(G(z))
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    s = G.size
    grid = np.zeros((rows * s, cols * s, G.nc), np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * s : (r + 1) * s, c * s : (c + 1) * s] = img
    return grid


def colour_statistics(images: torch.Tensor) -> np.ndarray:
    """Per-channel mean and standard deviation over a batch [N,3,S,S], as one vector (for tests)."""
    return torch.cat([images.mean(dim=(0, 2, 3)), images.std(dim=(0, 2, 3))]).numpy()
