"""Writers of the official checkpoint containers, for tests: files shaped and pickled the way the originals were.

- `write_network_pickle`: an NVlabs stylegan2-ada `network-snapshot.pkl`/`ffhq.pkl` - a plain pickle whose network
  objects reduce to `torch_utils.persistence._reconstruct_persistent_obj(meta)` with the module source, class name and
  `__dict__` state, tensors pickled by PyTorch itself (`torch.storage._load_from_bytes` of a legacy torch.save blob).
- `write_fomm_checkpoint`: FOMM `Logger.save_cpk` - `torch.save` of state_dicts plus optimizers and epoch, in the
  legacy (non-zip) stream of PyTorch 1.0.
- `write_e4e_checkpoint`: e4e `coach.__get_save_dict` - zip `torch.save` of the pSp state_dict, opts and latent_avg.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import sys
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

SHARED = Path(os.environ.get("RECAST_SHARED", Path(__file__).resolve().parents[2] / "shared"))  # as in conftest.py
MANIFESTS = SHARED / "reference" / "manifests"
FAKE_MODULE_SRC = "# training/networks.py would be here; a safe reader never executes it\nraise SystemExit(3)\n"


def manifest(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MANIFESTS / f"{name}.json").read_text())
    return data


def _persistence_module() -> types.ModuleType:
    """Register stand-ins for `torch_utils.persistence` and `dnnlib.util` so pickle writes their global names."""
    if "torch_utils.persistence" in sys.modules:
        return sys.modules["torch_utils.persistence"]
    pkg = types.ModuleType("torch_utils")
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta: dict[str, Any]) -> Any:  # never called by our reader
        raise AssertionError("a safe reader must not call the upstream reconstructor")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj  # type: ignore[attr-defined]
    pkg.persistence = persistence  # type: ignore[attr-defined]
    dnnlib = types.ModuleType("dnnlib")
    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):  # type: ignore[type-arg]
        pass

    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    util.EasyDict = EasyDict  # type: ignore[attr-defined]
    dnnlib.util = util  # type: ignore[attr-defined]
    sys.modules.update({"torch_utils": pkg, "torch_utils.persistence": persistence, "dnnlib": dnnlib,
                        "dnnlib.util": util})
    return persistence


class _Persistent:
    """Pickles as upstream persistent classes do: `(_reconstruct_persistent_obj, (meta,), None)`."""

    def __init__(self, class_name: str, state: dict[str, Any]) -> None:
        self.meta = {"type": "class", "version": 6, "module_src": FAKE_MODULE_SRC, "class_name": class_name,
                     "state": state}

    def __reduce__(self) -> Any:
        return (_persistence_module()._reconstruct_persistent_obj, (self.meta,), None)


def _easy(d: dict[str, Any]) -> Any:
    easy = sys.modules["dnnlib.util"].EasyDict  # type: ignore[attr-defined]
    return easy({k: _easy(v) if isinstance(v, dict) else v for k, v in d.items()})


def persistent_from_module(module: nn.Module, init_kwargs: dict[str, Any] | None = None) -> _Persistent:
    """A module's `__dict__` as upstream pickles it: parameters, buffers, hooks, children, plain attributes."""
    _persistence_module()
    state: dict[str, Any] = {"training": module.training}
    state["_parameters"] = collections.OrderedDict((k, v) for k, v in module._parameters.items())
    state["_buffers"] = collections.OrderedDict((k, v) for k, v in module._buffers.items())
    state["_non_persistent_buffers_set"] = set()
    for hooks in ("_backward_hooks", "_forward_hooks", "_forward_pre_hooks", "_state_dict_hooks",
                  "_load_state_dict_pre_hooks"):
        state[hooks] = collections.OrderedDict()
    state["_modules"] = collections.OrderedDict(
        (k, persistent_from_module(v) if v is not None else None) for k, v in module._modules.items()
    )
    for key, value in vars(module).items():
        if not key.startswith("_") and isinstance(value, int | float | str | bool | type(None)):
            state[key] = value
    state["_init_args"] = ()
    state["_init_kwargs"] = _easy(init_kwargs or {})
    return _Persistent(type(module).__name__, state)


def persistent_from_keys(class_name: str, tensors: dict[str, torch.Tensor]) -> _Persistent:
    """A persistent module tree from flat state_dict keys (for networks we have no class for, like D)."""
    _persistence_module()
    params: dict[str, torch.Tensor] = {}
    children: dict[str, dict[str, torch.Tensor]] = collections.OrderedDict()
    for key, value in tensors.items():
        head, _, rest = key.partition(".")
        if rest:
            children.setdefault(head, {})[rest] = value
        else:
            params[head] = value
    state = {
        "training": False,
        "_parameters": collections.OrderedDict((k, nn.Parameter(v, requires_grad=False)) for k, v in params.items()),
        "_buffers": collections.OrderedDict(),
        "_modules": collections.OrderedDict((k, persistent_from_keys("Conv2dLayer", v)) for k, v in children.items()),
        "_init_args": (),
        "_init_kwargs": _easy({}),
    }
    return _Persistent(class_name, state)


def random_tensors(shapes: dict[str, list[int]], dtypes: dict[str, str] | None = None, seed: int = 0
                   ) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        if (dtypes or {}).get(key) == "int64":
            out[key] = torch.zeros(shape, dtype=torch.int64)
        else:
            out[key] = torch.randn(shape, generator=gen)
    return out


def write_network_pickle(path: Path, G: nn.Module, init_kwargs: dict[str, Any], with_d: bool = True,
                         protocol: int = 4) -> Path:
    """Write `{'G', 'D', 'G_ema', 'training_set_kwargs', 'augment_pipe'}` as stylegan2-ada does."""
    _persistence_module()
    data: dict[str, Any] = {
        "G": persistent_from_module(G, init_kwargs),
        "G_ema": persistent_from_module(G, init_kwargs),
        "training_set_kwargs": None,
        "augment_pipe": None,
    }
    if with_d:
        d = manifest("stylegan2_ada_ffhq1024_D")
        data["D"] = persistent_from_keys("Discriminator", random_tensors(d["tensors"], seed=1))
    with path.open("wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return path


def write_fomm_checkpoint(path: Path, kp_detector: dict[str, torch.Tensor], generator: dict[str, torch.Tensor],
                          legacy: bool = True) -> Path:
    disc = manifest("fomm_vox256_discriminator")
    first = next(iter(generator.values()))
    adam_group = {"lr": 2e-4, "betas": (0.5, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False,
                  "params": list(range(len(generator)))}
    optimizer = {"state": {0: {"step": 10, "exp_avg": torch.zeros_like(first), "exp_avg_sq": torch.zeros_like(first)}},
                 "param_groups": [adam_group]}
    data = {
        "generator": collections.OrderedDict(generator),
        "kp_detector": collections.OrderedDict(kp_detector),
        "discriminator": collections.OrderedDict(random_tensors(disc["tensors"], disc.get("dtypes"), seed=2)),
        "optimizer_generator": optimizer,
        "optimizer_discriminator": optimizer,
        "optimizer_kp_detector": optimizer,
        "epoch": 99,
    }
    torch.save(data, path, _use_new_zipfile_serialization=not legacy)
    return path


def write_e4e_checkpoint(path: Path, encoder: dict[str, torch.Tensor], latent_avg: torch.Tensor,
                         stylegan_size: int = 1024, decoder: dict[str, torch.Tensor] | None = None,
                         encoder_type: str = "Encoder4Editing") -> Path:
    state = collections.OrderedDict((f"encoder.{k}", v) for k, v in encoder.items())
    for k, v in (decoder or {}).items():
        state[f"decoder.{k}"] = v
    opts = {"encoder_type": encoder_type, "stylegan_size": stylegan_size, "start_from_latent_avg": True,
            "dataset_type": "ffhq_encode", "checkpoint_path": None, "lpips_lambda": 0.8, "batch_size": 8}
    torch.save({"state_dict": state, "opts": opts, "latent_avg": latent_avg}, path)
    return path
