"""Small models for the engine tests: the reference-vector configs with their weights, and folders of that form."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines import e4e, fomm, stylegan2
from engines.parity import e4e_formula_state, formula_tensor

# ../shared beside the project, or $RECAST_SHARED (as in conftest.py)
SHARED = Path(os.environ.get("RECAST_SHARED", Path(__file__).resolve().parents[2] / "shared"))
VECTORS = SHARED / "reference" / "vectors"
DIRECTIONS = VECTORS.parent / "directions"


def npz_state(path: Path) -> dict[str, torch.Tensor]:
    with np.load(path, allow_pickle=False) as data:
        return {k: torch.from_numpy(data[k]) for k in data.files}


def small_stylegan() -> tuple[stylegan2.Generator, dict[str, Any]]:
    config = json.loads((VECTORS / "stylegan2_small" / "config.json").read_text())
    G = stylegan2.Generator(**config["init_kwargs"]).eval()
    G.load_state_dict(npz_state(VECTORS / "stylegan2_small" / "weights.npz"))
    return G, config["init_kwargs"]


def small_fomm() -> tuple[fomm.KPDetector, fomm.OcclusionAwareGenerator, dict[str, Any]]:
    config = json.loads((VECTORS / "fomm_small" / "config.json").read_text())
    common = config["common_params"]
    detector = fomm.KPDetector(**config["kp_detector_params"], **common).eval()
    generator = fomm.OcclusionAwareGenerator(**config["generator_params"], **common).eval()
    detector.load_state_dict(npz_state(VECTORS / "fomm_small" / "kp_detector_weights.npz"))
    generator.load_state_dict(npz_state(VECTORS / "fomm_small" / "generator_weights.npz"))
    return detector, generator, config


def formula_e4e(stylegan_size: int = 16, salt: int = 0) -> tuple[e4e.Encoder4Editing, torch.Tensor]:
    """An e4e encoder with the e4e_small formula weights; a small stylegan_size keeps the style heads few."""
    encoder = e4e.Encoder4Editing(50, "ir_se", stylegan_size).eval()
    encoder.load_state_dict(e4e_formula_state(encoder, salt))
    latent_avg = torch.from_numpy((0.5 * formula_tensor("latent_avg", (encoder.style_count, 512), salt))
                                  .astype(np.float32))
    return encoder, latent_avg


def write_vector_folder(folder: Path, config: dict[str, Any], inputs: dict[str, np.ndarray],
                        expected: dict[str, np.ndarray], weights: dict[str, dict[str, torch.Tensor]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    (folder / "README.md").write_text("# Test vector made by the Recast test suite\n")
    np.savez(folder / "inputs.npz", **inputs)
    np.savez(folder / "expected.npz", **expected)
    for name, state in weights.items():
        np.savez(folder / name, **{k: v.numpy() for k, v in state.items()})
    return folder
