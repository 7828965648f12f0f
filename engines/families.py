"""The one table of network families: for each kind a checkpoint can hold (stylegan2, fomm, e4e, dcgan), how its
modules are built from the config our files store, how its official file is read (`open_checkpoint` picks the
loader by the file's suffix and the kind asked for), and its engine parts (the modules at the engine boundary,
with fixed named inputs and outputs), the first part being the default and ``exports`` the parts `recast export`
writes. `build_modules`, `open_checkpoint`, `engine_module` and the export command all read it; a new family is
one row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from engines import dcgan, e4e, fomm, official, stylegan2

Modules = dict[str, nn.Module]
TORCH_SUFFIXES = (".pth.tar", ".tar", ".pth", ".pt", ".ckpt")  # torch.save files (read without unpickling code)


@dataclass(frozen=True)
class Family:
    kind: str
    build: Callable[[dict[str, Any]], Modules]  # config -> fresh modules by name
    parts: dict[str, Callable[[Any], nn.Module]]  # engine part -> its module, from a loaded Checkpoint
    exports: tuple[str, ...]  # the parts `recast export` writes (one file, or one each in a folder)
    # the upstream file: its loader (path, config -> Checkpoint), the suffixes it may have when the caller asks
    # for this kind, and those that mean this kind when the caller names none (our own files are safetensors)
    load: Callable[[Path, dict[str, Any] | None], Any] | None = None
    suffixes: tuple[str, ...] = ()
    claims: tuple[str, ...] = ()


def _fomm_modules(config: dict[str, Any]) -> Modules:
    common = config["common_params"]
    return {"kp_detector": fomm.KPDetector(**config["kp_detector_params"], **common),
            "generator": fomm.OcclusionAwareGenerator(**config["generator_params"], **common)}


def _fomm_size(ckpt: Any) -> int:
    return int(ckpt.config.get("image_size", 256))


FAMILIES: dict[str, Family] = {
    "stylegan2": Family(
        "stylegan2",
        lambda config: {"generator": stylegan2.Generator(**config["init_kwargs"])},
        {"synthesis": lambda ckpt: stylegan2.SynthesisEngine(ckpt.modules["generator"]),
         "mapping": lambda ckpt: stylegan2.MappingEngine(ckpt.modules["generator"])},
        ("synthesis",),
        lambda path, _config: official.load_stylegan2_pkl(path), (".pkl",), (".pkl",),
    ),
    "fomm": Family(
        "fomm",
        _fomm_modules,
        {"animator": lambda ckpt: fomm.AnimatorEngine(ckpt.modules["generator"],
                                                      int(ckpt.config["common_params"]["num_kp"]), _fomm_size(ckpt)),
         "keypoints": lambda ckpt: fomm.KeypointEngine(ckpt.modules["kp_detector"], _fomm_size(ckpt))},
        ("keypoints", "animator"),
        official.load_fomm, TORCH_SUFFIXES, (".tar",),
    ),
    "e4e": Family(
        "e4e",
        lambda config: {"encoder": e4e.Encoder4Editing(config["num_layers"], config["mode"], config["stylegan_size"])},
        {"encoder": lambda ckpt: e4e.E4EEngine(ckpt.modules["encoder"], ckpt.tensors["latent_avg"])},
        ("encoder",),
        lambda path, _config: official.load_e4e(path), TORCH_SUFFIXES, (".pt", ".pth", ".ckpt"),
    ),
    "dcgan": Family(
        "dcgan",
        lambda config: {"generator": dcgan.Generator(**config["generator"])},
        {"generator": lambda ckpt: dcgan.GeneratorEngine(ckpt.modules["generator"])},
        ("generator",),
    ),
}


def family(kind: str) -> Family:
    try:
        return FAMILIES[kind]
    except KeyError:
        raise ValueError(f"unknown engine kind {kind!r} (one of {', '.join(FAMILIES)})") from None


def official_family(name: str, kind: str | None) -> Family | None:
    """The family whose upstream loader reads a file of this name: the asked kind's, if that kind's files may
    have the name's suffix; with no kind asked, the family the suffix means. None when no loader takes it."""
    name = name.lower()
    for f in FAMILIES.values():
        if f.load is None:
            continue
        if (kind == f.kind and name.endswith(f.suffixes)) or (kind is None and name.endswith(f.claims)):
            return f
    return None
