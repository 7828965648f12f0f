"""Load and soak benchmark of `recast serve`, with real aiortc clients on 127.0.0.1.

    python benchmarks/serve_load.py load [--sessions 1,2,3,4] [--seconds 8] [--workers N] [--title talking-head]
                                          [--serve-args "--video-encoder libx264"]
    python benchmarks/serve_load.py compare [--sessions 1,2,3,4] [--title talking-head]
    python benchmarks/serve_load.py soak [--minutes 3] [--sessions 2]

The server runs as its own process (`recast serve --loop`, titles on repeat) with the `warp` recaster, on one of two
titles: `s18-360p`, a 640x360, 30 fps cut of `../shared/media/videos/liveportrait_s18.mp4`, or `talking-head`, the
512x512, 25 fps `liveportrait_d0.mp4` (3 s, looped). `load` opens N sessions at once and reports, per N: frames
delivered per second per session (and as a share of the title's rate, the least session's: over the whole session,
and from its third second on as `settled_share`, the start of ICE, DTLS and a track's first frames left out), frames
the server dropped, the server's frame latency (source due time to hand-off to WebRTC, from the control channel's
state echoes) and the server's resident memory (gateway and workers summed). `compare` runs `load` on one process
(`--workers 0`) and then on the gateway with its default workers, in the same run. `soak` keeps opening and closing
sessions for a few minutes and reports memory, threads and open file descriptors of the server over time, and the
sessions left at the end."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stream.cli.serve_process import ServeProcess, cpu_seconds, proc_stats, recast_serve_demo
from stream.server.clients import Viewer, ViewerError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "media" / "videos"


SETTLE_S = 2.0  # settled_share counts the frames from here on: the start (ICE, DTLS, a track's first frames) left out
TITLES = {  # id: (source, width, height, fps)
    "s18-360p": ("liveportrait_s18.mp4", 640, 360, 30),
    "talking-head": ("liveportrait_d0.mp4", 512, 512, 25),
}


def make_title(folder: Path, title: str = "s18-360p", seconds: float = 9.0) -> Path:
    """The title at its size and rate, without audio (the audio path is not what is measured)."""
    source, width, height, fps = TITLES[title]
    out = folder / f"{title}.mp4"
    with av.open(str(SHARED / source)) as src, av.open(str(out), "w") as dst:
        stream = dst.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index, frame in enumerate(src.decode(video=0)):
            if index >= seconds * fps:
                break
            small = frame.reformat(width=width, height=height, format="yuv420p")
            small.pts, small.time_base = index, fractions.Fraction(1, fps)
            dst.mux(stream.encode(small))
        dst.mux(stream.encode(None))
    return out


@contextlib.asynccontextmanager
async def serving(workers: int | None = None, title: str = "s18-360p", serve_args: tuple[str, ...] = ()
                  ) -> AsyncIterator[ServeProcess]:
    """A `recast serve --loop` process on the test title, ready, stopped on exit; `workers` as `--workers` (0: the
    sessions in the server's own process; None: its default, 1.5 workers a core, behind the gateway); `serve_args`:
    more of its options."""
    with tempfile.TemporaryDirectory() as tmp:
        make_title(Path(tmp), title)
        extra = ("--workers", str(workers)) if workers is not None else ()
        with recast_serve_demo("--titles", tmp, "--loop", "--max-sessions", "16", "--sessions-per-minute", "1000",
                               *extra, *serve_args) as server:
            yield server


async def one_session(base: str, http: aiohttp.ClientSession, seconds: float, title: str = "s18-360p",
                      cast: str | None = None) -> dict[str, Any]:
    viewer = Viewer(base, http)
    try:
        await viewer.connect({"title": title})
    except ViewerError as err:  # a full service answers 503 busy
        await viewer.close()
        if "busy" not in str(err):
            raise
        return {"refused": True}
    assert viewer.video is not None
    if cast is not None:
        reply = await viewer.control({"type": "cast", "cast": cast})
        assert reply.get("cast") == cast, reply
    latencies: list[float] = []
    frames = settled = 0
    start = time.monotonic()
    last_poll = start
    while time.monotonic() - start < seconds:
        try:
            await asyncio.wait_for(viewer.video.recv(), 5)
        except Exception:
            break
        frames += 1
        settled += time.monotonic() - start >= SETTLE_S
        if time.monotonic() - last_poll > 0.5:
            last_poll = time.monotonic()
            state = await viewer.control({"type": "recast", "enabled": True})
            latencies.append(float(state.get("latency_ms", 0)))
    elapsed = time.monotonic() - start
    # the transport's bytes: the title has no audio, and the control channel's few messages are noise
    received = [s.bytesReceived for s in (await viewer.pc.getStats()).values() if s.type == "transport"]
    _, metrics = await viewer.call("GET", "/metrics")
    dropped = sum(float(line.split()[-1]) for line in metrics.splitlines()
                  if line.startswith("recast_frames_dropped_total") and viewer.session in line)
    await viewer.call("DELETE", f"/api/sessions/{viewer.session}")
    await viewer.close()
    return {"fps": frames / elapsed, "frames": frames, "dropped": dropped, "kbps": sum(received) * 8 / elapsed / 1e3,
            "settled_fps": settled / max(elapsed - SETTLE_S, 1e-3),
            "latency_ms": statistics.median(latencies) if latencies else None}


async def load(counts: list[int], seconds: float, workers: int | None = None, title: str = "s18-360p",
               serve_args: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    results = []
    rate = TITLES[title][3]
    async with serving(workers, title, serve_args) as server, aiohttp.ClientSession() as http:
        for n in counts:
            cpu_before, wall_before = cpu_seconds(server.pid), time.monotonic()
            results = await asyncio.gather(*(one_session(server.base, http, seconds, title) for _ in range(n)))
            cores = (cpu_seconds(server.pid) - cpu_before) / (time.monotonic() - wall_before)
            sessions = [s for s in results if not s.get("refused")]
            if not sessions:
                print(json.dumps({"sessions": n, "refused_busy": n}), flush=True)
                continue
            stats = proc_stats(server.pid)
            row = {"workers": "default" if workers is None else workers, "sessions": n,
                   "refused_busy": len(results) - len(sessions),
                   "fps_per_session": round(min(s["fps"] for s in sessions), 1),
                   "share_of_rate": round(min(s["fps"] for s in sessions) / rate, 3),
                   "fps_mean": round(statistics.mean(s["fps"] for s in sessions), 1),
                   "settled_share": round(min(s["settled_fps"] for s in sessions) / rate, 3),
                   "dropped_per_session": round(statistics.mean(s["dropped"] for s in sessions), 1),
                   "video_kbps_per_session": round(statistics.mean(s["kbps"] for s in sessions)),
                   "latency_ms_median": round(statistics.median(s["latency_ms"] or 0 for s in sessions), 1),
                   "server_rss_mb": round(stats["rss_mb"], 1),
                   # the server's CPU (gateway and workers) over the sessions' run, start-up and ending included
                   "server_cores_per_session": round(cores / len(sessions), 2)}
            print(json.dumps(row), flush=True)
            results.append(row)
            await asyncio.sleep(2)
    return results


async def soak(minutes: float, sessions: int, workers: int | None = None) -> dict[str, Any]:
    samples = []
    async with serving(workers) as server, aiohttp.ClientSession() as http:
        end = time.monotonic() + minutes * 60
        while time.monotonic() < end:
            await asyncio.gather(*(one_session(server.base, http, 6) for _ in range(sessions)))
            await asyncio.sleep(1.5)
            stats = proc_stats(server.pid)
            samples.append({"round": len(samples) + 1, **{k: round(v, 1) for k, v in stats.items()}})
            print(json.dumps(samples[-1]), flush=True)
        async with http.get(server.base + "/metrics") as r:
            text = await r.text()
    left = sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("recast_sessions{"))
    first, last = samples[min(2, len(samples) - 1)], samples[-1]
    settled = samples[2:] if len(samples) > 4 else samples
    slope = statistics.linear_regression([s["round"] for s in settled], [s["rss_mb"] for s in settled]).slope \
        if len(settled) > 1 else 0.0
    return {"rounds": len(samples), "sessions_per_round": sessions, "sessions_left": left,
            "rss_mb_after_warmup": first["rss_mb"], "rss_mb_end": last["rss_mb"],
            "rss_mb_per_round": round(slope, 3),
            "threads_after_warmup": first["threads"], "threads_end": last["threads"],
            "fds_after_warmup": first["fds"], "fds_end": last["fds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("load", "compare", "soak"))
    parser.add_argument("--sessions", default="1,2,3,4")
    parser.add_argument("--seconds", type=float, default=8, help="per session (the titles play on repeat)")
    parser.add_argument("--title", choices=tuple(TITLES), default="s18-360p")
    parser.add_argument("--minutes", type=float, default=3)
    parser.add_argument("--workers", type=int, default=None,
                        help="recast serve --workers (0: one process, no gateway; default: 1.5 workers a core)")
    parser.add_argument("--serve-args", default="", help="more `recast serve` options, e.g. '--video-encoder libx264'")
    args = parser.parse_args()
    serve_args = tuple(args.serve_args.split())
    counts = [int(n) for n in args.sessions.split(",")]
    if args.mode == "load":
        result: Any = asyncio.run(load(counts, args.seconds, args.workers, args.title, serve_args))
    elif args.mode == "compare":
        result = {"one_process": asyncio.run(load(counts, args.seconds, 0, args.title, serve_args)),
                  "workers": asyncio.run(load(counts, args.seconds, args.workers, args.title, serve_args))}
    else:
        result = asyncio.run(soak(args.minutes, int(args.sessions.split(",")[0]), args.workers))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
