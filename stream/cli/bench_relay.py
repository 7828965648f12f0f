"""`recast bench --only relay`: what a viewer of a baked title costs the service when its renditions are relayed,
against the live path, measured in one run with real aiortc viewers on 127.0.0.1.

The input's first seconds are baked with renditions for the built-in casts and served by `recast serve --cache`
(one session worker, `--loop`) in its own process. First `viewers` viewers of the baked title at once (relayed:
every cast the service offers has a rendition), then one viewer of the same file served as a plain title (the
live path). For each: the server's CPU (gateway and worker, in cores over the steady part of the run) per viewer,
the frames a second each viewer got, and the server's resident memory per extra viewer. Then the toggle's delay on
one relayed viewer: from the `recast` message sent to the first picture of the other rendition received, over
`toggles` switches (a switch waits for the next keyframe: at most one GOP, 0.5 s).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np

from export.renditions import AUDIO, ORIGINAL, cast_rendition, decoded_pictures
from stream.cli.serve_process import ServeProcess, cpu_seconds, proc_stats, recast_serve_demo
from stream.media.sinks import first_seconds
from stream.server.clients import Viewer

TITLE_S = 8.0  # the input's first seconds make the title (played on repeat)
WARMUP_S = 2.0  # the start of the sessions (ICE, DTLS) is left out of the CPU figure


def _decoded(path: Path) -> list[np.ndarray]:
    """Every picture of an H.264 rendition, in order, small (for telling renditions apart)."""
    return [f.to_ndarray(format="gray")[::4, ::4].astype(np.float32) for f in decoded_pictures(path)]


async def _watch(base: str, http: aiohttp.ClientSession, title: str, seconds: float) -> dict[str, Any]:
    viewer = Viewer(base, http)
    await viewer.connect({"title": title})
    state = await viewer.control({"type": "state"})
    frames, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        await viewer.frames(1, timeout=5)
        frames += 1
    await viewer.call("DELETE", f"/api/sessions/{viewer.session}")
    await viewer.close()
    return {"fps": frames / (time.monotonic() - start), "path": state.get("path")}


async def _round(server: ServeProcess, http: aiohttp.ClientSession, title: str, viewers: int, seconds: float
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
    return {"viewers": viewers, "path": sorted({r["path"] for r in results}),
            "fps_least": round(min(r["fps"] for r in results), 1),
            "fps_mean": round(statistics.mean(r["fps"] for r in results), 1),
            "server_cpu_cores": round(cores, 3), "cpu_share_of_a_core_per_viewer": round(cores / viewers, 4),
            "viewers_per_core": round(viewers / max(cores, 1e-6), 1),
            "rss_mb_per_viewer": round((rss - idle_rss) / viewers, 2)}


async def _toggles(server: ServeProcess, http: aiohttp.ClientSession, title: str, renditions: Path, fps: float,
                   toggles: int) -> dict[str, Any]:
    """Switch one relayed viewer `toggles` times; each delay is from the message sent to the first picture that is
    the other rendition's (told apart by comparing each received picture with both at its frame)."""
    viewer = Viewer(server.base, http)
    await viewer.connect({"title": title})
    state = await viewer.control({"type": "state"})
    streams = {True: _decoded(renditions / f"{cast_rendition(state['cast'])}.h264"),
               False: _decoded(renditions / f"{ORIGINAL}.h264")}
    frames = len(streams[True])

    def shows(frame: av.VideoFrame) -> bool:
        """Whether a received picture is the recast rendition's (else the original's)."""
        i = round(float(frame.pts * frame.time_base) * fps) % frames
        picture = frame.to_ndarray(format="gray")[::4, ::4].astype(np.float32)
        return bool(np.abs(picture - streams[True][i]).mean() < np.abs(picture - streams[False][i]).mean())

    enabled, delays = bool(state["enabled"]), []
    await viewer.frames(10)
    for _ in range(toggles):
        enabled = not enabled
        sent = time.monotonic()
        await viewer.control({"type": "recast", "enabled": enabled})
        while shows((await viewer.frames(1))[0]) != enabled:
            if time.monotonic() - sent > 5:
                raise RuntimeError("a toggle did not take effect within 5 s")
        delays.append((time.monotonic() - sent) * 1e3)
        await asyncio.sleep(0.3)  # the next toggle from another place in the GOP
    await viewer.close()
    return {"toggles": toggles, "delay_ms_median": round(statistics.median(delays)),
            "delay_ms_max": round(max(delays))}


def run_relay_bench(location: str | Path, viewers: int = 10, seconds: float = 10.0, toggles: int = 10
                    ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="recast-relay-bench-") as tmp:
        folder = Path(tmp)
        (folder / "titles").mkdir()
        live = first_seconds(Path(location), folder / "titles" / "live.mp4", TITLE_S)
        baked = shutil.copy(live, folder / "baked.mp4")
        bake = subprocess.run([sys.executable, "-m", "stream.cli", "bake", str(baked), "--title", "baked",
                               "--cache", str(folder / "cache"), "--casts", str(folder / "casts"),
                               "--renditions", "all"], capture_output=True, text=True)
        if bake.returncode != 0:
            raise RuntimeError(f"the bake with renditions failed (exit {bake.returncode}): {bake.stderr.strip()}")
        entry = folder / "cache" / "titles" / "baked"
        info = json.loads((entry / "manifest.json").read_text())["stages"]["renditions"]["info"]
        minutes = info["frames"] / info["fps"] / 60
        rendition_mb = sum(p.stat().st_size for p in (entry / "renditions").iterdir()) / 1e6
        with recast_serve_demo("--cache", str(folder / "cache"), "--titles", str(folder / "titles"), "--loop",
                               "--casts", str(folder / "casts"), "--workers", "1",
                               "--max-sessions", str(viewers + 2), "--sessions-per-minute", "1000",
                               wait_s=120) as server:

            async def measure() -> dict[str, Any]:
                async with aiohttp.ClientSession() as http:
                    relayed = await _round(server, http, "baked", viewers, seconds)
                    toggle = await _toggles(server, http, "baked", entry / "renditions", info["fps"], toggles)
                    await asyncio.sleep(2)
                    single = await _round(server, http, "live", 1, seconds)
                    return {"relayed": relayed, "toggle": toggle, "live": single}

            result = asyncio.run(measure())
    with av.open(str(location)) as container:
        stream = container.streams.video[0]
        size = f"{stream.codec_context.width}x{stream.codec_context.height}"
    return {"input": str(location), "size": size, "fps": info["fps"], "gop_frames": info["gop_frames"],
            "renditions": sorted(name for name in info["bytes"] if name != AUDIO), "audio": AUDIO in info["bytes"],
            "renditions_mb_per_minute": round(rendition_mb / minutes, 2), **result,
            "live_over_relayed": round(result["live"]["cpu_share_of_a_core_per_viewer"]
                                       / max(result["relayed"]["cpu_share_of_a_core_per_viewer"], 1e-6), 1)}


def format_relay_bench(result: dict[str, Any]) -> str:
    relayed, live, toggle = result["relayed"], result["live"], result["toggle"]
    return "\n".join([
        f"relay: {result['input']} ({result['size']} @ {result['fps']:g} fps), renditions "
        f"{', '.join(result['renditions'])}{' and the audio' if result['audio'] else ''}: "
        f"{result['renditions_mb_per_minute']} MB a minute of title",
        f"  {relayed['viewers']} relayed viewers: {100 * relayed['cpu_share_of_a_core_per_viewer']:.2f} % of a core "
        f"each ({relayed['viewers_per_core']:g} viewers a core), {relayed['rss_mb_per_viewer']} MB each, "
        f"{relayed['fps_least']:g}-{relayed['fps_mean']:g} fps (least-mean)",
        f"  1 live viewer: {100 * live['cpu_share_of_a_core_per_viewer']:.1f} % of a core "
        f"({result['live_over_relayed']:g} times a relayed one), {live['fps_least']:g} fps",
        f"  toggle: {toggle['delay_ms_median']} ms median, {toggle['delay_ms_max']} ms at most over "
        f"{toggle['toggles']} switches (keyframes every {result['gop_frames']} frames)",
    ])
