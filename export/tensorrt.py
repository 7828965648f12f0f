"""TensorRT plans from our ONNX files (TensorRT 10 Python API; imported lazily: it ships in the GPU image only).

A plan is written with the Recast header of engines/runtime.py (MAGIC, length, JSON, then the serialized engine).
The header names what the plan was built from and for: architecture, the ONNX file's sha256 and the source
checkpoint's, precision, the input shapes with the optimisation profile's batch range, opset, TensorRT version and
the GPU architecture. `stale_reason` compares it with this machine and the ONNX file; `ensure_plan` rebuilds a plan
that does not match instead of ever running it. Builds share a timing cache file beside the plan.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from engines.cache import sha256_path
from engines.runtime import EngineError, plan_mismatch, read_plan, write_plan

log = logging.getLogger(__name__)


def onnx_metadata(path: Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def plan_header(onnx_path: Path, trt_version: str, gpu_arch: str, *, fp16: bool = True,
                batch: tuple[int, int, int] = (1, 4, 16)) -> dict[str, Any]:
    meta = onnx_metadata(onnx_path)
    return {
        "architecture": meta.get("architecture", "unknown"),
        "source_sha256": meta.get("source_sha256", ""),
        "onnx_sha256": sha256_path(onnx_path),
        "precision": "fp16" if fp16 else "fp32",
        "inputs": meta.get("inputs", ""),
        "batch_profile": list(batch),
        "opset": meta.get("opset", ""),
        "tensorrt_version": trt_version,
        "gpu_arch": gpu_arch,
    }


def stale_reason(plan_path: Path, onnx_path: Path, trt_version: str, gpu_arch: str) -> str | None:
    """Why the plan must be rebuilt (missing, unreadable, another TensorRT or GPU, another ONNX), or None."""
    if not plan_path.is_file():
        return "no plan yet"
    try:
        header, _ = read_plan(plan_path)
    except (EngineError, OSError, ValueError) as err:
        return str(err)
    mismatch = plan_mismatch(header, trt_version, gpu_arch)
    if mismatch:
        return mismatch
    if header.get("onnx_sha256") != sha256_path(onnx_path):
        return f"built from another ONNX file than {onnx_path.name}"
    return None


def build_plan(onnx_path: Path, plan_path: Path, *, fp16: bool = True, batch: tuple[int, int, int] = (1, 4, 16),
               timing_cache: Path | None = None, workspace_gb: float = 4.0) -> Path:
    """Build a plan with one optimisation profile over the batch range; writes it with its header."""
    try:
        import tensorrt as trt
    except ImportError as err:
        raise EngineError(f"{onnx_path}: TensorRT is not installed here (it ships in the GPU image, docker/)") from err
    from engines.runtime import cuda_arch

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (batch[0], *rest), (batch[1], *rest), (batch[2], *rest))
    config.add_optimization_profile(profile)
    cache_path = timing_cache or plan_path.with_name("timing.cache")
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"{onnx_path}: TensorRT could not build a plan")
    write_plan(plan_path, plan_header(onnx_path, trt.__version__, cuda_arch(), fp16=fp16, batch=batch),
               bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return plan_path


def ensure_plan(onnx_path: Path, plan_path: Path, **build: Any) -> Path:
    """The plan for this machine: reused when its header matches, otherwise rebuilt (never run when stale)."""
    import tensorrt as trt

    from engines.runtime import cuda_arch

    reason = stale_reason(plan_path, onnx_path, trt.__version__, cuda_arch())
    if reason is None:
        return plan_path
    log.warning("%s: rebuilding the TensorRT plan (%s)", plan_path, reason)
    return build_plan(onnx_path, plan_path, **build)
