"""Safe loading of the official checkpoints into a Checkpoint.

A checkpoint is untrusted input. Nothing here executes code from a file:
- NVlabs `ffhq.pkl` is read by a restricted unpickler: the persistence wrapper becomes an inert record, tensors are
  rebuilt by PyTorch's own weights-only reader, and any other global in the pickle is refused
  (`../shared/reference/checkpoint-formats.md` 1.2).
- FOMM `vox-cpk.pth.tar` and e4e `e4e_ffhq_encode.pt` go through `torch.load(weights_only=True)`.
Every loader checks the file's size, reports its sha256 (so operators can pin it), rebuilds our module from the
architecture the file states and loads the weights with `strict=True`. Failures raise `CheckpointError`, whose
message names the file and the problem.
"""

from __future__ import annotations

import codecs
import collections
import functools
import io
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engines import e4e, fomm, stylegan2
from engines.cache import sha256_path
from engines.errors import InputError

log = logging.getLogger(__name__)
DEFAULT_MAX_BYTES = 8 << 30  # the official files are 0.1-1.2 GB; RECAST_MAX_CHECKPOINT_BYTES raises the limit
# Inflation bounds for torch's zip format (checked on the zip directory, before anything is read). torch.save stores
# its records uncompressed, so a real checkpoint inflates to its own size; a zip bomb declares far more.
MAX_RECORD_BYTES = 256 << 20  # per tensor: the largest of a supported architecture is 38 MB (FOMM vox-256's
#                               dense-motion hourglass), e4e's and StyleGAN2-1024's 9.4 MB
INFLATION_SLACK = 16 << 20  # a zip may inflate to twice its size on disk plus this much, in all
# FOMM config/vox-256.yaml (checkpoint-formats.md 2.2); the .pth.tar holds weights only.
VOX256_CONFIG: dict[str, Any] = {
    "image_size": 256,
    "common_params": {"num_kp": 10, "num_channels": 3, "estimate_jacobian": True},
    "kp_detector_params": {
        "temperature": 0.1,
        "block_expansion": 32,
        "max_features": 1024,
        "scale_factor": 0.25,
        "num_blocks": 5,
    },
    "generator_params": {
        "block_expansion": 64,
        "max_features": 512,
        "num_down_blocks": 2,
        "num_bottleneck_blocks": 6,
        "estimate_occlusion_map": True,
        "dense_motion_params": {"block_expansion": 64, "max_features": 1024, "num_blocks": 5, "scale_factor": 0.25},
    },
    "normalize_kp": {"use_relative_movement": True, "use_relative_jacobian": True, "adapt_movement_scale": False},
}
STYLEGAN2_CLASSES = frozenset(
    {
        "Generator",
        "MappingNetwork",
        "SynthesisNetwork",
        "SynthesisBlock",
        "SynthesisLayer",
        "ToRGBLayer",
        "FullyConnectedLayer",
        "Conv2dLayer",
        "Discriminator",
        "DiscriminatorBlock",
        "DiscriminatorEpilogue",
        "MinibatchStdLayer",
        "AugmentPipe",
    }
)


class CheckpointError(InputError):
    """A checkpoint that cannot be used; str() is '<file>: <problem>'."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = Path(path), problem


@dataclass
class Checkpoint:
    """A loaded network: its family, modules (eval mode, fp32, CPU), architecture config and the file's sha256."""

    kind: str  # stylegan2 | fomm | e4e | dcgan
    path: Path
    sha256: str
    config: dict[str, Any]
    modules: dict[str, nn.Module]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. e4e latent_avg
    notes: list[str] = field(default_factory=list)


def check_file(path: Path) -> str:
    """Existence and size checks; returns the sha256."""
    limit = int(os.environ.get("RECAST_MAX_CHECKPOINT_BYTES", DEFAULT_MAX_BYTES))
    try:
        size = path.stat().st_size
    except FileNotFoundError as err:
        raise CheckpointError(path, "no such file") from err
    if not path.is_file():
        raise CheckpointError(path, "not a regular file")
    if size == 0:
        raise CheckpointError(path, "empty file")
    if size > limit:
        raise CheckpointError(path, f"{size} bytes is over the {limit}-byte limit (RECAST_MAX_CHECKPOINT_BYTES)")
    digest = sha256_path(path)
    log.info("checkpoint %s sha256 %s", path, digest)
    return digest


def load_strict(module: nn.Module, state: dict[str, Any], path: Path, what: str) -> None:
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(path, f"{what}: entry {bad[0]!r} is a {type(state[bad[0]]).__name__}, not a tensor")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise CheckpointError(path, f"{what} does not match the architecture it states: {detail[:600]}") from err


class PersistentRecord:
    """Inert stand-in for an object pickled through `torch_utils.persistence`: class name and state, no code."""

    def __init__(self, meta: Any) -> None:
        if not isinstance(meta, dict):
            raise pickle.UnpicklingError("persistent object without a meta dict")
        self.type = meta.get("type")
        self.version = meta.get("version")
        self.class_name = str(meta.get("class_name"))
        state = meta.get("state")
        self.state: dict[str, Any] = state if isinstance(state, dict) else {}


class EasyDict(dict[str, Any]):
    """Data-only replacement for `dnnlib.util.EasyDict`."""


def _load_storage_bytes(path: Path, blob: Any) -> Any:
    if not isinstance(blob, bytes | bytearray):
        raise pickle.UnpicklingError("storage payload is not bytes")
    check_inflation(path, bytes(blob))  # each storage is a torch zip of its own: bound it before loading
    return torch.load(io.BytesIO(blob), weights_only=True)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError("numpy scalar of an object dtype")
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_reconstruct(cls: Any, shape: Any, typecode: Any) -> Any:
    if cls is not np.ndarray:
        raise pickle.UnpicklingError("numpy reconstruct of a class other than ndarray")
    if shape != (0,):  # ndarray.__reduce__ always starts from an empty array; the data comes with its state
        raise pickle.UnpicklingError(f"numpy reconstruct of shape {str(shape)[:40]} (an array is rebuilt empty)")
    return np.ndarray.__new__(np.ndarray, shape, typecode)


def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("unexpected codecs.encode call")
    return codecs.encode(text, encoding)


def _numpy_dtype(spec: Any, align: bool = False, copy: bool = False) -> Any:
    if not isinstance(spec, str):
        raise pickle.UnpicklingError("numpy dtype from a non-string spec")
    return np.dtype(spec, align, copy)


_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentRecord,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _codecs_encode,
}


class RefusedContent(pickle.UnpicklingError):
    """The pickle asks for something a network pickle never needs (a global, a persistent id)."""


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals an NVlabs network pickle uses; everything else is refused before it runs."""

    def __init__(self, file: Any, path: Path = Path("<pickle>")) -> None:
        super().__init__(file)
        self.path = path  # named in the errors of the checks its globals make

    def find_class(self, module: str, name: str) -> Any:
        try:
            found = _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedContent(f"refused global {module}.{name} (not part of a network pickle)") from None
        return functools.partial(found, self.path) if found is _load_storage_bytes else found

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedContent("persistent ids are not part of a network pickle")


UNREADABLE = (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
              RuntimeError, MemoryError)


def read_network_pickle(path: Path) -> Any:
    """Unpickle an NVlabs pickle into plain data and `PersistentRecord`s; nothing in the file is executed."""
    try:
        with path.open("rb") as f:
            return RestrictedUnpickler(f, path).load()
    except RefusedContent as err:
        raise CheckpointError(path, f"refused: {err}") from err
    except UNREADABLE as err:
        raise CheckpointError(path, f"not a readable network pickle (truncated or corrupt?): {err!r}"[:400]) from err


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def record_state_dict(record: PersistentRecord, path: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten a persistent module record into a state_dict: parameters, persistent buffers, then children."""
    if record.class_name not in STYLEGAN2_CLASSES:
        raise CheckpointError(path, f"unexpected class {record.class_name!r} in a StyleGAN2 pickle")
    state = record.state
    out: dict[str, torch.Tensor] = {}
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, tensor in (state.get(group) or {}).items():
            if tensor is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(tensor, torch.Tensor):
                raise CheckpointError(path, f"{prefix}{name} is a {type(tensor).__name__}, not a tensor")
            out[prefix + name] = tensor.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise CheckpointError(path, f"{prefix}{name} is a {type(child).__name__}, not a network module")
        out.update(record_state_dict(child, path, f"{prefix}{name}."))
    return out


def load_stylegan2_pkl(path: str | Path, key: str = "G_ema") -> Checkpoint:
    """Read `ffhq.pkl` (or any stylegan2-ada network pickle) safely and load `key` into our Generator."""
    path = Path(path)
    digest = check_file(path)
    data = read_network_pickle(path)
    if isinstance(data, tuple) and len(data) == 3:
        raise CheckpointError(path, "a TensorFlow-era pickle (3-tuple); convert it with stylegan2-ada legacy.py first")
    if not isinstance(data, dict) or not isinstance(data.get(key), PersistentRecord):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(path, f"no {key!r} network in the pickle (found {found})")
    record = data[key]
    if record.type != "class" or record.class_name != "Generator":
        raise CheckpointError(path, f"{key} is a {record.class_name!r}, not a StyleGAN2 Generator")
    if record.version != 6:
        log.warning("%s: persistence version %s (expected 6); reading it anyway", path, record.version)
    init_kwargs = _plain(record.state.get("_init_kwargs") or {})
    try:
        G = stylegan2.Generator(**init_kwargs)
    except (TypeError, ValueError) as err:
        raise CheckpointError(path, f"unsupported Generator arguments {init_kwargs}: {err}") from err
    load_strict(G, record_state_dict(record, path), path, key)
    G.float().eval()
    return Checkpoint("stylegan2", path, digest, {"init_kwargs": init_kwargs}, {"generator": G})


def check_inflation(path: Path, blob: bytes | None = None) -> None:
    """Refuse a torch zip (the file, or ``blob``: one embedded in a network pickle) whose records would inflate
    past the bounds (MAX_RECORD_BYTES per record, twice its size plus INFLATION_SLACK in all), reading only its
    directory. torch's reader allocates each record at its declared size and inflates into it, so the declared
    sizes bound the memory a load takes. The legacy (non-zip) format holds its storages as raw bytes: its size
    bounds it."""
    source: Any = io.BytesIO(blob) if blob is not None else path
    size = len(blob) if blob is not None else path.stat().st_size
    if not zipfile.is_zipfile(source):
        return
    try:
        with zipfile.ZipFile(source) as archive:
            records = [(info.filename, info.file_size) for info in archive.infolist()]
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(path, f"not a readable torch file (corrupt zip directory): {err}") from err
    name, biggest = max(records, key=lambda r: r[1], default=("", 0))
    if biggest > MAX_RECORD_BYTES:
        raise CheckpointError(path, f"record {name[:80]!r} declares {biggest} bytes, more than any tensor of a "
                              f"supported network ({MAX_RECORD_BYTES} bytes at most); refused before reading")
    total, allowed = sum(n for _, n in records), 2 * size + INFLATION_SLACK
    if total > allowed:
        raise CheckpointError(path, f"declares {total} bytes inflated from {size} on disk (at most {allowed}: "
                              "torch stores tensors uncompressed); refused before reading")


def torch_load_weights(path: Path) -> Any:
    """`torch.load(weights_only=True)` on the CPU, with errors that name the file; inflation is bounded first."""
    check_inflation(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        raise CheckpointError(path, f"refused by the weights-only loader: {first[:300]}") from err
    except (EOFError, RuntimeError, ValueError, zipfile.BadZipFile, OSError, KeyError, IndexError) as err:
        raise CheckpointError(path, f"not a readable torch file (truncated or corrupt?): {err!r}"[:400]) from err


def load_fomm(path: str | Path, config: dict[str, Any] | None = None) -> Checkpoint:
    """Read `vox-cpk.pth.tar`: the `kp_detector` and `generator` state_dicts, built from the vox-256 config."""
    path = Path(path)
    config = config or VOX256_CONFIG
    digest = check_file(path)
    data = torch_load_weights(path)
    if not isinstance(data, dict) or not {"kp_detector", "generator"} <= set(data):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(path, f"not a FOMM checkpoint: needs 'kp_detector' and 'generator' (found {found})")
    common = config["common_params"]
    try:
        detector = fomm.KPDetector(**config["kp_detector_params"], **common)
        generator = fomm.OcclusionAwareGenerator(**config["generator_params"], **common)
    except (TypeError, KeyError) as err:
        raise CheckpointError(path, f"bad FOMM config: {err}") from err
    for name, module in (("kp_detector", detector), ("generator", generator)):
        if not isinstance(data[name], dict):
            raise CheckpointError(path, f"{name} is a {type(data[name]).__name__}, not a state_dict")
        load_strict(module, dict(data[name]), path, name)
    notes = [f"epoch {data['epoch']}"] if "epoch" in data else []
    return Checkpoint(
        "fomm",
        path,
        digest,
        config,
        {"kp_detector": detector.eval(), "generator": generator.eval()},
        notes=notes,
    )


def load_e4e(path: str | Path) -> Checkpoint:
    """Read `e4e_ffhq_encode.pt`: the `encoder.*` half of the pSp state_dict, its opts and `latent_avg`."""
    path = Path(path)
    digest = check_file(path)
    data = torch_load_weights(path)
    if not isinstance(data, dict) or "state_dict" not in data:
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(path, f"not an e4e checkpoint: no 'state_dict' (found {found})")
    opts = data.get("opts") or {}
    if not isinstance(opts, dict):
        raise CheckpointError(path, "opts is not a dict")
    encoder_type = opts.get("encoder_type", "Encoder4Editing")
    if encoder_type != "Encoder4Editing":
        raise CheckpointError(path, f"encoder_type is {encoder_type!r}; only Encoder4Editing (e4e) is supported")
    size = int(opts.get("stylegan_size", 1024))
    state = data["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(path, "state_dict is not a dict")
    enc_state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    if not enc_state:
        raise CheckpointError(path, "state_dict has no 'encoder.*' entries")
    try:
        encoder = e4e.Encoder4Editing(50, "ir_se", size)
    except ValueError as err:
        raise CheckpointError(path, f"bad opts: {err}") from err
    load_strict(encoder, enc_state, path, "encoder")
    latent_avg = data.get("latent_avg")
    if not isinstance(latent_avg, torch.Tensor):
        raise CheckpointError(path, "no latent_avg tensor (the encoder was not trained with start_from_latent_avg)")
    if latent_avg.ndim == 1:
        latent_avg = latent_avg[None].repeat(encoder.style_count, 1)
    if list(latent_avg.shape) != [encoder.style_count, 512]:
        raise CheckpointError(path, f"latent_avg has shape {list(latent_avg.shape)}, not [{encoder.style_count},512]")
    config = {"num_layers": 50, "mode": "ir_se", "stylegan_size": size}
    skipped = sum(1 for k in state if k.startswith("decoder."))
    notes = [f"{skipped} decoder.* entries not used (Recast synthesises with the NVlabs generator)"]
    return Checkpoint(
        "e4e",
        path,
        digest,
        config,
        {"encoder": encoder.eval()},
        tensors={"latent_avg": latent_avg.float()},
        notes=notes,
    )
