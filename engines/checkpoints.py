"""Any checkpoint opened by what it is: the official files (engines/official.py) by their family, and our own
safetensors format (the architecture's config and the weights, no pickle), written and read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engines import stylegan2
from engines.families import family, official_family
from engines.official import Checkpoint, CheckpointError, check_file, load_strict

SAFETENSORS_FORMAT = "recast-engine-1"


def build_modules(kind: str, config: dict[str, Any]) -> dict[str, nn.Module]:
    """Fresh modules of a family from the config our files store (engines/families.py)."""
    return family(kind).build(config)


def save_safetensors(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write modules and extra tensors as `<module>.<key>`; kind, config and source sha256 go in the header."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in ckpt.modules.items():
        for key, value in module.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().contiguous().cpu()
    for key, value in ckpt.tensors.items():
        tensors[f"tensor.{key}"] = value.detach().contiguous().cpu()
    metadata = {
        "format": SAFETENSORS_FORMAT,
        "kind": ckpt.kind,
        "config": json.dumps(ckpt.config),
        "source_sha256": ckpt.sha256,
        "source_name": ckpt.path.name,
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def load_safetensors(path: str | Path) -> Checkpoint:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    digest = check_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(path, f"not a readable safetensors file: {err}") from err
    if metadata.get("format") != SAFETENSORS_FORMAT:
        raise CheckpointError(path, f"not a Recast engine file (format {metadata.get('format')!r})")
    kind = metadata.get("kind", "")
    try:
        config = json.loads(metadata.get("config", ""))
        modules = build_modules(kind, config)
    except (ValueError, TypeError, KeyError, RecursionError) as err:
        raise CheckpointError(path, f"bad architecture header ({kind}): {err}") from err
    for name, module in modules.items():
        state = {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(name + ".")}
        load_strict(module, state, path, name)
        module.eval()
    extra = {k[len("tensor.") :]: v for k, v in tensors.items() if k.startswith("tensor.")}
    notes = [f"converted from {metadata.get('source_name')} sha256 {metadata.get('source_sha256')}"]
    return Checkpoint(kind, path, digest, config, modules, tensors=extra, notes=notes)


def looks_like_safetensors(path: Path) -> bool:
    """A safetensors file starts with a little-endian u64 header length and a JSON object."""
    try:
        with path.open("rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 100_000_000


def open_checkpoint(path: str | Path, kind: str | None = None, config: dict[str, Any] | None = None) -> Checkpoint:
    """Load any supported file; `kind` says what the caller needs and is checked against what the file holds."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".safetensors") or looks_like_safetensors(path):
        ckpt = load_safetensors(path)
    else:
        found = official_family(name, kind)
        if found is None:
            owner = official_family(name, None)
            if owner is None:
                raise CheckpointError(path, "unknown checkpoint suffix (.pkl, .pth.tar, .pt or .safetensors)")
            raise CheckpointError(path, f"a {path.suffix} file is read as {owner.kind} here and cannot hold {kind}")
        assert found.load is not None
        ckpt = found.load(path, config)
    if kind is not None and ckpt.kind != kind:
        raise CheckpointError(path, f"holds a {ckpt.kind} network, not {kind}")
    return ckpt


def generator_of(ckpt: Checkpoint) -> stylegan2.Generator:
    """The StyleGAN2 generator module of a checkpoint; CheckpointError when it holds none."""
    generator = ckpt.modules.get("generator")
    if not isinstance(generator, stylegan2.Generator):
        raise CheckpointError(ckpt.path, "holds no StyleGAN2 generator")
    return generator
