"""What the gateway and its session workers cost in time, against one `recast serve` process, in the same run:

    python benchmarks/fleet_latency.py [--workers 2] [--requests 200] [--sessions 5]

- start-up: from launching `recast serve --demo` to its first 200 from /healthz (the gateway answers once its
  workers have loaded their models and casts);
- time to first frame: from POST /api/sessions to the first decoded video frame at a real aiortc viewer on
  127.0.0.1 (session, offer, answer, ICE and DTLS, the first recast frame), one session at a time;
- the gateway's added latency per request: the median and 90th percentile of GET /api/titles (forwarded to a
  worker) and of a session's create and delete (placed, forwarded and signed), against the same requests to one
  process;
- what watching the fleet costs: CPU per signed /worker/status request (the gateway reads each worker's once a
  second), at the client (the gateway's side) and at the worker, from 2,000 requests 50 at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stream.cli.serve_process import recast_serve_demo
from stream.server.clients import Viewer


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": round(statistics.median(ordered) * 1e3, 2),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1e3, 2)}


async def _requests(base: str, count: int) -> dict[str, Any]:
    titles, sessions = [], []
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            began = time.perf_counter()
            async with http.get(base + "/api/titles") as response:
                await response.read()
            titles.append(time.perf_counter() - began)
        for _ in range(count // 4):
            began = time.perf_counter()
            async with http.post(base + "/api/sessions", json={"title": "demo"}) as response:
                sid = (await response.json())["session"]
            async with http.delete(f"{base}/api/sessions/{sid}") as response:
                await response.read()
            sessions.append(time.perf_counter() - began)
    return {"GET /api/titles": _ms(titles), "POST + DELETE /api/sessions": _ms(sessions)}


async def _first_frames(base: str, count: int) -> dict[str, float]:
    waits = []
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            viewer = Viewer(base, http)
            began = time.perf_counter()
            await viewer.connect({"title": "demo"})
            await viewer.frames(1)
            waits.append(time.perf_counter() - began)
            await viewer.call("DELETE", f"/api/sessions/{viewer.session}")
            await viewer.close()
            await asyncio.sleep(0.5)
    return _ms(waits)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _status_cost(record: Path, count: int = 2000) -> dict[str, float]:
    """CPU per signed status request, on both sides, against the first worker of the fleet's record."""
    from stream.server.signing import sign

    fleet = json.loads(record.read_text())
    worker = fleet["workers"][0]
    async with aiohttp.ClientSession() as http:

        async def one() -> None:
            headers = sign(fleet["secret"], "GET", "/worker/status", "gateway")
            async with http.get(worker["url"] + "/worker/status", headers=headers) as response:
                assert response.status == 200, response.status
                await response.read()

        client, served, began = time.process_time(), _cpu_s(worker["pid"]), time.perf_counter()
        for _ in range(count // 50):
            await asyncio.gather(*(one() for _ in range(50)))
        wall = time.perf_counter() - began
        return {"gateway_cpu_ms": round((time.process_time() - client) / count * 1e3, 3),
                "worker_cpu_ms": round((_cpu_s(worker["pid"]) - served) / count * 1e3, 3),
                "requests_per_s": round(count / wall)}


def measure(workers: int, requests: int, sessions: int) -> dict[str, Any]:
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, \
            recast_serve_demo("--workers", str(workers), "--max-sessions", "8", "--sessions-per-minute", "10000",
                              "--fleet-record", f"{tmp}/fleet.json", wait_s=180) as server:
        startup = time.perf_counter() - began
        row = {"workers": workers, "startup_s": round(startup, 2),
               "first_frame": asyncio.run(_first_frames(server.base, sessions)),
               **asyncio.run(_requests(server.base, requests))}
        if workers:
            row["status_request"] = asyncio.run(_status_cost(Path(tmp) / "fleet.json"))
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="the gateway's workers (against --workers 0)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=5, help="sessions for the time to first frame")
    args = parser.parse_args()
    one, fleet = measure(0, args.requests, args.sessions), measure(args.workers, args.requests, args.sessions)
    added = {route: round(fleet[route]["median_ms"] - one[route]["median_ms"], 2)
             for route in ("GET /api/titles", "POST + DELETE /api/sessions")}
    print(json.dumps({"one_process": one, "gateway": fleet, "gateway_adds_median_ms": added}, indent=1))


if __name__ == "__main__":
    main()
