"""A session worker: the service's sessions (stream/server/app.py's routes and `Service`) behind the gateway.

A worker serves the same session routes as a single `recast serve` process, but trusts only requests the gateway
signed (stream/server/signing.py): the key that owns a session arrives as the gateway's owner hash, and a request
without a fresh signature, a replayed one, or one signed with another secret is refused with 403. It adds what the
gateway needs to place sessions and watch the fleet:

- `GET /worker/status`: its sessions (id, owner, title, frames sent and dropped, the last frame's latency), its
  capacity, the CPU it used since the last status (in cores) and its memory;
- `GET /worker/metrics`: its Prometheus text, which the gateway's /metrics shows with a `worker` label;
- `POST /worker/drain`: no new sessions; `{"end": true}` also ends the running ones, each viewer told with a
  `state` that says `"ended": true`.

A worker outlives its gateway: its sessions play on, and a gateway started again adopts it (stream/server/fleet.py);
one that hears from no gateway for ORPHANED_AFTER_S ends itself once its last session has ended.

Run as its own process by `python -m stream.cli.worker` (the gateway's local workers) or inside a Ray actor
(stream/cli/worker.py); either way it binds a free port and reports it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from stream.casts.cast import Cast
from stream.media.machine import usable_cores
from stream.server.app import build_app
from stream.server.http import API_KEY, Handler, error
from stream.server.service import SERVICE, ServerConfig, Service
from stream.server.signing import MAX_SKEW_S, BadSignature, verify
from stream.server.titles import Title

log = logging.getLogger(__name__)

OPTIONS_ENV = "RECAST_WORKER_OPTIONS"  # `recast serve`'s options, as JSON, for a local worker process
SECRET_ENV = "RECAST_FLEET_SECRET"  # how a local worker process gets the fleet's secret (never its argv)
VERBOSE_ENV = "RECAST_WORKER_VERBOSE"  # "1": the worker logs at INFO, as `recast -v serve` does
READY = "RECAST_WORKER_READY"  # the line a worker process prints once it serves: READY PORT


class ReplayGuard:
    """Signatures seen within the signing window: a captured request cannot be sent again."""

    def __init__(self, window_s: float = 2 * MAX_SKEW_S, limit: int = 100_000) -> None:
        self.window_s, self.limit = window_s, limit
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_time(self, signature: str) -> bool:
        now = time.monotonic()
        while self._seen and (next(iter(self._seen.values())) < now - self.window_s or len(self._seen) > self.limit):
            self._seen.popitem(last=False)
        if signature in self._seen:
            return False
        self._seen[signature] = now
        return True


class Heard:
    """When the worker last heard from a gateway (a signed request: the gateway reads its status every second)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def silent_s(self) -> float:
        return time.monotonic() - self.last


def gateway_signed(secret: str, heard: Heard | None = None) -> Any:
    """The worker's authorisation: every request but /healthz carries the gateway's signature."""
    replays = ReplayGuard()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/healthz":
            request[API_KEY] = "gateway"
            return await handler(request)
        try:
            body = await asyncio.wait_for(request.read(), 10.0) if request.can_read_body else b""
        except (TimeoutError, ConnectionError, EOFError):
            return error(408, "body_timeout", "the body did not arrive")
        except web.HTTPRequestEntityTooLarge:
            return error(413, "too_large", "the body is too large")
        try:
            owner = verify(secret, request.method, request.path_qs, request.headers, body)
        except BadSignature as err:
            log.warning("refused %s %s: %s", request.method, request.path, err)
            return error(403, "not_signed", "workers take requests from their gateway only")
        if not replays.first_time(request.headers.get("X-Recast-Signature", "")):
            log.warning("refused %s %s: a replayed signature", request.method, request.path)
            return error(403, "not_signed", "a request is signed once")
        request[API_KEY] = owner
        if heard is not None:
            heard.last = time.monotonic()
        return await handler(request)

    return middleware


class Load:
    """The worker's own CPU use between two status requests, in cores."""

    def __init__(self) -> None:
        self._cpu, self._wall = time.process_time(), time.monotonic()

    def cores(self) -> float:
        cpu, wall = time.process_time(), time.monotonic()
        used = (cpu - self._cpu) / max(wall - self._wall, 1e-3)
        self._cpu, self._wall = cpu, wall
        return round(used, 3)


def node_name() -> str:
    """The machine the worker runs on, as its launcher names it (a Ray node id) or its host name."""
    return os.environ.get("RECAST_NODE") or socket.gethostname()


LOAD = web.AppKey("load", Load)
NAME = web.AppKey("worker_name", str)
HEARD = web.AppKey("heard", Heard)
ORPHANED_AFTER_S = 60.0  # no word from a gateway for this long, and no session left: the worker ends itself


async def end_when_orphaned(app: web.Application, end: Callable[[], None], check_s: float = 5.0) -> None:
    """Call `end` once no gateway has been heard from for ORPHANED_AFTER_S and the worker holds no session: a
    gateway that died and was not restarted leaves no worker behind, and its running sessions play to their end."""
    service: Service = app[SERVICE]
    while True:
        await asyncio.sleep(check_s)
        if app[HEARD].silent_s() > ORPHANED_AFTER_S and not service.sessions:
            log.warning("no gateway for %.0f s and no sessions: ending", app[HEARD].silent_s())
            end()
            return


async def status(request: web.Request) -> web.StreamResponse:
    service: Service = request.app[SERVICE]
    sessions = []
    for sid, session in list(service.sessions.items()):
        sessions.append({"session": sid, "owner": session.key, "kind": session.kind,
                         "title": session.title.id if session.title is not None else None,
                         "answered": session.answered,
                         "frames_out": service.metrics.frames_out.value(session=sid),
                         "frames_dropped": service.metrics.frames_dropped.value(session=sid),
                         "latency_ms": round(session.state.latency_ms, 1), "path": session.state.path})
    cast_ids = list(service.casts)
    channels = [{**c.describe(cast_ids), "publisher_ids": [p for p, pub in service.publishers.items()
                                                          if pub.channel is c]}
                for c in service.channels.values()]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return web.json_response({"worker": request.app[NAME], "pid": os.getpid(), "node": node_name(),
                              "sessions": sessions, "channels": channels,
                              "capacity": service.config.max_sessions, "draining": service.draining,
                              "stalled": service.stalled,
                              "cpu_cores": request.app[LOAD].cores(), "node_cores": usable_cores(),
                              "max_rss_mb": round(rss_mb, 1)})


async def worker_metrics(request: web.Request) -> web.StreamResponse:
    service: Service = request.app[SERVICE]
    return web.Response(text=service.metrics.render(), content_type="text/plain", charset="utf-8")


async def drain(request: web.Request) -> web.StreamResponse:
    service: Service = request.app[SERVICE]
    raw = await request.read()  # read (and its signature checked) by the middleware already
    body = json.loads(raw) if raw else {}
    service.draining = True
    if isinstance(body, dict) and body.get("end") is True:
        await service.end_all("shutdown")
    return web.json_response({"sessions": len(service.sessions)})


def build_worker_app(config: ServerConfig, titles: dict[str, Title], casts: Sequence[Cast], secret: str,
                     name: str) -> web.Application:
    heard = Heard()
    app = build_app(config, titles, casts, authorise=gateway_signed(secret, heard))
    app[HEARD] = heard
    app[LOAD] = Load()
    app[NAME] = name
    app.router.add_get("/worker/status", status)
    app.router.add_get("/worker/metrics", worker_metrics)
    app.router.add_post("/worker/drain", drain)
    return app


async def serve_worker(app: web.Application, host: str, port: int = 0) -> tuple[web.AppRunner, int]:
    """Start `app` on host:port (0: a free one); the runner and the port it got."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server: Any = site._server
    return runner, int(server.sockets[0].getsockname()[1])
