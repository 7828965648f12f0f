"""The gateway's session workers and how they are started: local processes (`LocalLauncher`) or Ray actors on a
cluster (`RayLauncher`). Either way a worker is the same program (stream/server/worker.py) on a port of its own,
reached by the gateway over HTTP with signed requests; the launcher only starts, finds and ends it.

Plain Ray actors, not Ray Serve: a session is a long-lived peer connection whose media (UDP) flows between the
viewer and the worker that owns it, so what matters is placing each session on one worker and sending its
signalling there; Serve's HTTP proxy routes requests, not sessions, and carries no UDP. The gateway's own
placement (stream/server/gateway.py) is that session-affinity router, with the room and load it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from stream.server.worker import READY, SECRET_ENV, VERBOSE_ENV

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0  # a worker loads models and casts before it serves


class WorkerFailed(Exception):
    """A worker that did not start; `usage` when it refused the service's options (exit status 2)."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


@dataclass
class Worker:
    """One session worker as the gateway sees it."""

    name: str
    url: str
    handle: Any  # the launcher's: a process or an actor
    state: str = "up"  # up, lost
    sessions: set[str] = field(default_factory=set)
    status: dict[str, Any] = field(default_factory=dict)  # its last /worker/status
    fps: float = 0.0  # frames sent a second over the last status interval, all its sessions
    failures: int = 0  # status requests in a row that failed
    titles: set[str] = field(default_factory=set)  # titles it has played: their file pages are warm there


class Launcher(Protocol):
    kind: str

    async def start(self, name: str) -> Worker: ...

    def exited(self, worker: Worker) -> bool: ...

    async def stop(self, worker: Worker, kill: bool = False) -> None: ...


class LocalLauncher:
    """Workers as child processes of the gateway (`python -m stream.server.worker NAME -- SERVE_ARGS`), each in a
    process group of its own so that a Ctrl-C at the terminal reaches the gateway, which ends them in order."""

    kind = "local"

    def __init__(self, serve_args: list[str], secret: str, host: str) -> None:
        self.serve_args, self.secret, self.host = serve_args, secret, host

    async def start(self, name: str) -> Worker:
        env = {**os.environ, SECRET_ENV: self.secret}
        if logging.getLogger().isEnabledFor(logging.INFO):
            env[VERBOSE_ENV] = "1"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "stream.server.worker", name, "--", *self.serve_args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, env=env, start_new_session=True)
        assert process.stdout is not None
        try:
            port = await asyncio.wait_for(_ready_port(process.stdout), START_TIMEOUT_S)
        except (TimeoutError, WorkerFailed) as err:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise WorkerFailed(f"worker {name} did not start ({err or 'timed out'}; exit {process.returncode})",
                               usage=process.returncode == 2) from None
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "localhost") else self.host
        return Worker(name, f"http://{host}:{port}", process)

    def exited(self, worker: Worker) -> bool:
        return bool(worker.handle.returncode is not None)

    async def stop(self, worker: Worker, kill: bool = False) -> None:
        process = worker.handle
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()


async def _ready_port(stdout: asyncio.StreamReader) -> int:
    while True:
        line = (await stdout.readline()).decode(errors="replace")
        if not line:
            raise WorkerFailed("it exited")
        if line.startswith(READY):
            return int(line.split()[1])


class RayLauncher:
    """Workers as Ray actors (one CPU each, spread over the cluster's nodes). Each actor runs the worker's app on
    its node's address and announces that address as its ICE host (unless the operator gave --ice-host), so media
    flows between the viewer and that node."""

    kind = "ray"

    def __init__(self, address: str, serve_args: list[str], secret: str, ice_hosts: list[str] | None,
                 namespace: str = "recast") -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=address, namespace=namespace, log_to_driver=True)
        self.serve_args, self.secret, self.ice_hosts = serve_args, secret, ice_hosts
        self._actor_class = ray.remote(num_cpus=1, max_restarts=0, scheduling_strategy="SPREAD")(RayWorkerActor)

    async def start(self, name: str) -> Worker:
        actor = self._actor_class.options(name=f"recast-worker-{name}-{os.getpid()}").remote(
            name, self.serve_args, self.secret, self.ice_hosts)
        try:
            url = await asyncio.wait_for(_await_ref(actor.start.remote()), START_TIMEOUT_S)
        except Exception as err:
            import ray

            ray.kill(actor)
            raise WorkerFailed(f"worker {name} did not start on the cluster ({err})") from None
        return Worker(name, str(url), actor)

    def exited(self, worker: Worker) -> bool:
        return False  # a dead actor is found by its failed status requests

    async def stop(self, worker: Worker, kill: bool = False) -> None:
        import ray

        if not kill:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_await_ref(worker.handle.stop.remote()), 10.0)
        with contextlib.suppress(Exception):
            ray.kill(worker.handle)


async def _await_ref(ref: Any) -> Any:
    return await asyncio.wrap_future(ref.future())


class RayWorkerActor:
    """The body of a Ray session worker: the worker's app in a thread with its own event loop."""

    def __init__(self, name: str, serve_args: list[str], secret: str, ice_hosts: list[str] | None) -> None:
        self.name, self.serve_args, self.secret, self.ice_hosts = name, serve_args, secret, ice_hosts
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: Any = None

    def start(self) -> str:
        import ray

        from stream.cli.main import build_parser
        from stream.cli.serve import load_service
        from stream.server.worker import build_worker_app, serve_worker

        node = ray.util.get_node_ip_address()
        os.environ["RECAST_NODE"] = ray.get_runtime_context().get_node_id()
        args = build_parser().parse_args(["serve", *self.serve_args, "--host", node])
        args.ice_host = self.ice_hosts or [node]
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format=f"%(asctime)s %(levelname)s worker={self.name} %(name)s: %(message)s")
        config, titles, casts = load_service(args, behind_gateway=True)
        loop = self._loop = asyncio.new_event_loop()
        started: dict[str, Any] = {}
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)

            async def begin() -> None:
                app = build_worker_app(config, titles, casts, self.secret, self.name)
                started["runner"], started["port"] = await serve_worker(app, node, 0)

            try:
                loop.run_until_complete(begin())
            except BaseException as err:
                started["error"] = err
            ready.set()
            if "error" not in started:
                loop.run_forever()

        threading.Thread(target=run, name=f"worker-{self.name}", daemon=True).start()
        ready.wait()
        if "error" in started:
            raise started["error"]
        self._runner = started["runner"]
        return f"http://{node}:{started['port']}"

    def stop(self) -> None:
        loop, runner = self._loop, self._runner
        if loop is None or runner is None:
            return
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
