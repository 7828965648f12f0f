"""`recast bench --only engines`: per-call latency of the networks, eager PyTorch against ONNX Runtime in the same
run, and the ONNX export round trip (export, reload, infer, compare) of each network. It exports, so it sits in
`export`, above the engines it times.

On this CPU: StyleGAN2 synthesis at the 64 px test config of the reference vectors, FOMM at the full vox-256 config
and e4e at its full size (random or formula weights: the cost of a call does not depend on the weights' values).
With a CUDA device: StyleGAN2 synthesis at 256 (SG2 paper256) and 1024 (FFHQ), FOMM and e4e, fp32 and fp16.
"""

from __future__ import annotations

import functools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engines import e4e, fomm, stylegan2
from engines.official import VOX256_CONFIG
from engines.parity import e4e_formula_state

FFHQ_1024 = {"z_dim": 512, "c_dim": 0, "w_dim": 512, "img_resolution": 1024, "img_channels": 3,
             "mapping_kwargs": {"num_layers": 8}, "synthesis_kwargs": {"channel_base": 32768, "channel_max": 512}}
PAPER_256 = {"z_dim": 512, "c_dim": 0, "w_dim": 512, "img_resolution": 256, "img_channels": 3,
             "mapping_kwargs": {"num_layers": 8}, "synthesis_kwargs": {"channel_base": 16384, "channel_max": 512}}
TEST_64 = {"z_dim": 64, "c_dim": 0, "w_dim": 64, "img_resolution": 64, "img_channels": 3,
           "mapping_kwargs": {"num_layers": 2}, "synthesis_kwargs": {"channel_base": 2048, "channel_max": 64}}


def time_calls(fn: Callable[[], Any], runs: int = 10, warmup: int = 2, sync: Callable[[], None] | None = None
               ) -> dict[str, float]:
    """Median and best milliseconds per call."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": round(statistics.median(times), 3), "best_ms": round(min(times), 3), "runs": runs}


def _stylegan(config: dict[str, Any], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    G = stylegan2.Generator(**config).eval()  # seeded weights: a call costs the same whatever their values
    return stylegan2.SynthesisEngine(G).eval()


def _fomm_keypoints(config: dict[str, Any] = VOX256_CONFIG) -> nn.Module:
    torch.manual_seed(0)
    detector = fomm.KPDetector(**config["kp_detector_params"], **config["common_params"]).eval()
    return fomm.KeypointEngine(detector, int(config.get("image_size", 256))).eval()


def _fomm_animator(config: dict[str, Any] = VOX256_CONFIG) -> nn.Module:
    torch.manual_seed(0)
    common = config["common_params"]
    generator = fomm.OcclusionAwareGenerator(**config["generator_params"], **common).eval()
    return fomm.AnimatorEngine(generator, common["num_kp"], int(config.get("image_size", 256))).eval()


def _e4e(stylegan_size: int = 1024) -> nn.Module:
    encoder = e4e.Encoder4Editing(50, "ir_se", stylegan_size).eval()
    encoder.load_state_dict(e4e_formula_state(encoder))
    return e4e.E4EEngine(encoder, torch.zeros(encoder.style_count, 512)).eval()


def cpu_networks() -> dict[str, Callable[[], nn.Module]]:
    return {
        "stylegan2_synthesis_64": lambda: _stylegan(TEST_64),
        "fomm_keypoints_256": _fomm_keypoints,
        "fomm_animator_256": _fomm_animator,
        "e4e_encoder_256": _e4e,
    }


ROUND_TRIP_ATOL = {"stylegan2_synthesis_64": 1e-4, "fomm_keypoints_256": 1e-4, "fomm_animator_256": 1e-4,
                   "e4e_encoder_256": 1e-4}


def bench_network(name: str, module: nn.Module, runs: int, onnx: bool, folder: Path) -> dict[str, Any]:
    from engines.runtime import OnnxRuntimeEngine, TorchEngine, example_inputs
    from export.onnx import check_onnx, export_onnx

    eager = TorchEngine(module)
    feeds = {n: t.numpy() for n, t in zip(eager.input_names, example_inputs(module, 1), strict=True)}
    result: dict[str, Any] = {
        "inputs": [str(s) for s in eager.inputs],
        "parameters": sum(p.numel() for p in module.parameters()),
        "eager_cpu": time_calls(lambda: eager(**feeds), runs),
    }
    if onnx:
        path = folder / f"{name}.onnx"
        start = time.perf_counter()
        export_onnx(module, path, {"architecture": name})
        result["onnx_export_s"] = round(time.perf_counter() - start, 2)
        result["onnx_mb"] = round(path.stat().st_size / 1e6, 1)
        trip = check_onnx(module, path, ROUND_TRIP_ATOL.get(name, 1e-4))
        result["onnx_round_trip"] = {"max_abs_err": trip.errors, "atol": trip.atol, "ok": trip.ok}
        ort_engine = OnnxRuntimeEngine(path)
        result["onnxruntime_cpu"] = time_calls(lambda: ort_engine(**feeds), runs)
        result["ort_speedup"] = round(result["eager_cpu"]["median_ms"] / result["onnxruntime_cpu"]["median_ms"], 2)
        path.unlink()
    return result


class _FommFace(nn.Module):
    """One face of one frame, as the fomm recaster runs it: the driving crop's keypoints, then the generator."""

    def __init__(self) -> None:
        super().__init__()
        self.keypoints: Any = _fomm_keypoints()
        self.animator: Any = _fomm_animator()

    def forward(self, source: torch.Tensor, kp_value: torch.Tensor, kp_jacobian: torch.Tensor,
                driving: torch.Tensor) -> torch.Tensor:
        value, jacobian = self.keypoints(driving)
        return self.animator(source, kp_value, kp_jacobian, value, jacobian)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        source, kp_value, kp_jacobian, _, _ = self.animator.example_inputs(batch)
        return source, kp_value, kp_jacobian, torch.rand_like(source)


def bench_cuda(device: str, runs: int = 20) -> dict[str, Any]:
    """Synthesis at 256 and 1024, FOMM and e4e on a GPU, batch 1, fp32 and fp16, each called eagerly and replayed
    from a CUDA graph (engines/graphs.py, as the engines and recasters run them there), in the same process."""
    from engines.graphs import Graphed

    sync = torch.cuda.synchronize
    nets: dict[str, Callable[[], nn.Module]] = {
        "stylegan2_synthesis_256": lambda: _stylegan(PAPER_256),
        "stylegan2_synthesis_1024": lambda: _stylegan(FFHQ_1024),
        "fomm_keypoints_256": _fomm_keypoints,
        "fomm_animator_256": _fomm_animator,
        "fomm_face_256": _FommFace,
        "e4e_encoder_256": _e4e,
    }
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(device)}
    for name, make in nets.items():
        module: Any = make().to(device)
        inputs = [t.to(device) for t in module.example_inputs(1)]
        entry: dict[str, Any] = {}
        with torch.inference_mode():
            ref = _first(module(*inputs))
            entry["fp32"] = time_calls(functools.partial(module, *inputs), runs, sync=sync)
            graphed = Graphed(module)
            entry["fp32_graph"] = time_calls(functools.partial(graphed, *inputs), runs, sync=sync)
            entry["graph_vs_eager_max_abs"] = float((_first(graphed(*inputs)) - ref).abs().max())
            if hasattr(module, "to_fp16"):  # StyleGAN2: upstream mixed precision, fp32 weights and boundary
                half, hin = module.to_fp16(), inputs
            else:
                half, hin = module.half(), [t.half() for t in inputs]
            low = _first(half(*hin)).float()
            entry["fp16"] = time_calls(functools.partial(half, *hin), runs, sync=sync)
            entry["fp16_graph"] = time_calls(functools.partial(Graphed(half), *hin), runs, sync=sync)
            entry["fp16_vs_fp32_max_abs"] = float((ref - low).abs().max())
        out[name] = entry
        del module, half, graphed
        torch.cuda.empty_cache()
    return out


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def run_engine_bench(device: str = "cpu", runs: int = 5, onnx: bool = True) -> dict[str, Any]:
    torch.set_grad_enabled(False)
    result: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": {}}
    with tempfile.TemporaryDirectory(prefix="recast-engine-bench-") as tmp:
        for name, make in cpu_networks().items():
            result["cpu"][name] = bench_network(name, make(), runs, onnx, Path(tmp))
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            result["cuda"] = {"error": "CUDA not available"}
        else:
            result["cuda"] = bench_cuda(device)
    return result


def format_engine_bench(result: dict[str, Any]) -> str:
    lines = [f"engines (torch {result['torch']}, {result['threads']} threads), ms per call at batch 1:"]
    for name, r in result["cpu"].items():
        line = f"  {name:<24} eager {r['eager_cpu']['median_ms']:9.2f}"
        if "onnxruntime_cpu" in r:
            trip = r["onnx_round_trip"]
            errs = ", ".join(f"{k} {v:.1e}" for k, v in trip["max_abs_err"].items())
            line += (f"  onnxruntime {r['onnxruntime_cpu']['median_ms']:9.2f} ({r['ort_speedup']}x)"
                     f"  export {r['onnx_export_s']} s, round trip {errs} (atol {trip['atol']:g}) "
                     f"{'ok' if trip['ok'] else 'FAIL'}")
        lines.append(line)
    cuda = result.get("cuda")
    if cuda:
        if "error" in cuda:
            lines.append(f"  cuda: {cuda['error']}")
        else:
            lines.append(f"  on {cuda['device']}:")
            for name, r in cuda.items():
                if name == "device":
                    continue
                ms = {k: r[k]["median_ms"] for k in ("fp32", "fp32_graph", "fp16", "fp16_graph")}
                lines.append(f"  {name:<24} fp32 {ms['fp32']:8.2f} (graph {ms['fp32_graph']:6.2f})  fp16 "
                             f"{ms['fp16']:8.2f} (graph {ms['fp16_graph']:6.2f})  fp16 vs fp32 max abs "
                             f"{r['fp16_vs_fp32_max_abs']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m export.engine_bench [cuda]
    import sys

    res = run_engine_bench(sys.argv[1] if len(sys.argv) > 1 else "cpu")
    print(format_engine_bench(res))
    print(json.dumps(res, indent=1))
