"""Small, untrained StyleGAN models for the bake's tests and benchmark, built in memory (no weights are fetched):
a 64 px StyleGAN2 synthesis with 512-wide W (10 styles) and an e4e IR-SE-50 encoder for those 10 styles. They
exercise every stage of a bake at a size this CPU bakes in seconds; real bakes use the operator's FFHQ checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch

from engines.checkpoints import build_modules
from engines.official import Checkpoint

SMALL_GENERATOR = {"init_kwargs": {"z_dim": 512, "c_dim": 0, "w_dim": 512, "img_resolution": 64, "img_channels": 3,
                                   "mapping_kwargs": {"num_layers": 2},
                                   "synthesis_kwargs": {"channel_base": 2048, "channel_max": 64, "num_fp16_res": 0,
                                                        "conv_clamp": None}}}
SMALL_ENCODER = {"num_layers": 50, "mode": "ir_se", "stylegan_size": 64}
SMALL_ENCODER_SIZE = 64  # the encoder reads 64 px crops


def small_models(seed: int = 0) -> tuple[Checkpoint, Checkpoint]:
    """(generator, encoder), seeded; their sha256 fields are fixed placeholders, so cache keys repeat."""
    torch.manual_seed(seed)
    generator = build_modules("stylegan2", SMALL_GENERATOR)["generator"].eval()
    encoder = build_modules("e4e", SMALL_ENCODER)["encoder"].eval()
    return (Checkpoint("stylegan2", Path("small-generator"), "0" * 64, SMALL_GENERATOR, {"generator": generator}),
            Checkpoint("e4e", Path("small-encoder"), "1" * 64, SMALL_ENCODER, {"encoder": encoder},
                       tensors={"latent_avg": torch.randn(512) * 0.5}))
