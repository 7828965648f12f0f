"""The one table of network families: for each kind a checkpoint can hold (stylegan2, fomm, e4e, dcgan), how its
modules are built from the config our files store, and its engine parts (the modules at the engine boundary,
with fixed named inputs and outputs), the first part being the default and ``exports`` the parts `recast export`
writes. `build_modules`, `engine_module` and the export command all read it; a new family is one row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from engines import dcgan, e4e, fomm, stylegan2

Modules = dict[str, nn.Module]


@dataclass(frozen=True)
class Family:
    kind: str
    build: Callable[[dict[str, Any]], Modules]  # config -> fresh modules by name
    parts: dict[str, Callable[[Any], nn.Module]]  # engine part -> its module, from a loaded Checkpoint
    exports: tuple[str, ...]  # the parts `recast export` writes (one file, or one each in a folder)


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
    ),
    "fomm": Family(
        "fomm",
        _fomm_modules,
        {"animator": lambda ckpt: fomm.AnimatorEngine(ckpt.modules["generator"],
                                                      int(ckpt.config["common_params"]["num_kp"]), _fomm_size(ckpt)),
         "keypoints": lambda ckpt: fomm.KeypointEngine(ckpt.modules["kp_detector"], _fomm_size(ckpt))},
        ("keypoints", "animator"),
    ),
    "e4e": Family(
        "e4e",
        lambda config: {"encoder": e4e.Encoder4Editing(config["num_layers"], config["mode"], config["stylegan_size"])},
        {"encoder": lambda ckpt: e4e.E4EEngine(ckpt.modules["encoder"], ckpt.tensors["latent_avg"])},
        ("encoder",),
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
