"""What a viewer of a baked title costs the service when its renditions are relayed, against the live path, in the
same run, with real aiortc viewers on 127.0.0.1.

    python benchmarks/relay_load.py [--viewers 10] [--seconds 10] [OUT.json]

The 512x512, 25 fps talking head of serve_load.py is baked with renditions for the built-in casts and served by
`recast serve --cache` with one session worker and `--loop`. First N viewers of it at once (relayed: every cast the
service offers has a rendition), then one viewer of the same title through the live path (the same file served as a
plain title). For each: the server's CPU (gateway and worker, cores over the steady part of the run) per viewer,
frames a second each viewer got, and the server's resident memory per extra viewer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.serve_load import TITLES, cpu_seconds, make_title, proc_stats
from stream.cli.main import main as recast
from tests.serve_process import recast_serve_demo
from tests.webrtc_client import Viewer

TITLE = "talking-head"
WARMUP_S = 2.0  # the start of the sessions (ICE, DTLS) is left out of the CPU figure


async def _watch(base: str, http: aiohttp.ClientSession, title: str, seconds: float) -> dict[str, Any]:
    viewer = Viewer(base, http)
    await viewer.connect({"title": title})
    state = await viewer.control({"type": "state"})
    assert viewer.video is not None
    frames, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        await asyncio.wait_for(viewer.video.recv(), 5)
        frames += 1
    await viewer.call("DELETE", f"/api/sessions/{viewer.session}")
    await viewer.close()
    return {"fps": frames / (time.monotonic() - start), "path": state.get("path")}


async def _round(server: Any, http: aiohttp.ClientSession, title: str, viewers: int, seconds: float
                 ) -> dict[str, Any]:
    idle_rss = proc_stats(server.pid)["rss_mb"]
    # one viewer first: once the gateway has seen the title relayed, it places its viewers at the relay's cost
    first = asyncio.ensure_future(_watch(server.base, http, title, seconds + WARMUP_S))
    await asyncio.sleep(WARMUP_S)
    runs = asyncio.gather(first, *(_watch(server.base, http, title, seconds) for _ in range(viewers - 1)))
    await asyncio.sleep(WARMUP_S)
    began_cpu, began = cpu_seconds(server.pid), time.monotonic()
    await asyncio.sleep(seconds - WARMUP_S - 1.0)
    cores = (cpu_seconds(server.pid) - began_cpu) / (time.monotonic() - began)
    rss = proc_stats(server.pid)["rss_mb"]
    results = await runs
    return {"title": title, "viewers": viewers, "path": sorted({r["path"] for r in results}),
            "fps_least": round(min(r["fps"] for r in results), 1),
            "fps_mean": round(statistics.mean(r["fps"] for r in results), 1),
            "server_cpu_cores": round(cores, 3), "cpu_share_of_a_core_per_viewer": round(cores / viewers, 4),
            "viewers_per_core": round(viewers / max(cores, 1e-6), 1),
            "rss_mb_per_viewer": round((rss - idle_rss) / viewers, 2)}


async def measure(viewers: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "titles").mkdir()
        source = make_title(folder / "titles", TITLE)
        baked = folder / "baked.mp4"
        baked.write_bytes(source.read_bytes())
        code = recast(["bake", str(baked), "--title", "baked", "--cache", str(folder / "cache"),
                       "--casts", str(folder / "casts"), "--renditions", "all"])
        if code != 0:
            raise SystemExit(f"the bake failed (exit {code})")
        entry = folder / "cache" / "titles" / "baked"
        rendition_mb = sum(p.stat().st_size for p in (entry / "renditions").iterdir()) / 1e6
        info = json.loads((entry / "manifest.json").read_text())["stages"]["renditions"]["info"]
        minutes = info["frames"] / info["fps"] / 60
        with recast_serve_demo("--cache", str(folder / "cache"), "--titles", str(folder / "titles"), "--loop",
                               "--casts", str(folder / "casts"),
                               "--workers", "1", "--max-sessions", str(viewers + 2), "--sessions-per-minute", "1000",
                               wait_s=120) as server:
            async with aiohttp.ClientSession() as http:
                relayed = await _round(server, http, "baked", viewers, seconds)
                print(json.dumps(relayed), flush=True)
                await asyncio.sleep(2)
                live = await _round(server, http, TITLE, 1, seconds)
                print(json.dumps(live), flush=True)
    return {"title": f"{TITLES[TITLE][0]} at {TITLES[TITLE][1]}x{TITLES[TITLE][2]}, {TITLES[TITLE][3]} fps",
            "renditions_mb_per_minute": round(rendition_mb / minutes, 2), "relayed": relayed, "live": live,
            "live_over_relayed": round(live["cpu_share_of_a_core_per_viewer"]
                                       / max(relayed["cpu_share_of_a_core_per_viewer"], 1e-6), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?")
    parser.add_argument("--viewers", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    result = asyncio.run(measure(args.viewers, args.seconds))
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
