"""e4e encoder (`Encoder4Editing(50, 'ir_se')`) with the official state_dict keys.

Follows omertov/encoder4editing `models/encoders/{psp_encoders,helpers}.py`; the spec is
`../shared/reference/checkpoint-formats.md` section 3. The encoder maps a [-1,1] face crop at 256x256 to W+ codes;
pSp adds the generator's mean latent (`latent_avg`), which `E4EEngine` does too.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F


class BlockSpec(NamedTuple):
    in_channel: int
    depth: int
    stride: int


def get_block(in_channel: int, depth: int, num_units: int, stride: int = 2) -> list[BlockSpec]:
    return [BlockSpec(in_channel, depth, stride)] + [BlockSpec(depth, depth, 1) for _ in range(num_units - 1)]


def get_blocks(num_layers: int) -> list[list[BlockSpec]]:
    units = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
    if num_layers not in units:
        raise ValueError(f"num_layers must be 50, 100 or 152, got {num_layers}")
    a, b, c, d = units[num_layers]
    return [get_block(64, 64, a), get_block(64, 128, b), get_block(128, 256, c), get_block(256, 512, d)]


class SEModule(nn.Module):
    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * s


def _shortcut(in_channel: int, depth: int, stride: int) -> nn.Module:
    if in_channel == depth:
        return nn.MaxPool2d(1, stride)
    return nn.Sequential(nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False), nn.BatchNorm2d(depth))


class Bottleneck(nn.Module):
    """`bottleneck_IR` (se=False) and `bottleneck_IR_SE` (se=True): the same unit, with or without the SE gate."""

    def __init__(self, in_channel: int, depth: int, stride: int, se: bool = True) -> None:
        super().__init__()
        self.shortcut_layer = _shortcut(in_channel, depth, stride)
        layers: list[nn.Module] = [
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if se:
            layers.append(SEModule(depth, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class EqualLinear(nn.Module):
    """rosinality EqualLinear without activation: y = x @ (W * lr_mul / sqrt(in)).T + b * lr_mul."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0, lr_mul: float = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full([out_dim], float(bias_init))) if bias else None
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        return F.linear(x, self.weight * self.scale, bias=bias)


class GradualStyleBlock(nn.Module):
    def __init__(self, in_c: int, out_c: int, spatial: int) -> None:
        super().__init__()
        self.out_c = out_c
        num_pools = int(math.log2(spatial))
        modules: list[nn.Module] = [nn.Conv2d(in_c, out_c, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        for _ in range(num_pools - 1):
            modules += [nn.Conv2d(out_c, out_c, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*modules)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).reshape(-1, self.out_c))


def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=y.shape[2:], mode="bilinear", align_corners=True) + y


class Encoder4Editing(nn.Module):
    """[B,3,256,256] in [-1,1] -> W+ codes [B,style_count,512] (before `latent_avg` is added)."""

    def __init__(self, num_layers: int = 50, mode: str = "ir_se", stylegan_size: int = 1024) -> None:
        super().__init__()
        if mode not in ("ir", "ir_se"):
            raise ValueError(f"mode must be 'ir' or 'ir_se', got {mode!r}")
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, (3, 3), 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
        )
        self.body = nn.Sequential(
            *(Bottleneck(*spec, se=mode == "ir_se") for block in get_blocks(num_layers) for spec in block)
        )
        self.style_count = 2 * int(math.log2(stylegan_size)) - 2
        self.coarse_ind, self.middle_ind = 3, 7
        self.styles = nn.ModuleList(
            GradualStyleBlock(512, 512, 16 if i < self.coarse_ind else 32 if i < self.middle_ind else 64)
            for i in range(self.style_count)
        )
        self.latlayer1 = nn.Conv2d(256, 512, kernel_size=1, stride=1, padding=0)
        self.latlayer2 = nn.Conv2d(128, 512, kernel_size=1, stride=1, padding=0)
        self.progressive_stage = self.style_count  # 'Inference': every delta on
        self.taps = (6, 20, len(self.body) - 1)  # c1, c2, c3 as upstream (body indices 6, 20, 23 for IR-50)

    def backbone(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three taps c1 [B,128,64,64], c2 [B,256,32,32], c3 [B,512,16,16]."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"Encoder4Editing: expected [B,3,H,W], got {list(x.shape)}")
        x = self.input_layer(x)
        taps: list[torch.Tensor] = []
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in self.taps:
                taps.append(x)
        return taps[0], taps[1], taps[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3 = self.backbone(x)
        w0 = self.styles[0](c3)
        rows = [w0]
        features = c3
        p2 = c3
        for i in range(1, self.style_count):
            if i == self.coarse_ind:
                p2 = _upsample_add(c3, self.latlayer1(c2))
                features = p2
            elif i == self.middle_ind:
                features = _upsample_add(p2, self.latlayer2(c1))
            rows.append(w0 + self.styles[i](features) if i <= self.progressive_stage else w0)
        return torch.stack(rows, dim=1)  # [B,style_count,512]


class E4EEngine(nn.Module):
    """Engine boundary: image [B,3,256,256] in [-1,1] -> w_plus [B,style_count,512] (codes + latent_avg)."""

    input_names = ("image",)
    output_names = ("w_plus",)

    def __init__(self, encoder: Encoder4Editing, latent_avg: torch.Tensor) -> None:
        super().__init__()
        self.encoder = encoder
        if latent_avg.ndim == 1:
            latent_avg = latent_avg[None].repeat(encoder.style_count, 1)
        if list(latent_avg.shape) != [encoder.style_count, 512]:
            raise ValueError(f"latent_avg must be [{encoder.style_count},512], got {list(latent_avg.shape)}")
        self.register_buffer("latent_avg", latent_avg.detach().to(torch.float32).clone())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image) + self.latent_avg

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        return (torch.rand(batch, 3, 256, 256) * 2 - 1,)
