"""`recast bench --only channel`: what a live channel costs the service per viewer, in one run with real aiortc peers
on 127.0.0.1.

`recast serve --demo` (a gateway and one session worker) runs in its own process. This process publishes the
input over WHIP (its first seconds on repeat at their frame rate, each frame stamped with its number), then
watches the channel over WHEP: first 1 player, then `viewers` players at once, all with the recast on and the same
cast. For each round: the server's CPU (gateway and worker, in cores over the steady part of the round), the frames
a second each player got, and the trip from the publisher's send to a player's picture (read back from the
stamp). The goal is the ratio: 10 viewers of one choice cost at most 1.3 times 1 viewer, since the channel is
tracked, drawn and encoded once for all of them.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp

from stream.cli.serve_process import ServeProcess, cpu_seconds, recast_serve_demo
from stream.server.clients import ClipTrack, WhepViewer, WhipPublisher, read_stamp

WARMUP_S = 2.0  # the players' start (ICE, DTLS, the first keyframe) is left out of the CPU figure
CHANNEL = "bench"


async def _watch(player: WhepViewer, clip: ClipTrack, seconds: float) -> dict[str, Any]:
    frames, trips, start = 0, [], time.monotonic()
    while time.monotonic() - start < seconds:
        frame = (await player.frames(1, timeout=5))[0]
        frames += 1
        if frames % 5 == 0:  # a sample of trips (reading the stamp costs this process)
            number = read_stamp(frame.to_ndarray(format="rgb24"))
            if number in clip.sent and number < clip.number:
                trips.append((time.monotonic() - clip.sent[number]) * 1e3)
    return {"fps": frames / (time.monotonic() - start), "trips": trips}


async def _round(server: ServeProcess, http: aiohttp.ClientSession, clip: ClipTrack, viewers: int,
                 seconds: float) -> dict[str, Any]:
    players = [WhepViewer(server.base, http) for _ in range(viewers)]
    await asyncio.gather(*(p.connect(CHANNEL, "recast=1", control=False) for p in players))
    runs = asyncio.gather(*(_watch(p, clip, seconds + WARMUP_S) for p in players))
    await asyncio.sleep(WARMUP_S)
    began_cpu, began = cpu_seconds(server.pid), time.monotonic()
    await asyncio.sleep(seconds - 1.0)
    cores = (cpu_seconds(server.pid) - began_cpu) / (time.monotonic() - began)
    results = await runs
    async with http.get(f"{server.base}/api/titles") as response:
        channel = next(t for t in await response.json() if t["id"] == CHANNEL)
    for player in players:
        await player.delete()
        await player.close()
    trips = [t for r in results for t in r["trips"]]
    return {"viewers": viewers, "server_cpu_cores": round(cores, 3),
            "fps_least": round(min(r["fps"] for r in results), 1),
            "fps_mean": round(statistics.mean(r["fps"] for r in results), 1),
            "publisher_frames_dropped": channel.get("frames_dropped"),
            "trip_ms_median": round(statistics.median(trips)) if trips else None,
            "trip_ms_p90": round(statistics.quantiles(trips, n=10)[-1]) if len(trips) >= 10 else None,
            "choices_drawn": channel.get("choices"), "channel_latency_ms": channel.get("latency_ms")}


def run_channel_bench(location: str | Path, viewers: int = 10, seconds: float = 10.0) -> dict[str, Any]:
    async def measure() -> dict[str, Any]:
        with recast_serve_demo("--workers", "1", "--max-sessions", str(viewers + 4), "--sessions-per-minute",
                               "1000", wait_s=120) as server:
            async with aiohttp.ClientSession() as http:
                clip = ClipTrack(str(location))
                publisher = WhipPublisher(server.base, http)
                await publisher.publish(CHANNEL, clip)
                await asyncio.sleep(1.0)
                one = await _round(server, http, clip, 1, seconds)
                many = await _round(server, http, clip, viewers, seconds)
                await publisher.delete()
                await publisher.close()
                return {"input": str(location), "fps": round(clip.fps, 3), "size": list(clip.images[0].shape[:2]),
                        "one": one, "many": many,
                        "many_over_one": round(many["server_cpu_cores"] / max(one["server_cpu_cores"], 1e-6), 2)}

    return asyncio.run(measure())


def format_channel_bench(result: dict[str, Any]) -> str:
    one, many = result["one"], result["many"]

    def row(r: dict[str, Any]) -> str:
        return (f"  {r['viewers']} viewer(s) of one cast: the server {r['server_cpu_cores']:.2f} cores, "
                f"{r['fps_least']:g}-{r['fps_mean']:g} fps (least-mean), trip {r['trip_ms_median']} ms median "
                f"({r['trip_ms_p90']} ms p90), {r['choices_drawn']} choice(s) drawn")

    height, width = result["size"]
    return "\n".join([f"live channel: {result['input']} ({width}x{height} @ {result['fps']:g} fps) over WHIP, "
                      "watched over WHEP", row(one), row(many),
                      f"  {many['viewers']} viewers cost {result['many_over_one']:g} times 1 viewer"])
