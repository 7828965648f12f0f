"""Export an engine-boundary module to ONNX with a dynamic batch, metadata inside the file, and a parity check.

Uses the `torch.export`-based exporter (the TorchScript one cannot follow StyleGAN2's FIR padding with a symbolic
batch). The file's `metadata_props` say what it is: architecture, source sha256, precision, input and output
shapes, opset and tool versions. `check_onnx` reloads it with ONNX Runtime and compares with PyTorch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engines.runtime import OnnxRuntimeEngine, TorchEngine, boundary_names, example_inputs, module_specs

log = logging.getLogger(__name__)

OPSET = 18


@dataclass
class RoundTrip:
    """Export -> reload -> infer -> compare, per output: max abs error against the stated tolerance."""

    path: Path
    errors: dict[str, float]
    atol: float
    batches: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return all(e <= self.atol for e in self.errors.values())

    def format(self) -> str:
        errs = ", ".join(f"{k} {v:.2e}" for k, v in self.errors.items())
        return f"{self.path.name}: max abs err {errs} (atol {self.atol:g}, batches {list(self.batches)})"


def export_onnx(
    module: nn.Module,
    path: str | Path,
    metadata: Mapping[str, str] | None = None,
    max_batch: int = 64,
    opset: int = OPSET,
) -> Path:
    """Write `module` (an engine boundary: input_names, output_names, example_inputs) to `path` atomically."""
    import onnx

    path = Path(path)
    module = module.eval()
    specs_in, specs_out = module_specs(module)
    names_in, names_out = boundary_names(module)
    example = example_inputs(module, 2)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    dynamic = tuple({0: batch} for _ in example)
    tmp = path.with_name(path.name + ".tmp")
    # The exporter reports its progress on stdout; keep it in the log instead.
    sink = io.StringIO()
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # "torchvision is not installed" notes for ops we never use
    try:
        with contextlib.redirect_stdout(sink), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
            program = torch.onnx.export(
                module,
                example,
                input_names=names_in,
                output_names=names_out,
                dynamic_shapes=dynamic,
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    log.debug("onnx exporter: %s", sink.getvalue())
    assert program is not None
    model = program.model_proto
    props = {
        "producer": "recast",
        "precision": "fp32",
        "opset": str(opset),
        "inputs": ";".join(map(str, specs_in)),
        "outputs": ";".join(map(str, specs_out)),
        "max_batch": str(max_batch),
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "python_version": platform.python_version(),
        **dict(metadata or {}),
    }
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save_model(model, str(tmp))
    tmp.replace(path)
    return path


def check_onnx(module: nn.Module, path: str | Path, atol: float, batches: tuple[int, ...] = (1, 3)) -> RoundTrip:
    """Run PyTorch and ONNX Runtime on the same inputs at several batch sizes; max abs error per output."""
    path = Path(path)
    eager = TorchEngine(module)
    ort_engine = OnnxRuntimeEngine(path)
    errors: dict[str, float] = {name: 0.0 for name in eager.output_names}
    for batch in batches:
        torch.manual_seed(batch)
        feeds = {n: t.numpy() for n, t in zip(eager.input_names, example_inputs(module, batch), strict=True)}
        want = eager(**feeds)
        got = ort_engine(**feeds)
        for name in errors:
            errors[name] = max(errors[name], float(np.abs(want[name] - got[name]).max()))
    return RoundTrip(path, errors, atol, batches)
