"""One Engine surface over PyTorch, ONNX Runtime and TensorRT.

`open_engine(path_or_module, device)` picks the runtime from `FORMATS` (the single table of formats, suffixes and
capabilities) and returns an `Engine`: named input and output specs, `__call__` on numpy arrays returning a dict of
float32 numpy arrays, and `warmup`. Pre- and post-processing live in the callers (recasters, tools), never here.
ONNX Runtime and TensorRT are imported lazily; TensorRT exists only on GPU machines (see docker/).
"""

from __future__ import annotations

import json
import logging
import math
import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engines.errors import InputError
from engines.formats import FORMATS, RuntimeFormat
from engines.graphs import Graphed

log = logging.getLogger(__name__)


class EngineError(InputError):
    """An engine that cannot be opened or run here; the message names the file or module and the reason."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # a str is a dynamic axis ("batch")
    dtype: str = "float32"

    def __str__(self) -> str:
        return f"{self.name}[{','.join(map(str, self.shape))}]:{self.dtype}"


# ONNX Runtime execution providers, best first, and the device each needs.
ORT_PROVIDERS: tuple[tuple[str, str], ...] = (
    ("TensorrtExecutionProvider", "cuda"),
    ("CUDAExecutionProvider", "cuda"),
    ("CPUExecutionProvider", "cpu"),
)


def format_for(path: str | Path) -> RuntimeFormat:
    name = str(path).lower()
    for fmt in FORMATS.values():
        if name.endswith(fmt.suffixes):
            return fmt
    known = ", ".join(s for f in FORMATS.values() for s in f.suffixes)
    raise EngineError(f"{path}: unknown engine suffix (known: {known})")


def _as_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


class Engine(ABC):
    """The common surface: specs, a call on named arrays, warmup."""

    runtime: str = ""
    device: str = "cpu"
    precision: str = "fp32"

    def __init__(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], name: str) -> None:
        self.inputs, self.outputs, self.name = list(inputs), list(outputs), name
        self.metadata: dict[str, str] = {}

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    def _feeds(self, args: Sequence[Any], feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if args and feeds:
            raise EngineError(f"{self.name}: pass inputs by position or by name, not both")
        named = dict(zip(self.input_names, args, strict=False)) if args else dict(feeds)
        if set(named) != set(self.input_names):
            raise EngineError(f"{self.name}: inputs {sorted(named)} != expected {self.input_names}")
        out = {}
        for spec in self.inputs:
            array = _as_numpy(named[spec.name]).astype(np.float32, copy=False)
            dims = list(spec.shape)
            fits = array.ndim == len(dims) and all(
                not isinstance(d, int) or d == a for d, a in zip(dims, array.shape, strict=True)
            )
            if not fits:
                raise EngineError(f"{self.name}: input {spec.name} has shape {list(array.shape)}, expected {spec}")
            out[spec.name] = np.ascontiguousarray(array)
        return out

    def __call__(self, *args: Any, **feeds: Any) -> dict[str, np.ndarray]:
        return self.run(self._feeds(args, feeds))

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs already checked (float32, C-contiguous); returns float32 outputs by name."""

    def run_device(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Inputs as tensors, outputs as tensors on the inputs' device. Runtimes that work on that device
        (TorchEngine, TensorRTEngine) keep the data there; the others go through host arrays."""
        device = next(iter(feeds.values())).device if feeds else torch.device("cpu")
        out = self.run({k: _as_numpy(v).astype(np.float32, copy=False) for k, v in feeds.items()})
        return {k: torch.from_numpy(v).to(device) for k, v in out.items()}

    def example_feeds(self, batch: int = 1) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(0)
        return {
            s.name: rng.standard_normal([batch if isinstance(d, str) else d for d in s.shape]).astype(np.float32)
            for s in self.inputs
        }

    def warmup(self, runs: int = 2, batch: int = 1) -> float:
        """Run the engine on example inputs; returns the seconds the last run took."""
        feeds = self.example_feeds(batch)
        elapsed = 0.0
        for _ in range(max(runs, 1)):
            start = time.perf_counter()
            self.run(feeds)
            elapsed = time.perf_counter() - start
        return elapsed

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release what the runtime holds."""

    def describe(self) -> str:
        ins = ", ".join(map(str, self.inputs))
        outs = ", ".join(map(str, self.outputs))
        return f"{self.name} [{self.runtime} {self.device} {self.precision}] ({ins}) -> ({outs})"


def boundary_names(module: nn.Module) -> tuple[list[str], list[str]]:
    """Input and output names of an engine-boundary module (it declares input_names, output_names, example_inputs)."""
    names_in = getattr(module, "input_names", None)
    names_out = getattr(module, "output_names", None)
    if not names_in or not names_out or not callable(getattr(module, "example_inputs", None)):
        raise EngineError(f"{type(module).__name__}: not an engine boundary (needs input_names, output_names, "
                          "example_inputs)")
    return list(names_in), list(names_out)


def example_inputs(module: nn.Module, batch: int = 1) -> tuple[torch.Tensor, ...]:
    """Example inputs of an engine-boundary module at a batch size (random, in the range the network expects)."""
    boundary_names(module)
    return tuple(module.example_inputs(batch))  # type: ignore[operator]


def module_specs(module: nn.Module, batch: int = 1) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Specs of an engine-boundary module, from one call on its example inputs."""
    names_in, names_out = boundary_names(module)
    inputs = example_inputs(module, batch)
    specs_in = [TensorSpec(n, ("batch", *t.shape[1:])) for n, t in zip(names_in, inputs, strict=True)]
    with torch.no_grad():
        outputs = module(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    specs_out = [TensorSpec(n, ("batch", *t.shape[1:])) for n, t in zip(names_out, outputs, strict=True)]
    return specs_in, specs_out


class TorchEngine(Engine):
    runtime = "torch"

    def __init__(self, module: nn.Module, device: str = "cpu", precision: str = "fp32") -> None:
        if precision not in FORMATS["torch"].precisions:
            raise EngineError(f"torch: precision {precision!r} not in {FORMATS['torch'].precisions}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError("torch: CUDA was asked for and is not available here")
        if precision == "fp16" and not device.startswith("cuda"):
            raise EngineError("torch: fp16 needs a CUDA device (CPU half kernels are slow and incomplete)")
        module = module.eval()
        specs_in, specs_out = module_specs(module)
        super().__init__(specs_in, specs_out, type(module).__name__)
        self.device, self.precision = device, precision
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        module = module.to(device)
        if precision == "fp16" and hasattr(module, "to_fp16"):  # mixed precision inside, fp32 at the boundary
            module.to_fp16()  # type: ignore[operator]
            self.dtype = torch.float32
        elif precision == "fp16":
            module = module.half()
        self.module = module
        self._call = Graphed(module)  # replayed from CUDA graphs on a GPU (engines/graphs.py); a plain call on CPU

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.run_device({n: torch.from_numpy(a) for n, a in feeds.items()})
        return {n: t.float().cpu().numpy() for n, t in out.items()}

    def run_device(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            out = self._call(*[feeds[n].to(self.device, self.dtype) for n in self.input_names])
        out = out if isinstance(out, tuple) else (out,)
        return dict(zip(self.output_names, out, strict=True))


class OnnxRuntimeEngine(Engine):
    runtime = "onnx"

    def __init__(self, path: Path, device: str = "cpu", threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise EngineError(f"{path}: onnxruntime is not installed") from err
        available = set(ort.get_available_providers())
        wanted = [p for p, dev in ORT_PROVIDERS if p in available and (device != "cpu" or dev == "cpu")]
        if device.startswith("cuda") and not any(dev == "cuda" for p, dev in ORT_PROVIDERS if p in wanted):
            raise EngineError(f"{path}: CUDA was asked for; onnxruntime here has only {sorted(available)}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=wanted)
        except Exception as err:  # onnxruntime raises its own exception types for bad files
            raise EngineError(f"{path}: onnxruntime cannot load it: {err}") from err
        specs_in = [TensorSpec(i.name, tuple(d if isinstance(d, int) else "batch" for d in i.shape),
                               _ort_dtype(i.type)) for i in self.session.get_inputs()]
        specs_out = [TensorSpec(o.name, tuple(d if isinstance(d, int) else "batch" for d in o.shape),
                                _ort_dtype(o.type)) for o in self.session.get_outputs()]
        super().__init__(specs_in, specs_out, path.name)
        self.providers = self.session.get_providers()
        self.device = "cuda" if self.providers[0] != "CPUExecutionProvider" else "cpu"
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.precision = self.metadata.get("precision", "fp32")
        self._half = {s.name for s in self.inputs if s.dtype == "float16"}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: v.astype(np.float16) if k in self._half else v for k, v in feeds.items()}
        outputs = self.session.run(self.output_names, feeds)
        return {n: np.asarray(o, dtype=np.float32) for n, o in zip(self.output_names, outputs, strict=True)}


def _ort_dtype(type_name: str) -> str:
    return "float16" if "float16" in type_name else "float32"


# TensorRT plans carry a Recast header: MAGIC, a little-endian u32 length, that many bytes of JSON, then the plan.
TRT_MAGIC = b"RECAST-TRT\x00"


def read_plan(path: Path) -> tuple[dict[str, Any], bytes]:
    data = path.read_bytes()
    if not data.startswith(TRT_MAGIC):
        raise EngineError(f"{path}: no Recast header; rebuild the plan with `recast export --format tensorrt`")
    start = len(TRT_MAGIC)
    (length,) = struct.unpack("<I", data[start : start + 4])
    try:
        header = json.loads(data[start + 4 : start + 4 + length])
    except (ValueError, RecursionError) as err:  # RecursionError: JSON nested too deep
        raise EngineError(f"{path}: corrupt plan header: {str(err)[:200]}") from None
    return header, data[start + 4 + length :]


def write_plan(path: Path, header: Mapping[str, Any], plan: bytes) -> None:
    blob = json.dumps(dict(header), sort_keys=True).encode()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(TRT_MAGIC + struct.pack("<I", len(blob)) + blob + plan)
    tmp.replace(path)


def plan_mismatch(header: Mapping[str, Any], trt_version: str, gpu_arch: str) -> str | None:
    """Why a plan cannot run here (built by another TensorRT or for another GPU architecture), or None."""
    if header.get("tensorrt_version") != trt_version:
        return f"built with TensorRT {header.get('tensorrt_version')}, this machine has {trt_version}"
    if header.get("gpu_arch") != gpu_arch:
        return f"built for GPU architecture {header.get('gpu_arch')}, this GPU is {gpu_arch}"
    return None


def cuda_arch() -> str:
    major, minor = torch.cuda.get_device_capability()
    return f"sm_{major}{minor}"


def dense_view(buffer: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The first elements of a buffer allocated once at the largest shape, as a dense tensor of `shape`: a
    runtime that reads and writes dense tensors at a fixed address (TensorRT) sees every smaller shape there."""
    count = math.prod(shape)
    if count > buffer.numel():
        raise EngineError(f"shape {list(shape)} is larger than the buffer's {list(buffer.shape)}")
    return buffer.view(-1)[:count].view(*shape)


class TensorRTEngine(Engine):
    """A deserialized TensorRT engine (TensorRT 10 tensor API). Its input and output buffers are allocated once, on
    the GPU, at the largest shape of the plan's optimisation profile, and their addresses given to the execution
    context once; a call copies the inputs in on PyTorch's current CUDA stream, runs there, and hands back views of
    the outputs, valid until the next call (run_device: no synchronisation, no host copy; run: the same, then to
    host arrays)."""

    runtime = "tensorrt"
    device = "cuda"

    def __init__(self, path: Path) -> None:
        try:
            import tensorrt as trt
        except ImportError as err:
            raise EngineError(f"{path}: TensorRT is not installed here (it ships in the GPU image, docker/)") from err
        if not torch.cuda.is_available():
            raise EngineError(f"{path}: a TensorRT plan needs an NVIDIA GPU")
        header, plan = read_plan(path)
        reason = plan_mismatch(header, trt.__version__, cuda_arch())
        if reason:
            raise EngineError(f"{path}: refused: {reason}; rebuild it with `recast export --format tensorrt`")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise EngineError(f"{path}: TensorRT could not deserialize the plan")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        dtypes = {n: _TRT_TORCH_DTYPES.get(str(self.engine.get_tensor_dtype(n)).rsplit(".", 1)[-1], torch.float32)
                  for n in names}
        # the largest shapes: the profile's maxima for the inputs; the outputs' shapes follow from those
        for name in inputs:
            shape = tuple(self.engine.get_tensor_shape(name))
            largest = tuple(self.engine.get_tensor_profile_shape(name, 0)[2]) if -1 in shape else shape
            self.context.set_input_shape(name, largest)
        self.buffers = {n: torch.empty(tuple(self.context.get_tensor_shape(n)), dtype=dtypes[n], device="cuda")
                        for n in names}
        for name, buffer in self.buffers.items():
            self.context.set_tensor_address(name, buffer.data_ptr())

        def spec(name: str) -> TensorSpec:
            shape = tuple(d if d >= 0 else "batch" for d in self.engine.get_tensor_shape(name))
            return TensorSpec(name, shape, "float16" if dtypes[name] == torch.float16 else "float32")

        super().__init__([spec(n) for n in inputs], [spec(n) for n in outputs], path.name)
        self.metadata = {k: str(v) for k, v in header.items()}
        self.precision = str(header.get("precision", "fp16"))

    def run_device(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        stream = torch.cuda.current_stream()
        for spec in self.inputs:
            value = feeds[spec.name]
            dense_view(self.buffers[spec.name], value.shape).copy_(value, non_blocking=True)
            self.context.set_input_shape(spec.name, tuple(value.shape))
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise EngineError(f"{self.name}: TensorRT execution failed")
        return {s.name: dense_view(self.buffers[s.name], tuple(self.context.get_tensor_shape(s.name)))
                for s in self.outputs}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.run_device({n: torch.from_numpy(a).to("cuda", non_blocking=True) for n, a in feeds.items()})
        return {n: t.float().cpu().numpy() for n, t in out.items()}  # .cpu() waits for the stream


_TRT_TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "INT32": torch.int32, "INT64": torch.int64,
                     "INT8": torch.int8, "BOOL": torch.bool, "UINT8": torch.uint8, "BF16": torch.bfloat16}


def open_engine(
    source: str | Path | nn.Module,
    device: str = "cpu",
    precision: str = "fp32",
    part: str | None = None,
) -> Engine:
    """Open a module, a checkpoint, an ONNX file or a TensorRT plan behind the Engine surface.

    For checkpoints, `part` picks the network: stylegan2 `synthesis` (default) or `mapping`, fomm `keypoints` or
    `animator`, e4e `encoder` (default).
    """
    if isinstance(source, nn.Module):
        return TorchEngine(source, device, precision)
    path = Path(source)
    try:
        fmt = format_for(path)
    except EngineError:
        from engines.checkpoints import looks_like_safetensors

        if not looks_like_safetensors(path):  # our model files may carry any name (`recast dcgan train -o MODEL`)
            raise
        fmt = FORMATS["torch"]
    if not any(device.startswith(d) for d in fmt.devices):
        raise EngineError(f"{path}: {fmt.name} runs on {', '.join(fmt.devices)}, not {device}")
    if fmt.name == "onnx":
        return OnnxRuntimeEngine(path, device)
    if fmt.name == "tensorrt":
        return TensorRTEngine(path)
    from engines.checkpoints import open_checkpoint

    return TorchEngine(engine_module(open_checkpoint(path), part), device, precision)


def engine_module(ckpt: Any, part: str | None = None) -> nn.Module:
    """The engine-boundary module of a loaded checkpoint: ``part`` of its family (engines/families.py), by default
    the family's first."""
    from engines.families import family

    parts = family(ckpt.kind).parts
    name = part or next(iter(parts))
    if name not in parts:
        raise EngineError(f"{ckpt.path}: a {ckpt.kind} checkpoint has no part {part!r} (has {', '.join(parts)})")
    return parts[name](ckpt)
