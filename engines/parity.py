"""`recast parity DIR`: rebuild a model from a reference-vector folder and compare every expected array.

A folder holds `config.json`, `inputs.npz`, `expected.npz`, weights (`weights.npz`, `<model>_weights.npz`, or a
formula described in the README, as for e4e) and a README describing how each array was made. The family is read
from the config (`init_kwargs` -> StyleGAN2, `common_params` -> FOMM, `stylegan_size` -> e4e). Every array in
`expected.npz` must have a recipe here; one without is reported and fails the run.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engines import e4e, fomm, stylegan2
from engines.errors import InputError


class ParityError(InputError):
    """The folder is not a reference-vector folder this tool can read (names the file and the problem)."""


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float = 0.0

    def __str__(self) -> str:
        return f"atol {self.atol:g}" + (f" rtol {self.rtol:g}" if self.rtol else "")


@dataclass
class ArrayCheck:
    name: str
    max_abs_err: float
    tolerance: Tolerance
    passed: bool
    note: str = ""


@dataclass
class ParityReport:
    folder: Path
    family: str
    checks: list[ArrayCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def format(self) -> str:
        lines = [f"{self.folder}: {self.family}"]
        width = max((len(c.name) for c in self.checks), default=10)
        for c in self.checks:
            status = "ok  " if c.passed else "FAIL"
            err = f"{c.max_abs_err:.3e}" if math.isfinite(c.max_abs_err) else "  -      "
            note = f"  {c.note}" if c.note else ""
            lines.append(f"  {status} {c.name:<{width}}  max abs err {err}  ({c.tolerance}){note}")
        passed = sum(c.passed for c in self.checks)
        lines.append(f"{passed}/{len(self.checks)} arrays within tolerance")
        return "\n".join(lines)


# The tolerances the shared READMEs suggest, per family; the first pattern that matches an array name wins.
# A folder may override them with a "tolerances" object in config.json: {"name or regex": atol | [atol, rtol]}.
TOLERANCES: dict[str, list[tuple[str, Tolerance]]] = {
    "stylegan2": [(r"^ws", Tolerance(1e-5)), (r".*", Tolerance(1e-4, 1e-4))],
    "fomm": [(r"(^|_)(sparse_)?deformed$", Tolerance(2e-4)), (r".*", Tolerance(1e-4))],
    "e4e": [(r"^(codes|w_plus|latent_avg)$", Tolerance(1e-5)), (r".*", Tolerance(1e-4))],
}


def _tolerance(family: str, name: str, overrides: dict[str, Any]) -> Tolerance:
    for pattern, value in overrides.items():
        if pattern == name or re.fullmatch(pattern, name):
            return Tolerance(*value) if isinstance(value, list) else Tolerance(float(value))
    for pattern, tol in TOLERANCES[family]:
        if re.search(pattern, name):
            return tol
    return Tolerance(1e-4)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError as err:
        raise ParityError(f"{path}: missing") from err
    except (ValueError, OSError) as err:
        raise ParityError(f"{path}: not a plain numpy archive ({err})") from err


def _load_weights(module: nn.Module, path: Path) -> None:
    arrays = _load_npz(path)
    try:
        module.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()}, strict=True)
    except RuntimeError as err:
        raise ParityError(f"{path}: weights do not fit the model built from config.json: {err}") from err


def detect_family(config: dict[str, Any], readme: str) -> str:
    if "init_kwargs" in config:
        return "stylegan2"
    if "common_params" in config or "kp_detector_params" in config:
        return "fomm"
    if "stylegan_size" in config or "style_count" in config:
        return "e4e"
    upstream = readme.split("Upstream:", 1)[-1][:400]
    for needle, family in (("Encoder4Editing", "e4e"), ("KPDetector", "fomm"), ("networks.py:Generator", "stylegan2")):
        if needle in upstream:
            return family
    raise ParityError("config.json: cannot tell the architecture (no init_kwargs, common_params or stylegan_size)")


# --- StyleGAN2 -------------------------------------------------------------------------------------------------


def _stylegan2_outputs(folder: Path, config: dict[str, Any], names: list[str], device: str
                       ) -> dict[str, torch.Tensor]:
    G = stylegan2.Generator(**config["init_kwargs"]).eval()
    _load_weights(G, folder / "weights.npz")
    G.to(device)
    inputs = _load_npz(folder / "inputs.npz")
    z = torch.from_numpy(inputs["z"]).to(device)
    c = torch.from_numpy(inputs["c"]).to(device) if "c" in inputs and inputs["c"].size else None
    trunc = config.get("truncation") or {}
    psi, cutoff = float(trunc.get("psi", 1)), trunc.get("cutoff")
    ws = G.mapping(z, c, truncation_psi=1)
    recipes: dict[str, Callable[[], torch.Tensor]] = {
        "ws": lambda: ws,
        "img_const": lambda: G.synthesis(ws, noise_mode="const"),
        "img_none": lambda: G.synthesis(ws, noise_mode="none"),
        "img_const_unfused": lambda: G.synthesis(ws, noise_mode="const", fused_modconv=False),
        "ws_trunc": lambda: G.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff),
        "img_trunc": lambda: G.synthesis(
            G.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff), noise_mode="const"
        ),
        "img_forward": lambda: G(z, c, noise_mode="const"),
    }
    out: dict[str, torch.Tensor] = {}
    block_names = [n for n in names if re.fullmatch(r"b\d+_(x|img)", n)]
    if block_names:  # the block chain, up to the highest block asked for
        top = max(int(n[1:].split("_")[0]) for n in block_names)
        x: torch.Tensor | None = None
        img: torch.Tensor | None = None
        w_idx = 0
        for res in G.synthesis.block_resolutions:
            if res > top:
                break
            block = getattr(G.synthesis, f"b{res}")
            x, img = block(x, img, ws[:, w_idx : w_idx + block.num_conv + block.num_torgb], noise_mode="const")
            w_idx += block.num_conv
            out[f"b{res}_x"] = x
            if img is not None:
                out[f"b{res}_img"] = img
    for name in names:
        if name in recipes:
            out[name] = recipes[name]()
    return out


# --- FOMM ------------------------------------------------------------------------------------------------------


def _fomm_outputs(folder: Path, config: dict[str, Any], names: list[str], device: str) -> dict[str, torch.Tensor]:
    common = config["common_params"]
    detector = fomm.KPDetector(**config["kp_detector_params"], **common).eval()
    generator = fomm.OcclusionAwareGenerator(**config["generator_params"], **common).eval()
    _load_weights(detector, folder / "kp_detector_weights.npz")
    _load_weights(generator, folder / "generator_weights.npz")
    detector.to(device)
    generator.to(device)
    inputs = {k: torch.from_numpy(v).to(device) for k, v in _load_npz(folder / "inputs.npz").items()}
    out: dict[str, torch.Tensor] = {}
    kps = {name: detector(image) for name, image in inputs.items()}
    for name, kp in kps.items():
        for part, value in kp.items():
            out[f"kp_{name}_{part}"] = value
    if not {"source", "driving"} <= kps.keys():
        return out
    norm = config.get("normalize_kp", {})
    kp_norm = fomm.normalize_kp(kps["source"], kps["driving"], kps.get("driving_initial", kps["driving"]), **norm)
    for part, value in kp_norm.items():
        out[f"kp_norm_{part}"] = value
    source = inputs["source"]
    for prefix, align in (("", False), ("ac_true_", True)):
        if prefix and not any(n.startswith(prefix) for n in names):
            continue
        generator.align_corners = align
        if generator.dense_motion_network is not None:
            generator.dense_motion_network.align_corners = align
        result = generator(source, kp_driving=kp_norm, kp_source=kps["source"])
        for key, value in result.items():
            out[prefix + key] = value
        if not prefix:
            out["prediction_absolute"] = generator(source, kp_driving=kps["driving"], kp_source=kps["source"])[
                "prediction"
            ]
    generator.align_corners = False
    return out


# --- e4e -------------------------------------------------------------------------------------------------------

GOLDEN = 0.7548776662466927


def formula_tensor(key: str, shape: tuple[int, ...], salt: int = 0, amplitude: float = 1.0) -> np.ndarray:
    """`base` of the e4e_small README: sin(arange(n) * 0.7548776662466927 + phase(crc32(key)))."""
    phase = ((zlib.crc32(key.encode("utf-8")) + salt) % 10007) / 10007 * 2 * math.pi
    n = int(np.prod(shape)) if shape else 1
    return (amplitude * np.sin(np.arange(n, dtype=np.float64) * GOLDEN + phase)).reshape(shape)


def e4e_formula_state(encoder: e4e.Encoder4Editing, salt: int = 0) -> dict[str, torch.Tensor]:
    """The e4e_small weights, rebuilt from the formula in its README (the file would be ~1 GB)."""
    state = encoder.state_dict()
    norm_modules = {k.rsplit(".", 1)[0] for k in state if k.endswith("running_mean")}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        shape = tuple(tensor.shape)
        module, leaf = key.rsplit(".", 1)
        if leaf == "num_batches_tracked":
            out[key] = torch.zeros_like(tensor)
            continue
        base = formula_tensor(key, shape, salt)
        if leaf == "running_mean":
            value = 0.1 * base
        elif leaf == "running_var":
            value = 1 + 0.125 * (base + 1)
        elif tensor.ndim == 1 and module in norm_modules:
            value = 1 + 0.1 * base if leaf == "weight" else 0.1 * base
        elif tensor.ndim == 1 and leaf == "weight":
            value = 0.25 + 0.05 * base
        elif leaf == "bias":
            value = 0.1 * base
        elif ".linear.weight" in key:
            value = math.sqrt(2) * base
        else:
            value = base * math.sqrt(2 / int(np.prod(shape[1:])))
        out[key] = torch.from_numpy(value.astype(np.float32))
    return out


def _e4e_outputs(folder: Path, config: dict[str, Any], names: list[str], device: str) -> dict[str, torch.Tensor]:
    size = int(config.get("stylegan_size", 1024))
    encoder = e4e.Encoder4Editing(int(config.get("num_layers", 50)), config.get("mode", "ir_se"), size).eval()
    if "style_count" in config and int(config["style_count"]) != encoder.style_count:
        raise ParityError(f"config.json: style_count {config['style_count']} does not match stylegan_size {size}")
    salt = int(config.get("phase_salt", 0))
    weights = folder / "weights.npz"
    if weights.exists():
        _load_weights(encoder, weights)
    else:
        encoder.load_state_dict(e4e_formula_state(encoder, salt), strict=True)
    latent_avg = torch.from_numpy(
        (0.5 * formula_tensor("latent_avg", (encoder.style_count, 512), salt)).astype(np.float32)
    )
    encoder.to(device)
    x = torch.from_numpy(_load_npz(folder / "inputs.npz")["x"]).to(device)
    out: dict[str, torch.Tensor] = {"latent_avg": latent_avg}
    if {"codes", "w_plus"} & set(names):
        out["codes"] = encoder(x)
        out["w_plus"] = out["codes"] + latent_avg.to(device)
    taps = [n for n in names if re.fullmatch(r"c[123](_sample\d+)?", n)]
    for name in taps:
        index = int(name[1])
        sample = int(name.split("_sample")[1]) if "_sample" in name else None
        feats = encoder.backbone(x if sample is None else x[sample : sample + 1])
        out[name] = feats[index - 1]
    return out


FAMILIES: dict[str, Callable[[Path, dict[str, Any], list[str], str], dict[str, torch.Tensor]]] = {
    "stylegan2": _stylegan2_outputs,
    "fomm": _fomm_outputs,
    "e4e": _e4e_outputs,
}


def run_parity(folder: str | Path, device: str = "cpu") -> ParityReport:
    """Run every case of a reference-vector folder at fp32 and compare with its expected arrays.

    On CUDA, TF32 is switched off for the run (it would trade ~1e-3 of precision for speed)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ParityError(f"{folder}: not a folder")
    try:
        config = json.loads((folder / "config.json").read_text())
    except FileNotFoundError as err:
        raise ParityError(f"{folder / 'config.json'}: missing") from err
    except (ValueError, RecursionError) as err:  # RecursionError: JSON nested too deep
        raise ParityError(f"{folder / 'config.json'}: not JSON ({str(err)[:200]})") from None
    readme_path = folder / "README.md"
    readme = readme_path.read_text() if readme_path.exists() else ""
    family = detect_family(config, readme)
    expected = _load_npz(folder / "expected.npz")
    names = sorted(expected)
    overrides = config.get("tolerances", {})
    torch.manual_seed(0)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            outputs = FAMILIES[family](folder, config, names, device)
    except (TypeError, KeyError, ValueError) as err:
        raise ParityError(f"{folder / 'config.json'}: cannot build the {family} model: {err}") from err
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    report = ParityReport(folder, family if device == "cpu" else f"{family} on {device}")
    for name in names:
        tol = _tolerance(family, name, overrides)
        want = expected[name]
        got = outputs.get(name)
        if got is None:
            report.checks.append(ArrayCheck(name, math.inf, tol, False, "no recipe for this array"))
            continue
        have = got.detach().cpu().numpy()
        if have.shape != want.shape:
            report.checks.append(ArrayCheck(name, math.inf, tol, False, f"shape {have.shape} != {want.shape}"))
            continue
        diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
        ok = bool(np.all(diff <= tol.atol + tol.rtol * np.abs(want.astype(np.float64))))
        report.checks.append(ArrayCheck(name, float(diff.max()) if diff.size else 0.0, tol, ok))
    return report
