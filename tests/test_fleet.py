"""`recast serve` as a gateway with session workers, each a real process (and, in the Ray test, a Ray actor on a
local two-node cluster), played by real aiortc viewers on 127.0.0.1: placement over the workers, a killed worker's
viewers told while the others play on, its replacement, requests to workers that the gateway did not sign, the
fleet's /metrics and /healthz, and SIGTERM's drain."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from stream.cli.serve_process import ServeProcess, recast_serve_demo
from stream.server.clients import Viewer
from stream.server.fleet import AdoptedProcess
from stream.server.signing import BadSignature, new_secret, owner_of, sign
from tests.webrtc_client import run_async


def _workers_of(pid: int) -> dict[int, str]:
    """The session worker processes the gateway `pid` started: pid -> worker name."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and b"stream.cli.worker" in cmdline:
            found[int(entry.name)] = cmdline[cmdline.index(b"stream.cli.worker") + 1].decode()
    return found


async def _json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        return response.status, await response.json()


async def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        await asyncio.sleep(0.2)


async def _adopted(http: aiohttp.ClientSession, gateway: ServeProcess, viewer: Viewer, workers: int,
                   sessions: int) -> None:
    """What a gateway that adopted a fleet must show: its workers and sessions up, the viewer's session running
    there, and the viewer's control channel (viewer to worker) still answering."""
    status, health = await _json(http, gateway.base + "/healthz")
    assert status == 200 and health["workers"] == workers and health["sessions"] == sessions, health
    status, state = await viewer.call("GET", f"/api/sessions/{viewer.session}")
    assert status == 200 and state["state"] == "running", state
    reply = await viewer.control({"type": "recast", "enabled": False})
    assert reply["type"] == "state" and reply["enabled"] is False


def _viewer(server: ServeProcess, http: aiohttp.ClientSession) -> Viewer:
    return Viewer(server.base, http, pc=RTCPeerConnection())


def test_sessions_spread_over_workers_and_a_killed_worker_ends_only_its_own() -> None:
    with recast_serve_demo("--workers", "2") as server:
        workers = _workers_of(server.pid)
        assert len(workers) == 2, workers

        async def scenario() -> None:
            async with aiohttp.ClientSession() as http:
                status, health = await _json(http, server.base + "/healthz")
                assert status == 200 and health["workers"] == 2
                first, second = _viewer(server, http), _viewer(server, http)
                # together: the first offer is still on its way when the second is placed
                await asyncio.gather(first.connect({"title": "demo"}), second.connect({"title": "demo"}))
                await first.frames(5)
                await second.frames(5)
                where = {}
                for viewer in (first, second):
                    status, state = await viewer.call("GET", f"/api/sessions/{viewer.session}")
                    assert status == 200 and state["state"] == "running"
                    where[viewer.session] = state["worker"]
                assert len(set(where.values())) == 2, where  # one session on each worker

                async def polled() -> bool:  # the gateway reads its workers' status once a second
                    text = await (await http.get(server.base + "/metrics")).text()
                    return all(f'recast_worker_sessions{{worker="{n}"}} 1' in text for n in where.values())

                await _wait_for(polled, 5, "both workers' status at the gateway")
                metrics = await (await http.get(server.base + "/metrics")).text()
                for name in set(where.values()):
                    assert f'recast_worker_sessions{{worker="{name}"}} 1' in metrics
                    assert f'recast_frames_out_total{{worker="{name}",session=' in metrics
                assert metrics.count("# TYPE recast_frames_out_total") == 1

                victim = next(pid for pid, name in workers.items() if name == where[first.session])
                os.kill(victim, signal.SIGKILL)

                async def told() -> bool:
                    return (await first.call("GET", f"/api/sessions/{first.session}"))[1]["state"] == "lost"

                await _wait_for(told, 10, "the killed worker's session reported lost")
                assert len(await second.frames(30)) == 30  # the other worker's viewer plays on
                status, _ = await first.call("POST", f"/api/sessions/{first.session}/offer",
                                             {"sdp": "v=0", "type": "offer"})
                assert status == 410

                async def replaced() -> bool:
                    return bool((await _json(http, server.base + "/healthz"))[1]["workers"] == 2)

                await _wait_for(replaced, 60, "a replacement worker")
                assert len(_workers_of(server.pid)) == 2
                third = _viewer(server, http)
                await third.connect({"title": "demo"})
                assert len(await third.frames(5)) == 5
                metrics = await (await http.get(server.base + "/metrics")).text()
                assert "recast_gateway_sessions_lost_total 1" in metrics
                for viewer in (first, second, third):
                    await viewer.close()

        run_async(scenario, timeout=150)


def test_workers_refuse_what_the_gateway_did_not_sign() -> None:
    with recast_serve_demo("--workers", "1") as server:
        [worker] = _workers_of(server.pid)
        port = next(int(line.split(":")[2].split()[0], 16) for line in _listening(worker))

        async def scenario() -> None:
            base = f"http://127.0.0.1:{port}"
            body = json.dumps({"title": "demo"}).encode()
            async with aiohttp.ClientSession() as http:
                async with http.post(base + "/api/sessions", data=body,
                                     headers={"Content-Type": "application/json"}) as response:
                    assert response.status == 403  # not signed
                forged = sign(new_secret(), "POST", "/api/sessions", owner_of("x" * 20), body)
                async with http.post(base + "/api/sessions", data=body,
                                     headers={**forged, "Content-Type": "application/json"}) as response:
                    assert response.status == 403  # signed with another secret
                async with http.get(base + "/worker/status") as response:
                    assert response.status == 403
                async with http.get(base + "/healthz") as response:
                    assert response.status == 200
                # the gateway applies the single process's rules: JSON bodies only, as JSON
                async with http.post(server.base + "/api/sessions", data=body,
                                     headers={"Content-Type": "text/plain"}) as response:
                    assert response.status == 415
                # the gateway's own session ids are the only ones it forwards: another id is unknown there
                async with http.post(server.base + "/api/sessions/" + "f" * 32 + "/offer",
                                     json={"sdp": "v=0", "type": "offer"}) as response:
                    assert response.status == 404

        run_async(scenario, timeout=60)


def _listening(pid: int) -> list[str]:
    """The /proc/net/tcp lines of the sockets `pid` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return [line for line in lines if line.split()[9] in inodes and line.split()[3] == "0A"]


def test_sigterm_drains_and_ends_running_sessions_with_a_state() -> None:
    with recast_serve_demo("--workers", "1", "--drain-s", "2") as server:

        async def scenario() -> None:
            async with aiohttp.ClientSession() as http:
                viewer = _viewer(server, http)
                await viewer.connect({"title": "demo"})
                await viewer.frames(5)
                began = time.monotonic()
                os.kill(server.pid, signal.SIGTERM)
                await asyncio.sleep(0.5)
                status, refused = await viewer.call("POST", "/api/sessions", {"title": "demo"})
                assert status == 503 and refused["error"] == "draining"
                ended = None
                while ended is None and time.monotonic() - began < 10:
                    reply = await asyncio.wait_for(viewer.replies.get(), 10)
                    if reply.get("ended"):
                        ended = reply
                assert ended is not None and ended["reason"] == "shutdown"
                assert time.monotonic() - began < 2 + 3  # the drain's time, plus the ending itself
                await viewer.close()

        run_async(scenario, timeout=60)


@pytest.mark.slow
def test_workers_as_ray_actors_on_a_two_node_cluster() -> None:
    """Sessions on actors of both nodes, a killed actor's viewer told while the other plays on, its replacement, and
    a gateway killed and started again that adopts the running actors and their sessions."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        with recast_serve_demo("--workers", "2", "--ray-address", cluster.address, wait_s=180) as server:

            async def scenario() -> None:
                async with aiohttp.ClientSession() as http:
                    viewers = [_viewer(server, http) for _ in range(2)]
                    for viewer in viewers:
                        await viewer.connect({"title": "demo"})
                        await viewer.frames(3)
                    nodes: set[str] = set()

                    async def both_nodes() -> bool:  # the gateway reads its workers' status once a second
                        text = await (await http.get(server.base + "/metrics")).text()
                        nodes.clear()
                        for line in text.splitlines():
                            if line.startswith("recast_worker_sessions{") and line.endswith(" 1"):
                                worker = line.split('worker="')[1].split('"')[0]
                                node_line = next(n for n in text.splitlines() if n.startswith("recast_worker_node{")
                                                 and f'worker="{worker}"' in n)
                                nodes.add(node_line.split('node="')[1].split('"')[0])
                        return len(nodes) == 2

                    await _wait_for(both_nodes, 10, "one session on a worker on each node")

                    _, state = await viewers[0].call("GET", f"/api/sessions/{viewers[0].session}")
                    import ray

                    ray.init(address=cluster.address, namespace="recast")
                    try:
                        actor = next(a for a in ray.util.list_named_actors(all_namespaces=True)
                                     if a["name"].startswith(f"recast-worker-{state['worker']}-"))
                        ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))
                    finally:
                        ray.shutdown()

                    async def told() -> bool:
                        reply = await viewers[0].call("GET", f"/api/sessions/{viewers[0].session}")
                        return bool(reply[1]["state"] == "lost")

                    await _wait_for(told, 15, "the killed actor's session reported lost")
                    assert len(await viewers[1].frames(20)) == 20

                    async def replaced() -> bool:
                        return bool((await _json(http, server.base + "/healthz"))[1]["workers"] == 2)

                    await _wait_for(replaced, 120, "a replacement actor")
                    third = _viewer(server, http)
                    await third.connect({"title": "demo"})
                    assert len(await third.frames(3)) == 3

                    # the gateway dies; its detached actors play on, and the next gateway adopts them by name
                    os.kill(server.pid, signal.SIGKILL)
                    await _wait_for(lambda: _gone(server.pid), 15, "the first gateway exits")
                    assert len(await third.frames(25, timeout=5)) == 25
                    with recast_serve_demo("--workers", "2", "--ray-address", cluster.address, port=server.port,
                                           wait_s=180) as successor:
                        await _adopted(http, successor, third, workers=2, sessions=2)
                        status, _ = await third.call("DELETE", f"/api/sessions/{third.session}")
                        assert status == 204
                    for viewer in [*viewers, third]:
                        await viewer.close()

            run_async(scenario, timeout=420)
    finally:
        cluster.shutdown()


def test_a_control_flood_ends_its_session_and_spares_the_other_viewers() -> None:
    """Without a limit, a burst of 10,000 control messages from one viewer cuts another viewer of the same server
    to about 4 fps. Messages over the session's rate are dropped unanswered (the first answered `rate_limited`)
    and a flood ends the session, told with a `state` that says `"ended": true, "reason": "control_flood"`."""
    with recast_serve_demo("--workers", "1", "--max-sessions", "4") as server:

        async def fps(viewer: Viewer, seconds: float) -> float:
            assert viewer.video is not None
            frames, began = 0, time.monotonic()
            while time.monotonic() - began < seconds:
                await asyncio.wait_for(viewer.video.recv(), 5)
                frames += 1
            return frames / seconds

        async def scenario() -> None:
            async with aiohttp.ClientSession() as http:
                flooder, other = _viewer(server, http), _viewer(server, http)
                await flooder.connect({"title": "demo"})
                await other.connect({"title": "demo"})
                await other.frames(20)
                before = await fps(other, 2)
                for _ in range(10_000):
                    flooder.channel.send(json.dumps({"type": "state"}))
                during = await fps(other, 3)
                replies = []
                while not flooder.replies.empty():
                    replies.append(flooder.replies.get_nowait())
                assert during >= 0.8 * before, (before, during)
                assert any(r.get("error") == "rate_limited" for r in replies)
                assert len(replies) < 1000  # dropped, not answered
                ended = [r for r in replies if r.get("ended")]
                assert ended and ended[0]["reason"] == "control_flood", replies[-3:]
                await flooder.close()
                await other.close()

        run_async(scenario)


def test_two_identical_requests_signed_at_once_are_both_accepted() -> None:
    """Two viewers asking for the same title in the same millisecond make byte-identical requests: the nonce signs
    them apart, so the worker's replay guard refuses only a true replay (without it, the second viewer was
    refused)."""
    from stream.server.signing import verify
    from stream.server.worker import ReplayGuard

    secret, owner, body = new_secret(), owner_of("k" * 24), b'{"title": "demo"}'
    first, second = (sign(secret, "POST", "/api/sessions", owner, body, now=1000.0) for _ in range(2))
    guard = ReplayGuard()
    for headers in (first, second):
        assert verify(secret, "POST", "/api/sessions", headers, body, now=1000.5) == owner
        assert guard.first_time(headers["X-Recast-Signature"])
    assert not guard.first_time(first["X-Recast-Signature"])
    tampered = {**first, "X-Recast-Signature": first["X-Recast-Signature"].replace(",", ",0", 2)}
    with pytest.raises(BadSignature):
        verify(secret, "POST", "/api/sessions", tampered, body, now=1000.5)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGHUP"])
def test_a_gateway_restart_does_not_cut_running_sessions(how: str) -> None:
    """A gateway that dies (SIGKILL) or hands over (SIGHUP) leaves its workers running: the viewer's media flows on
    (it goes between viewer and worker), and the next gateway on the same port adopts the worker and its session,
    which it can then end; it also places new sessions, and its SIGINT ends the adopted worker."""
    with recast_serve_demo("--workers", "1") as first:
        workers = _workers_of(first.pid)
        assert len(workers) == 1
        worker_pid = next(iter(workers))

        async def scenario() -> None:
            async with aiohttp.ClientSession() as http:
                viewer = _viewer(first, http)
                await viewer.connect({"title": "demo"})
                await viewer.frames(10)
                os.kill(first.pid, getattr(signal, how))
                await _wait_for(lambda: _gone(first.pid), 15, "the first gateway exits")
                await viewer.frames(25, timeout=5)  # a second of media with no gateway at all
                with recast_serve_demo("--workers", "1", port=first.port) as second:
                    assert os.path.exists(f"/proc/{worker_pid}")
                    await _adopted(http, second, viewer, workers=1, sessions=1)
                    await viewer.frames(10, timeout=5)
                    status, _ = await viewer.call("DELETE", f"/api/sessions/{viewer.session}")
                    assert status == 204
                    newcomer = _viewer(second, http)
                    await newcomer.connect({"title": "demo"})
                    await newcomer.frames(10)
                    await newcomer.close()
                await _wait_for(lambda: _gone(worker_pid), 15, "the adopted worker ends with the second gateway")
                await viewer.close()

        run_async(scenario, timeout=120)


async def _gone(pid: int) -> bool:
    return AdoptedProcess(pid).returncode is not None  # exited, or a zombie nobody has reaped


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs an NVIDIA GPU")
def test_the_sessions_per_gpu_benchmark_plays_fomm_sessions_on_the_gpu() -> None:
    """benchmarks/gpu_sessions.py on two viewers: FOMM on the GPU, NVENC where it opens; both sessions play."""
    from benchmarks.gpu_sessions import measure

    result = asyncio.run(measure([2], 6, "cuda", "auto", None))
    row = result["rows"][0]
    assert row["fps_per_session"] > 5 and row["gpu_memory_mb"] > 0, result


def test_the_default_fleet_has_about_a_worker_for_each_session_the_machine_holds() -> None:
    from stream.cli.serve import default_workers

    assert default_workers(2, 8) == 3 and default_workers(1, 8) == 2 and default_workers(32, 64) == 48
    assert default_workers(32, 8) == 8 and default_workers(2, 1) == 1  # never more workers than sessions
