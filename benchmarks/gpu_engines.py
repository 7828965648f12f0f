"""GPU checks of the engines (run on a CUDA machine): parity of the reference vectors on the GPU at fp32 (TF32
off), the fp16 error against those vectors, and per-call latency of StyleGAN2 synthesis (256, 1024), FOMM and e4e
in fp32 and fp16.

    python benchmarks/gpu_engines.py VECTORS_DIR [OUT.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from engines import stylegan2
from engines.parity import run_parity
from export.engine_bench import FFHQ_1024, bench_cuda, time_calls


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
    out = {}
    with torch.inference_mode():
        for batch in (1, 4, 8):
            ws = torch.randn(batch, 18, 512, device=device)
            t = time_calls(lambda ws=ws: engine(ws), 20, 3, sync=torch.cuda.synchronize)
            out[f"batch{batch}"] = {**t, "ms_per_face": round(t["median_ms"] / batch, 3)}
    return out


def main() -> None:
    vectors = Path(sys.argv[1])
    result: dict[str, object] = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name()}
    for name in ("stylegan2_small", "fomm_small", "e4e_small"):
        report = run_parity(vectors / name, device="cuda")
        print(report.format(), flush=True)
        result[f"parity_{name}"] = {c.name: c.max_abs_err for c in report.checks} | {"ok": report.ok}
    result["stylegan2_small_fp16_rel_err"] = fp16_stylegan_error(vectors / "stylegan2_small")
    result["bench"] = bench_cuda("cuda")
    result["synthesis_1024_fp16_batches"] = synthesis_batches()
    print(json.dumps(result, indent=1), flush=True)
    if len(sys.argv) > 2:
        Path(sys.argv[2]).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
