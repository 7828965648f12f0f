"""GPU checks of the engines (run on a CUDA machine): parity of the reference vectors on the GPU at fp32 (TF32
off), the fp16 error against those vectors, per-call latency of StyleGAN2 synthesis (256, 1024), FOMM and e4e
in fp32 and fp16, called eagerly and replayed from CUDA graphs in the same process (DESIGN.md's budgets on one
H100: synthesis at 1024 <= 8 ms, FOMM <= 3 ms a face, fp16), and synthesis at 1024 at batches 1, 4 and 8.

    python benchmarks/gpu_engines.py VECTORS_DIR [OUT.json]
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from engines import fomm, stylegan2
from engines.graphs import Graphed
from engines.parity import run_parity
from export.engine_bench import FFHQ_1024, VOX256_CONFIG, bench_cuda, time_calls


def fp16_stylegan_error(folder: Path) -> float:
    config = json.loads((folder / "config.json").read_text())
    G = stylegan2.Generator(**config["init_kwargs"]).eval()
    with np.load(folder / "weights.npz") as w:
        G.load_state_dict({k: torch.from_numpy(w[k]) for k in w.files})
    engine = stylegan2.SynthesisEngine(G).cuda().eval().to_fp16()
    with np.load(folder / "expected.npz") as e:
        ws, want = torch.from_numpy(e["ws"]).cuda(), e["img_const"]
    with torch.no_grad():
        got = engine(ws).float().cpu().numpy()
    return float(np.abs(got - want).max() / np.abs(want).max())


def synthesis_batches(device: str = "cuda") -> dict[str, dict[str, float]]:
    torch.manual_seed(0)
    engine = stylegan2.SynthesisEngine(stylegan2.Generator(**FFHQ_1024).eval()).to(device).eval().to_fp16()
    graphed = Graphed(engine)
    out = {}
    with torch.inference_mode():
        for batch in (1, 4, 8):
            ws = torch.randn(batch, 18, 512, device=device)
            for way, call in (("eager", engine), ("graph", graphed)):
                t = time_calls(functools.partial(call, ws), 20, 3, sync=torch.cuda.synchronize)
                out[f"batch{batch}_{way}"] = {**t, "ms_per_face": round(t["median_ms"] / batch, 3)}
    return out


def fomm_driver_face(runs: int = 30, device: str = "cuda") -> dict[str, object]:
    """The fomm recaster's own call per face (engines.fomm.Driver: the crop's keypoints, the generator, uint8 in
    and out at 256 px, fp32), with graphs and, in the same process, without (RECAST_CUDA_GRAPHS=0)."""
    torch.manual_seed(0)
    ckpt = SimpleNamespace(kind="fomm", path="vox-256 (seeded)", config=VOX256_CONFIG, modules={
        "kp_detector": fomm.KPDetector(**VOX256_CONFIG["kp_detector_params"], **VOX256_CONFIG["common_params"]),
        "generator": fomm.OcclusionAwareGenerator(**VOX256_CONFIG["generator_params"],
                                                  **VOX256_CONFIG["common_params"])})
    rng = np.random.default_rng(0)
    frames = [(rng.random((256, 256, 3)) * 255).astype(np.uint8) for _ in range(3)]
    out: dict[str, object] = {}
    for way, flag in (("graph", "1"), ("eager", "0")):
        os.environ["RECAST_CUDA_GRAPHS"] = flag
        driver = fomm.Driver(ckpt, device)
        source, initial = driver.source(frames[0]), driver.keypoints(frames[1])
        out[way] = time_calls(lambda d=driver, s=source, i=initial: d.animate(s, d.keypoints(frames[2]), i), runs, 3)
        out[f"{way}_image"] = driver.animate(source, driver.keypoints(frames[2]), initial)
    os.environ.pop("RECAST_CUDA_GRAPHS")
    graph, eager = np.asarray(out.pop("graph_image")), np.asarray(out.pop("eager_image"))
    out["graph_vs_eager_max_levels"] = int(np.abs(graph.astype(int) - eager.astype(int)).max())
    return out


def main() -> None:
    vectors = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    result: dict[str, object] = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name()}

    def step(key: str, make: Callable[[], object]) -> None:  # each figure is kept as soon as it exists
        try:
            result[key] = make()
        except Exception as err:  # a failing check is reported with the others, not lost with them
            result[key] = {"error": f"{type(err).__name__}: {err}"[:500]}
        print(key, json.dumps(result[key]), flush=True)
        if out:
            out.write_text(json.dumps(result, indent=1))

    for name in ("stylegan2_small", "fomm_small", "e4e_small"):
        def parity(name: str = name) -> dict[str, object]:
            report = run_parity(vectors / name, device="cuda")
            print(report.format(), flush=True)
            errors: dict[str, object] = {c.name: c.max_abs_err for c in report.checks}
            return errors | {"ok": report.ok}
        step(f"parity_{name}", parity)
    step("stylegan2_small_fp16_rel_err", lambda: fp16_stylegan_error(vectors / "stylegan2_small"))
    step("bench", lambda: bench_cuda("cuda"))
    step("synthesis_1024_fp16_batches", synthesis_batches)
    step("fomm_driver_face_fp32", fomm_driver_face)


if __name__ == "__main__":
    main()
