"""The format table: each runtime, the files it reads, where it runs and at which precisions. Plain data with no
imports, so the command line takes its choices from it (`--runtime`, `--format`, `--export`) without loading
PyTorch; engines/runtime.py opens engines by it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuntimeFormat:
    """One row of the format table: what a runtime reads, where it runs and at which precisions."""

    name: str
    suffixes: tuple[str, ...]
    devices: tuple[str, ...]
    precisions: tuple[str, ...]
    package: str  # what must be importable
    dynamic_batch: bool
    description: str
    ours: str  # the suffix of the files Recast writes in this format (the title cache, `recast export`)


FORMATS: dict[str, RuntimeFormat] = {
    "torch": RuntimeFormat(
        "torch",
        (".pkl", ".pt", ".pth", ".pth.tar", ".safetensors"),
        ("cpu", "cuda"),
        ("fp32", "fp16"),
        "torch",
        True,
        "eager PyTorch modules from official checkpoints or our safetensors",
        ".safetensors",
    ),
    "onnx": RuntimeFormat(
        "onnx",
        (".onnx",),
        ("cpu", "cuda"),
        ("fp32", "fp16"),
        "onnxruntime",
        True,
        "ONNX Runtime; providers TensorRT > CUDA > CPU, the best one present",
        ".onnx",
    ),
    "tensorrt": RuntimeFormat(
        "tensorrt",
        (".plan", ".engine"),
        ("cuda",),
        ("fp32", "fp16"),
        "tensorrt",
        True,
        "serialized TensorRT engines with a Recast JSON header; NVIDIA GPUs only",
        ".plan",
    ),
}
RUNTIMES = tuple(FORMATS)  # what a baked title plays on: `recast render|serve --runtime`
EXPORTS = tuple(name for name in FORMATS if name != "torch")  # what `recast export --format` writes
# what `recast bake --export` writes, by the suffix of the file (onnx, plan)
BAKE_EXPORTS = tuple(FORMATS[name].ours.lstrip(".") for name in EXPORTS)
