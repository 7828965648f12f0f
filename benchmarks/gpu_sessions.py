"""Sessions per GPU: `recast serve` with its session workers on one machine, every viewer's face animated by the
FOMM recaster on the GPU, played by real aiortc viewers on 127.0.0.1 in the same run.

    python benchmarks/gpu_sessions.py [--sessions 1,2,4,8,12,16] [--seconds 10] [--workers N] [--device cuda]
                                      [--encoder auto] [OUT.json]

The title is the 512x512, 25 fps talking head of serve_load.py, on repeat. A cast is registered with a FOMM
checkpoint of the vox-256 architecture (seeded weights: the cost of the real network, not its look), and each viewer
picks it. For each count of viewers at once it reports: frames delivered a second per session (the least, and as a
share of 25), frames dropped, the server's CPU (cores, all workers summed, and per session), the GPU's memory,
utilisation and encoder utilisation (nvidia-smi), and which video encoder ran. `sessions_per_gpu` is the largest
count whose every session got 95 % of the title's rate; `cpu_cores_per_session` is the CPU a session needed there.
`--encoder auto` encodes with NVENC where the GPU has it (L4, L40S, RTX); on H100 and A100, which have none, the
sessions encode with libx264 on the CPU (`--encoder libx264` forces that anywhere), and the CPU figure is the one to
read. `--device cpu` runs the same measurement without a GPU (FOMM on the CPU is far below real time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.serve_load import TITLES, cpu_seconds, make_title, one_session, proc_stats
from engines.checkpoints import build_modules, save_safetensors
from engines.official import VOX256_CONFIG, Checkpoint
from stream.cli.main import main as recast
from stream.cli.serve_process import recast_serve_demo
from stream.server.encoding import resolve_encoding

PORTRAIT = Path(__file__).resolve().parents[2] / "shared" / "media" / "images" / "liveportrait_s42.jpg"
TITLE = "talking-head"
CAST = "animated"
SHARE = 0.95  # of the title's rate, for every session: what counts as served


def gpu_now() -> dict[str, float]:
    """Memory used (MB), utilisation and encoder utilisation (%) of the first GPU, from nvidia-smi; {} without."""
    if shutil.which("nvidia-smi") is None:
        return {}
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used,utilization.gpu,utilization.encoder",
                          "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
    if out.returncode != 0:
        return {}
    used, util, enc = (float(v) for v in out.stdout.splitlines()[0].split(","))
    return {"gpu_memory_mb": used, "gpu_util_pct": util, "nvenc_util_pct": enc}


def fomm_registry(folder: Path) -> Path:
    """A cast registry holding one cast animated by a vox-256 FOMM checkpoint with seeded weights."""
    torch.manual_seed(0)
    checkpoint = folder / "fomm-vox256-seeded.safetensors"
    save_safetensors(Checkpoint("fomm", checkpoint, "0" * 64, VOX256_CONFIG, build_modules("fomm", VOX256_CONFIG)),
                     checkpoint)
    registry = folder / "casts"
    code = recast(["casts", "add", str(PORTRAIT), "--kind", "consented", "--source", "LivePortrait sample s42",
                   "--id", CAST, "--fomm", str(checkpoint), "--casts", str(registry)])
    if code != 0:
        raise SystemExit(f"could not register the FOMM cast (exit {code})")
    return registry


async def measure(counts: list[int], seconds: float, device: str, encoder: str, workers: int | None
                  ) -> dict[str, Any]:
    rate = TITLES[TITLE][3]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "titles").mkdir()
        make_title(folder / "titles", TITLE)
        registry = fomm_registry(folder)
        extra = ["--workers", str(workers)] if workers is not None else []
        with recast_serve_demo("--titles", str(folder / "titles"), "--loop", "--casts", str(registry),
                               "--device", device, "--video-encoder", encoder, "--max-sessions", str(max(counts)),
                               "--sessions-per-minute", "1000", *extra, wait_s=300) as server:
            async with aiohttp.ClientSession() as http:
                for n in counts:
                    began_cpu, began = cpu_seconds(server.pid), time.monotonic()
                    runs = asyncio.gather(*(one_session(server.base, http, seconds, TITLE, CAST) for _ in range(n)))
                    await asyncio.sleep(seconds / 2)
                    gpu = gpu_now()  # mid-run: every session playing
                    sessions = [s for s in await runs if not s.get("refused")]
                    cores = (cpu_seconds(server.pid) - began_cpu) / (time.monotonic() - began)
                    least = min(s["fps"] for s in sessions) if len(sessions) == n else 0.0  # a refused one: not served
                    row = {"sessions": n, "refused_busy": n - len(sessions), "fps_per_session": round(least, 1),
                           "share_of_rate": round(least / rate, 3),
                           "fps_mean": round(statistics.mean(s["fps"] for s in sessions), 1) if sessions else 0.0,
                           "dropped_per_session": round(statistics.mean(s["dropped"] for s in sessions), 1)
                           if sessions else 0.0,
                           "server_cpu_cores": round(cores, 2),
                           "cpu_cores_per_session": round(cores / max(len(sessions), 1), 2),
                           "server_rss_mb": round(proc_stats(server.pid)["rss_mb"]), **gpu}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                    await asyncio.sleep(2)
    served = [r for r in rows if r["share_of_rate"] >= SHARE]
    best = max(served, key=lambda r: r["sessions"]) if served else None
    return {"device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
            "cpu_cores": os.cpu_count(), "video_encoder": resolve_encoding(encoder), "title": TITLE,
            "recaster": "fomm (vox-256, seeded weights)", "rows": rows,
            "sessions_per_gpu": best["sessions"] if best else 0,
            "cpu_cores_per_session": best["cpu_cores_per_session"] if best else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", help="also write the figures as JSON here")
    parser.add_argument("--sessions", default="1,2,4,8,12,16")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--encoder", default="auto", help="recast serve --video-encoder")
    parser.add_argument("--workers", type=int, default=None, help="recast serve --workers (default: 1.5 a core)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here (use --device cpu for a run without a GPU)")
    result = asyncio.run(measure([int(n) for n in args.sessions.split(",")], args.seconds, args.device,
                                 args.encoder, args.workers))
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
