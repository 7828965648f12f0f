"""Pictures between numpy and torch, converted in one place.

Two shapes, named in every signature here:

- ``HWC uint8``: numpy, RGB, ``[h,w,3]`` or a batch ``[n,h,w,3]``; what decoding, cropping and pasting use.
- ``NCHW float``: torch, ``[n,3,h,w]`` in a value range, the networks' input and output:
  ``"signed"`` is [-1,1] (StyleGAN2, e4e, DCGAN), ``"unit"`` is [0,1] (FOMM).

Back to uint8 the value is rounded to the nearest level. `nvlabs=True` instead reproduces stylegan2-ada's
`generate.py` (``x * 127.5 + 128``, then truncation), so that `recast generate` writes the same PNGs as upstream.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import torch

Range = Literal["signed", "unit"]


def to_tensor(images: np.ndarray, value_range: Range = "signed", size: int | None = None,
              device: str | torch.device = "cpu") -> torch.Tensor:
    """HWC uint8 ([h,w,3] or [n,h,w,3]) -> NCHW float [n,3,size,size] in `value_range`. A picture that is not
    `size` is resized with area averaging first (the crops are always downscaled)."""
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected [n,h,w,3] uint8 pictures, got shape {images.shape}")
    if size is not None and images.shape[1:3] != (size, size):
        images = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])
    tensor = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float()
    return tensor.div(127.5).sub(1.0) if value_range == "signed" else tensor.div(255.0)


def to_uint8(images: torch.Tensor, value_range: Range = "signed", nvlabs: bool = False) -> np.ndarray:
    """NCHW float [n,c,h,w] in `value_range` -> HWC uint8 [n,h,w,c] (a fresh, writable array)."""
    if images.ndim != 4:
        raise ValueError(f"expected [n,c,h,w] pictures, got shape {tuple(images.shape)}")
    images = images.detach()
    if nvlabs:
        if value_range != "signed":
            raise ValueError("the NVlabs conversion is for [-1,1] pictures")
        pixels = (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    else:
        low = -1.0 if value_range == "signed" else 0.0
        pixels = ((images.clamp(low, 1.0) - low) * (255.0 / (1.0 - low))).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy().copy()
