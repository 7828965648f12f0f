"""The gateway of `recast serve`: the HTTP API of DESIGN.md 3.4, exactly as a single process serves it, in front of
session workers (stream/server/worker.py) that it starts through a launcher (stream/server/fleet.py: local
processes, or Ray actors on a cluster).

The gateway checks every request as the single process does (keys, sizes, content types, rate limits, the
offer's SDP), places each new session on a worker, and forwards the session's signalling there, signed; the
answer comes from that worker, so media flows between viewer and worker directly. It watches each worker's
status once a second: a worker that exits, or answers no status for `HUNG_AFTER` polls, is ended, its sessions
are marked lost (`GET /api/sessions/SID` says so to a page that lost its peer), and a replacement is started.
SIGTERM drains: no new sessions (503 `draining`), running ones go on for `--drain-s` and are then ended, each
viewer told with a `state` that says `"ended": true`. SIGINT ends the workers at once. SIGHUP hands over: the gateway
exits and leaves its workers and their sessions running; the next gateway started with the same fleet record (a
restart after a crash does the same) adopts them, so a gateway restart does not cut running sessions' media.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from stream.server.app import index
from stream.server.fleet import Launcher, Worker, WorkerFailed, save_fleet
from stream.server.gateway_edge import add_edge_routes
from stream.server.http import (
    ACCESS,
    API_KEY,
    MAX_BODY,
    REQUESTS,
    STATIC,
    Access,
    ApiError,
    auth,
    error,
    expect_within_limit,
    json_errors,
    json_object,
    quiet_parser_rejections,
)
from stream.server.metrics import Counter, Gauge, Histogram
from stream.server.placement import SessionCost, rank
from stream.server.service import RateLimiter, checked_offer
from stream.server.signing import owner_of, sign
from stream.server.webrtc_http import cors_for_players

log = logging.getLogger(__name__)

POLL_S = 1.0  # how often each worker's status is read
STATUS_TIMEOUT_S = 2.0
HUNG_AFTER = 3  # status requests in a row that fail or time out before a worker is taken for hung and ended
OFFER_TIMEOUT_S = 30.0
LOST_KEPT = 10_000  # ended and lost sessions remembered for GET /api/sessions/SID


class GatewayMetrics:
    def __init__(self) -> None:
        self.requests = Counter("recast_gateway_http_requests_total", "Gateway HTTP requests by route and status")
        self.placed = Counter("recast_gateway_sessions_placed_total", "Sessions placed, by worker")
        self.refused = Counter("recast_gateway_sessions_refused_total", "Sessions refused, by reason")
        self.lost = Counter("recast_gateway_sessions_lost_total", "Sessions lost with their worker")
        self.workers = Gauge("recast_gateway_workers", "Workers by state")
        self.worker_sessions = Gauge("recast_worker_sessions", "Open sessions on each worker")
        self.worker_fps = Gauge("recast_worker_fps", "Frames sent a second by each worker, all its sessions")
        self.worker_cpu = Gauge("recast_worker_cpu_cores", "CPU each worker used over the last second, in cores")
        self.worker_rss = Gauge("recast_worker_max_rss_mb", "Each worker's peak resident memory, MB")
        self.worker_node = Gauge("recast_worker_node", "1 for the node (a Ray node id, or a host name) of each worker")
        self.forward_ms = Histogram("recast_gateway_forward_ms", "Time a request spent forwarded to its worker")

    def render(self) -> list[str]:
        lines: list[str] = []
        for metric in (self.requests, self.placed, self.refused, self.lost, self.workers, self.worker_sessions,
                       self.worker_fps, self.worker_cpu, self.worker_rss, self.worker_node, self.forward_ms):
            lines += metric.render()
        return lines


def merge_metrics(texts: dict[str, str]) -> list[str]:
    """Each worker's Prometheus text, with a `worker` label on every sample, grouped by metric family so that each
    family's HELP and TYPE come once."""
    families: OrderedDict[str, tuple[list[str], list[str]]] = OrderedDict()
    for worker, text in texts.items():
        family = ""
        for line in text.splitlines():
            if line.startswith("# "):
                parts = line.split(" ", 3)
                family = parts[2] if len(parts) > 2 else family
                head, _ = families.setdefault(family, ([], []))
                if line not in head:
                    head.append(line)
                continue
            if not line.strip():
                continue
            name, brace, rest = line.partition("{")
            label = f'worker="{worker}"'
            sample = f"{name}{{{label},{rest}" if brace else f"{name.split(' ')[0]}{{{label}}} {line.split(' ', 1)[1]}"
            families.setdefault(family or name.split(" ")[0], ([], []))[1].append(sample.replace(",}", "}"))
    return [line for head, samples in families.values() for line in head + samples]


class Gateway:
    """The fleet of workers, where each session lives, and the rules in front of them."""

    def __init__(self, launcher: Launcher, secret: str, workers: int, max_sessions: int, per_worker: int,
                 access: Access, sessions_per_minute: int, drain_s: float,
                 record: Path | None = None, previous: dict[str, Any] | None = None) -> None:
        """`record`: where the fleet's record is kept for the next gateway; `previous`: the record an earlier
        gateway left (fleet.load_fleet), whose workers are adopted when they still run."""
        self.launcher, self.secret = launcher, secret
        self.record, self.previous = record, previous
        self.handing_over = False  # SIGHUP: leave the workers running for the next gateway
        self.wanted, self.max_sessions, self.per_worker = workers, max_sessions, per_worker
        self.access, self.drain_s = access, drain_s
        self.session_cost = SessionCost()
        self.placed_at: dict[str, float] = {}  # session -> when it was placed (for SessionCost)
        self.relayed_titles: set[str] = set()  # titles whose last session seen was relayed (placement)
        self.limiter = RateLimiter(sessions_per_minute)
        self.metrics = GatewayMetrics()
        self.workers: dict[str, Worker] = {}
        self.where: dict[str, tuple[str, str]] = {}  # session -> (worker name, owner)
        self.channels: dict[str, str] = {}  # live channel -> the worker it is published to
        self.publishers: dict[str, tuple[str, str]] = {}  # publisher -> (worker name, owner)
        self.gone: OrderedDict[str, tuple[str, str]] = OrderedDict()  # session -> (state: ended|lost, owner)
        self.draining = False
        self._serial = 0
        self._starting = 0
        self._http: aiohttp.ClientSession | None = None
        self._watch: asyncio.Task[None] | None = None

    # --- the fleet ----------------------------------------------------------------------------------------------

    async def start(self, _app: web.Application | None = None) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=OFFER_TIMEOUT_S))
        began = time.perf_counter()
        if self.previous is not None:
            await self._adopt(self.previous.get("workers", []))
        wanted = max(0, self.wanted - len(self.workers))
        results = await asyncio.gather(*(self._start_one() for _ in range(wanted)), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        for err in failed:
            log.error("%s", err)
        if not self.workers:
            if self._http is not None:
                await self._http.close()
            usage = all(isinstance(err, WorkerFailed) and err.usage for err in failed)
            raise WorkerFailed("no session worker started; see the log above", usage=usage)
        log.info("%d %s workers up in %.1f s", len(self.workers), self.launcher.kind, time.perf_counter() - began)
        self._watch = asyncio.ensure_future(self._watch_fleet())

    async def _start_one(self) -> Worker:
        self._serial += 1
        name = f"w{self._serial}"
        self._starting += 1
        try:
            worker = await self.launcher.start(name)
        finally:
            self._starting -= 1
        self.workers[name] = worker
        await self._poll(worker)  # its machine and cores are known before it takes a session (placement)
        self._count_workers()
        self._save()
        log.info("worker %s up at %s", name, worker.url)
        return worker

    async def _adopt(self, records: list[Any]) -> None:
        """Take over the workers an earlier gateway left that still run and answer this fleet's secret, with their
        sessions; one that does not answer is ended."""
        for record in records:
            if not isinstance(record, dict):
                continue
            worker = self.launcher.adopt(record)
            if worker is None:
                log.info("worker %s of the last gateway is gone", record.get("name"))
                continue
            try:
                status = await self._call(worker, "GET", "/worker/status", timeout=STATUS_TIMEOUT_S)
            except (aiohttp.ClientError, TimeoutError, ValueError) as err:
                log.warning("worker %s of the last gateway does not answer (%s); ending it", worker.name, err)
                with contextlib.suppress(Exception):
                    await self.launcher.stop(worker, kill=True)
                continue
            worker.status = {**status, "polled": time.monotonic()}
            for session in status["sessions"]:
                self.where[session["session"]] = (worker.name, session["owner"])
                worker.sessions.add(session["session"])
                if session.get("title"):
                    worker.titles.add(session["title"])
            self.workers[worker.name] = worker
            digits = worker.name[1:]
            self._serial = max(self._serial, int(digits) if digits.isdigit() else 0)
            log.warning("adopted worker %s at %s with its %d sessions", worker.name, worker.url, len(worker.sessions))
        self._count_workers()
        self._save()

    def _save(self) -> None:
        if self.record is not None:
            save_fleet(self.record, self.secret, self.launcher.kind,
                       [self.launcher.describe(w) for w in self.workers.values() if w.state == "up"])

    async def stop(self, _app: web.Application | None = None) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self.handing_over:  # the workers and their sessions go on; the record tells the next gateway
            self._save()
            log.warning("handed over: %d workers and %d sessions left running for the next gateway",
                        len(self.up()), len(self.where))
            if self._http is not None:
                await self._http.close()
            return
        await asyncio.gather(*(self._tell(w, "/worker/drain", {"end": True}) for w in self.up()),
                             return_exceptions=True)
        await asyncio.gather(*(self.launcher.stop(w) for w in list(self.workers.values())), return_exceptions=True)
        if self.record is not None:
            with contextlib.suppress(FileNotFoundError):
                self.record.unlink()
        if self._http is not None:
            await self._http.close()

    def up(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.state == "up"]

    def _count_workers(self) -> None:
        self.metrics.workers.set(len(self.up()), state="up")
        self.metrics.workers.set(self._starting, state="starting")

    async def _watch_fleet(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            results = await asyncio.gather(*(self._poll(w) for w in self.up()), return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    log.error("reading a worker's status failed", exc_info=result)

    async def _poll(self, worker: Worker) -> None:
        if self.launcher.exited(worker):
            await self._lose(worker, "exited")
            return
        try:
            status = await self._call(worker, "GET", "/worker/status", timeout=STATUS_TIMEOUT_S)
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            worker.failures += 1
            log.warning("worker %s: no status (%s), %d in a row", worker.name, type(err).__name__, worker.failures)
            if worker.failures >= HUNG_AFTER:
                await self._lose(worker, "hung")
            return
        worker.failures = 0
        if status.get("stalled"):  # a session's pipeline stuck there (a hung inference or GPU call): hung
            await self._lose(worker, "hung (a session's media pipeline stuck)")
            return
        elapsed = POLL_S
        before = {s["session"]: s["frames_out"] for s in worker.status.get("sessions", [])}
        if worker.status.get("polled"):
            elapsed = max(time.monotonic() - worker.status["polled"], 1e-3)
        sent = sum(s["frames_out"] - before.get(s["session"], 0) for s in status["sessions"])
        worker.fps = sent / elapsed
        status["polled"] = time.monotonic()
        worker.status = status
        live = {s["session"] for s in status["sessions"]}
        for sid in worker.sessions - live:  # ended on the worker (hangup, peer gone, end of title)
            self._forget(sid, "ended")
        worker.sessions &= live
        worker.relayed = {s["session"] for s in status["sessions"] if s.get("path") == "relay"}
        for session in status["sessions"]:  # a title is placed at the relay's cost while its sessions are relayed
            if not session.get("title") or not session.get("answered"):
                continue
            if session.get("path") == "relay":
                self.relayed_titles.add(session["title"])
            else:
                self.relayed_titles.discard(session["title"])
        self.session_cost.observe(worker, self.placed_at)
        published = {c["id"] for c in status.get("channels", [])}
        for name in [n for n, w in self.channels.items() if w == worker.name and n not in published]:
            del self.channels[name]  # ended there
        self.channels.update({name: worker.name for name in published})
        publishers = {p for c in status.get("channels", []) for p in c.get("publisher_ids", [])}
        for pid in [p for p, (w, _) in self.publishers.items() if w == worker.name and p not in publishers]:
            del self.publishers[pid]
        labels = {"worker": worker.name}
        self.metrics.worker_sessions.set(len(live), **labels)
        self.metrics.worker_fps.set(round(worker.fps, 1), **labels)
        self.metrics.worker_cpu.set(status["cpu_cores"], **labels)
        self.metrics.worker_rss.set(status["max_rss_mb"], **labels)
        self.metrics.worker_node.set(1, node=str(status.get("node", "")), **labels)

    async def _lose(self, worker: Worker, why: str) -> None:
        """A worker that exited or hangs: its sessions are lost, it is ended, and a replacement starts."""
        if worker.state != "up":
            return
        worker.state = "lost"
        log.error("worker %s %s; its %d sessions are lost: %s", worker.name, why, len(worker.sessions),
                  ", ".join(sorted(worker.sessions)) or "none")
        for sid in worker.sessions:
            self._forget(sid, "lost")
            self.metrics.lost.inc()
        worker.sessions.clear()
        for name in [n for n, w in self.channels.items() if w == worker.name]:
            del self.channels[name]  # its publishers publish again (to another worker)
        for pid in [p for p, (w, _) in self.publishers.items() if w == worker.name]:
            del self.publishers[pid]
        for gauge in (self.metrics.worker_sessions, self.metrics.worker_fps, self.metrics.worker_cpu,
                      self.metrics.worker_rss, self.metrics.worker_node):
            gauge.drop(("worker", worker.name))
        with contextlib.suppress(Exception):
            await self.launcher.stop(worker, kill=True)
        self.workers.pop(worker.name, None)
        self._count_workers()
        self._save()
        if not self.draining:
            try:
                await self._start_one()
            except WorkerFailed as err:
                log.error("no replacement for worker %s: %s", worker.name, err)

    def _forget(self, sid: str, state: str) -> None:
        _, owner = self.where.pop(sid, ("", ""))
        self.placed_at.pop(sid, None)
        self.gone[sid] = (state, owner)
        while len(self.gone) > LOST_KEPT:
            self.gone.popitem(last=False)

    # --- talking to workers -------------------------------------------------------------------------------------

    async def _call(self, worker: Worker, method: str, path: str, body: bytes = b"", owner: str = "gateway",
                    timeout: float = OFFER_TIMEOUT_S) -> Any:
        status, data = await self._forward(worker, method, path, body, owner, timeout)
        if status >= 400:
            raise ValueError(f"worker {worker.name} answered {status} to {path}")
        return json.loads(data)

    async def _forward(self, worker: Worker, method: str, path: str, body: bytes, owner: str,
                       timeout: float = OFFER_TIMEOUT_S, content_type: str = "application/json"
                       ) -> tuple[int, bytes]:
        status, data, _ = await self._exchange(worker, method, path, body, owner, timeout, content_type)
        return status, data

    async def _exchange(self, worker: Worker, method: str, path: str, body: bytes, owner: str,
                        timeout: float = OFFER_TIMEOUT_S, content_type: str = "application/json",
                        passed: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        """A signed request to a worker (with the caller's `passed` headers): its status, body and headers."""
        assert self._http is not None
        headers = {**(passed or {}), **sign(self.secret, method, path, owner, body)}
        if body:
            headers["Content-Type"] = content_type
        began = time.perf_counter()
        async with self._http.request(method, worker.url + path, data=body or None, headers=headers,
                                      timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            data = await response.read()
            route = path.split("/")[2] if path.startswith("/api/") else path.split("/")[1]
            self.metrics.forward_ms.observe((time.perf_counter() - began) * 1e3, route=route)
            return response.status, data, dict(response.headers)

    async def _tell(self, worker: Worker, path: str, body: dict[str, Any]) -> None:
        await self._forward(worker, "POST", path, json.dumps(body).encode(), "gateway", timeout=10.0)

    async def open_session(self, request: web.Request, title: str | None, path: str, body: bytes, content_type: str,
                           session_id: Callable[[bytes, dict[str, str]], str]) -> tuple[int, bytes, dict[str, str]]:
        """Start a session on the best worker with room: `body` sent to `path` there (the session API's create,
        or a WHEP offer); `session_id` reads the new session's id from a 201. The worker's answer, or an ApiError
        (busy, draining, rate limited)."""
        if self.draining:
            raise ApiError(503, "draining", "the server is shutting down and takes no new sessions")
        if len(self.where) + sum(w.placing for w in self.workers.values()) >= self.max_sessions:
            self.metrics.refused.inc(reason="busy")
            raise ApiError(503, "busy", f"the service holds its maximum of {self.max_sessions} sessions")
        candidates = self.place(title)
        if not candidates:
            self.metrics.refused.inc(reason="busy")
            raise ApiError(503, "busy", "every session worker is full")
        if not self.limiter.allow(request[API_KEY]):
            raise ApiError(429, "rate_limited", "too many sessions for this key; try again in a minute")
        owner = self.owner(request)
        relayed = title in self.relayed_titles  # counted at the relay's cost (stream/server/placement.py)
        for worker in candidates:
            worker.placing += 1
            worker.placing_relayed += relayed
            try:
                status, data, headers = await self._exchange(worker, "POST", path, body, owner,
                                                             content_type=content_type)
            except (aiohttp.ClientError, TimeoutError) as err:
                log.warning("worker %s refused a session (%s); trying the next", worker.name, type(err).__name__)
                continue
            finally:
                worker.placing -= 1
                worker.placing_relayed -= relayed
            if status == 503:  # full after all (its status was a second old)
                continue
            if status == 201:
                sid = session_id(data, headers)
                self.where[sid] = (worker.name, owner)
                self.placed_at[sid] = time.monotonic()
                worker.sessions.add(sid)
                if relayed:  # until the worker's status says how it is served
                    worker.relayed.add(sid)
                if title:
                    worker.titles.add(title)
                self.metrics.placed.inc(worker=worker.name)
                log.info("session %s placed on worker %s (%s)", sid, worker.name, title or "camera")
            return status, data, headers
        self.metrics.refused.inc(reason="busy")
        raise ApiError(503, "busy", "every session worker is full")

    def channel_list(self) -> list[dict[str, Any]]:
        """Every worker's live channels, as its last status described them."""
        return [{k: v for k, v in c.items() if k != "publisher_ids"}
                for w in self.up() for c in w.status.get("channels", [])]

    def place(self, title: str | None) -> list[Worker]:
        """The workers with room for a new session, best first (stream/server/placement.py); a viewer of a live
        channel goes to the worker the channel is published to."""
        if title in self.channels:
            worker = self.workers.get(self.channels[title])
            return [worker] if worker is not None and worker.state == "up" else []
        return rank(self.up(), title, self.per_worker, self.session_cost.cores, title in self.relayed_titles)

    async def any_worker(self, method: str, path: str) -> web.Response:
        for worker in self.up():
            try:
                status, data = await self._forward(worker, method, path, b"", "gateway", timeout=10.0)
            except (aiohttp.ClientError, TimeoutError):
                continue
            content_type = "image/jpeg" if path.endswith(".jpg") and status == 200 else "application/json"
            headers = {"Cache-Control": "private, max-age=3600"} if content_type == "image/jpeg" else None
            return web.Response(status=status, body=data, content_type=content_type, headers=headers)
        return error(503, "no_workers", "no session worker is up")

    # --- sessions -----------------------------------------------------------------------------------------------

    def owner(self, request: web.Request) -> str:
        return owner_of(request[API_KEY])

    def session_of(self, request: web.Request) -> Worker:
        sid = request.match_info["sid"]
        placed = self.where.get(sid)
        if placed is not None and (placed[1] == self.owner(request) or self.access.open):
            worker = self.workers.get(placed[0])
            if worker is not None and worker.state == "up":
                return worker
        gone = self.gone.get(sid)
        if gone is not None and (gone[1] == self.owner(request) or self.access.open) and gone[0] == "lost":
            raise ApiError(410, "session_lost", "the worker holding this session failed; start a new one")
        raise ApiError(404, "unknown_session", "no such session for this key")


GATEWAY = web.AppKey("gateway", Gateway)


async def healthz(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    up = len(gateway.up())
    body = {"status": "ok" if up else "no_workers", "workers": up, "wanted": gateway.wanted,
            "sessions": len(gateway.where), "draining": gateway.draining}
    return web.json_response(body, status=200 if up else 503)


async def metrics(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    texts: dict[str, str] = {}

    async def read(worker: Worker) -> None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            status, data = await gateway._forward(worker, "GET", "/worker/metrics", b"", "gateway", timeout=2.0)
            if status == 200:
                texts[worker.name] = data.decode("utf-8", "replace")

    await asyncio.gather(*(read(w) for w in gateway.up()))
    lines = gateway.metrics.render() + merge_metrics(texts)
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")


async def catalogue(request: web.Request) -> web.StreamResponse:
    return await request.app[GATEWAY].any_worker("GET", request.path)


async def titles(request: web.Request) -> web.StreamResponse:
    """A worker's titles, and every worker's live channels (each worker lists only its own)."""
    gateway = request.app[GATEWAY]
    response = await gateway.any_worker("GET", request.path)
    if response.status != 200 or response.body is None:
        return response
    listed = [t for t in json.loads(bytes(response.body)) if not t.get("live")]  # type: ignore[arg-type]
    return web.json_response(listed + gateway.channel_list())


async def create_session(request: web.Request) -> web.StreamResponse:
    body = await json_object(request)
    title = body.get("title") if isinstance(body.get("title"), str) else None
    gateway = request.app[GATEWAY]
    status, data, _ = await gateway.open_session(request, title, "/api/sessions", json.dumps(body).encode(),
                                                 "application/json", _session_id)
    return web.Response(status=status, body=data, content_type="application/json")


def _session_id(data: bytes, _headers: dict[str, str]) -> str:
    return str(json.loads(data)["session"])


async def session_state(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    sid = request.match_info["sid"]
    try:
        worker = gateway.session_of(request)
    except ApiError as err:
        if err.status == 410:
            return web.json_response({"session": sid, "state": "lost",
                                      "message": "the worker holding this session failed"})
        gone = gateway.gone.get(sid)
        if gone is not None and (gone[1] == gateway.owner(request) or gateway.access.open):
            return web.json_response({"session": sid, "state": gone[0]})
        raise
    return web.json_response({"session": sid, "state": "running", "worker": worker.name})


async def offer(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    gateway.session_of(request)  # an unknown session is refused before its body is read
    body = await json_object(request)
    await asyncio.to_thread(checked_offer, body)  # 128 KB of SDP: ms of regexes, off the loop
    worker = gateway.session_of(request)  # it may have gone while the body arrived
    try:
        status, data = await gateway._forward(worker, "POST", request.path, json.dumps(body).encode(),
                                              gateway.owner(request))
    except (aiohttp.ClientError, TimeoutError):
        raise ApiError(502, "worker_unreachable", "the session's worker did not answer") from None
    return web.Response(status=status, body=data, content_type="application/json")


async def delete_session(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    worker = gateway.session_of(request)
    sid = request.match_info["sid"]
    try:
        status, data = await gateway._forward(worker, "DELETE", request.path, b"", gateway.owner(request),
                                              timeout=10.0)
    except (aiohttp.ClientError, TimeoutError):
        raise ApiError(502, "worker_unreachable", "the session's worker did not answer") from None
    if status == 204:
        worker.sessions.discard(sid)
        gateway._forget(sid, "ended")
        return web.Response(status=204)
    return web.Response(status=status, body=data, content_type="application/json")


def build_gateway_app(gateway: Gateway) -> web.Application:
    quiet_parser_rejections()
    app = web.Application(middlewares=[cors_for_players, json_errors, auth], client_max_size=MAX_BODY)
    app[GATEWAY] = gateway
    app[ACCESS] = gateway.access
    app[REQUESTS] = gateway.metrics.requests
    app.on_startup.append(gateway.start)
    app.on_shutdown.append(gateway.stop)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/titles", titles)
    app.router.add_get("/api/casts", catalogue)
    app.router.add_get("/api/casts/{cast}/thumbnail.jpg", catalogue)
    app.router.add_post("/api/sessions", create_session, expect_handler=expect_within_limit)
    app.router.add_get("/api/sessions/{sid}", session_state)
    app.router.add_post("/api/sessions/{sid}/offer", offer, expect_handler=expect_within_limit)
    app.router.add_delete("/api/sessions/{sid}", delete_session)
    add_edge_routes(app, GATEWAY)
    return app


async def run_gateway(gateway: Gateway, host: str, port: int) -> None:
    app = build_gateway_app(gateway)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    stop, drain = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, drain.set)

    def hand_over() -> None:
        gateway.handing_over = True
        stop.set()

    loop.add_signal_handler(signal.SIGHUP, hand_over)
    await asyncio.wait([asyncio.ensure_future(stop.wait()), asyncio.ensure_future(drain.wait())],
                       return_when=asyncio.FIRST_COMPLETED)
    if drain.is_set() and not stop.is_set():
        gateway.draining = True
        log.warning("draining: no new sessions; %d running end within %.0f s", len(gateway.where), gateway.drain_s)
        deadline = time.monotonic() + gateway.drain_s
        while gateway.where and time.monotonic() < deadline and not stop.is_set():
            await asyncio.sleep(0.5)
    await runner.cleanup()  # the gateway's stop ends what still runs, each viewer told
