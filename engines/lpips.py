"""LPIPS (Zhang et al. 2018), VGG variant, for PTI's perceptual term: from local weights only, never fetched.

The file is the `lpips` package's own `LPIPS(net='vgg').state_dict()` saved with torch.save or as safetensors:
`scaling_layer.shift/scale`, the VGG-16 feature slices `net.slice{1..5}.{i}.weight/bias` (torchvision's layer
indices) and the linear heads `lin{0..4}.model.1.weight`. It loads with strict keys and shapes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# VGG-16 `features` up to relu5_3, with torchvision's indices; LPIPS taps the ReLU after each slice.
_VGG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_SLICES = [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]
_CHANNELS = [64, 128, 256, 512, 512]


def _vgg_layers() -> list[nn.Module]:
    layers: list[nn.Module] = []
    channels = 3
    for spec in _VGG:
        if isinstance(spec, str):
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, spec, 3, padding=1), nn.ReLU(inplace=False)]
            channels = spec
    return layers


class _Slices(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers = _vgg_layers()
        for n, (start, stop) in enumerate(_SLICES, 1):
            block = nn.Sequential()
            for i in range(start, stop):
                block.add_module(str(i), layers[i])
            setattr(self, f"slice{n}", block)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for n in range(1, 6):
            x = getattr(self, f"slice{n}")(x)
            out.append(x)
        return out


class _Linear(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """Distance between images in [-1,1], [N,3,H,W] -> [N]."""

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = nn.Module()
        self.scaling_layer.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.scaling_layer.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])
        self.net = _Slices()
        for i, channels in enumerate(_CHANNELS):
            setattr(self, f"lin{i}", _Linear(channels))
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        shift, scale = self.scaling_layer.get_buffer("shift"), self.scaling_layer.get_buffer("scale")
        fa, fb = self.net((a - shift) / scale), self.net((b - shift) / scale)
        total = torch.zeros(a.shape[0], device=a.device)
        for i, (x, y) in enumerate(zip(fa, fb, strict=True)):
            x = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            y = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + getattr(self, f"lin{i}").model((x - y) ** 2).mean(dim=(1, 2, 3))
        return total


def load_lpips(path: str | Path) -> LPIPS:
    """LPIPS from a local weights file (.pth/.pt via weights-only torch.load, or .safetensors)."""
    from engines.official import CheckpointError, check_file, torch_load_weights

    path = Path(path)
    check_file(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch_load_weights(path)
    if not isinstance(state, dict):
        raise CheckpointError(path, "not an LPIPS state dict")
    model = LPIPS()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(path, f"not LPIPS (vgg) weights: {str(err).splitlines()[0]}") from err
    return model.eval()
