"""The gateway's session workers and how they are started: local processes (`LocalLauncher`) or Ray actors on a
cluster (`RayLauncher`). Either way a worker is the same program (stream/server/worker.py) on a port of its own,
reached by the gateway over HTTP with signed requests; the launcher only starts, finds and ends it.

The gateway keeps a record of its fleet (`save_fleet`: the fleet's secret and how to find each worker) so that a
gateway that restarts, after a crash or a hand-over (SIGHUP), adopts the workers that still run, with their sessions:
a gateway restart does not cut running sessions' media.

Plain Ray actors, not Ray Serve: a session is a long-lived peer connection whose media (UDP) flows between the
viewer and the worker that owns it, so what matters is placing each session on one worker and sending its
signalling there; Serve's HTTP proxy routes requests, not sessions, and carries no UDP. The gateway's own
placement (stream/server/gateway.py) is that session-affinity router, with the room and load it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stream.server.worker import OPTIONS_ENV, READY, SECRET_ENV, VERBOSE_ENV

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0  # a worker loads models and casts before it serves
# Workers a core, by default: about the sessions a machine holds, so each session has an interpreter of its own. A
# live session of a 512x512 talking head costs about 0.6 cores, and two sessions in one worker share its GIL and
# event loop: on 2 cores, 3 viewers got 97-99 % of 25 fps with 3 workers against 91-93 % with 2
# (benchmarks/serve_load.py). A Ray actor asks for 1/WORKERS_PER_CORE of a CPU.
WORKERS_PER_CORE = 1.5


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
    placing: int = 0  # offers forwarded to it and not answered yet: they count as sessions when placing the next
    relayed: set[str] = field(default_factory=set)  # its sessions served by the relay (stream/server/relay.py)
    placing_relayed: int = 0  # of the offers on their way, those of a title that is relayed
    status: dict[str, Any] = field(default_factory=dict)  # its last /worker/status
    fps: float = 0.0  # frames sent a second over the last status interval, all its sessions
    failures: int = 0  # status requests in a row that failed
    titles: set[str] = field(default_factory=set)  # titles it has played: their file pages are warm there


class Launcher(Protocol):
    kind: str

    async def start(self, name: str) -> Worker: ...

    def exited(self, worker: Worker) -> bool: ...

    async def stop(self, worker: Worker, kill: bool = False) -> None: ...

    def describe(self, worker: Worker) -> dict[str, Any]: ...

    def adopt(self, record: dict[str, Any]) -> Worker | None: ...


def save_fleet(path: Path, secret: str, kind: str, workers: list[dict[str, Any]]) -> None:
    """The fleet's record, for the next gateway: written whole (a rename) and readable by its owner only, since it
    holds the secret the workers trust."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"version": 1, "kind": kind, "secret": secret, "gateway_pid": os.getpid(), "workers": workers}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(record, file)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_fleet(path: Path, kind: str) -> dict[str, Any] | None:
    """The record a previous gateway left (see save_fleet) for a fleet of this kind, or None: no record, one that
    does not parse, or one of another launcher kind (a warning says why it was set aside)."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("%s: not a fleet record (%s); starting a new fleet", path, err)
        return None
    if not isinstance(record, dict) or record.get("version") != 1 or not isinstance(record.get("secret"), str) \
            or not isinstance(record.get("workers"), list):
        log.warning("%s: not a fleet record of this version; starting a new fleet", path)
        return None
    if record.get("kind") != kind:
        log.warning("%s: a fleet of %s workers, not %s; starting a new fleet", path, record.get("kind"), kind)
        return None
    return record


class AdoptedProcess:
    """A worker process that an earlier gateway started: not this process's child, so it is watched and ended by
    its pid (the part of asyncio's Process that the launcher uses)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    @property
    def returncode(self) -> int | None:
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return 0  # gone; its exit status went to its parent
        return 0 if state in ("Z", "X") else None

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    async def wait(self) -> int:
        while self.returncode is None:
            await asyncio.sleep(0.1)
        return 0


def _worker_process(pid: int, name: str) -> bool:
    """Whether `pid` is a running session worker called `name` (and not another process that got its pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"stream.cli.worker" in argv and name.encode() in argv


class LocalLauncher:
    """Workers as child processes of the gateway (`python -m stream.cli.worker NAME`, with `recast serve`'s options
    in its environment), each in a
    process group of its own so that a Ctrl-C at the terminal reaches the gateway, which ends them in order."""

    kind = "local"

    def __init__(self, options: dict[str, Any], secret: str, host: str) -> None:
        self.options, self.secret, self.host = options, secret, host

    async def start(self, name: str) -> Worker:
        env = {**os.environ, SECRET_ENV: self.secret, OPTIONS_ENV: json.dumps(self.options)}
        if logging.getLogger().isEnabledFor(logging.INFO):
            env[VERBOSE_ENV] = "1"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "stream.cli.worker", name,
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

    def describe(self, worker: Worker) -> dict[str, Any]:
        return {"name": worker.name, "url": worker.url, "pid": worker.handle.pid}

    def adopt(self, record: dict[str, Any]) -> Worker | None:
        pid, name, url = record.get("pid"), record.get("name"), record.get("url")
        if not isinstance(pid, int) or not isinstance(name, str) or not isinstance(url, str):
            return None
        if not _worker_process(pid, name):
            return None
        return Worker(name, url, AdoptedProcess(pid))

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
    """Workers as Ray actors (1/WORKERS_PER_CORE of a CPU each, spread over the cluster's nodes); `actor_body` is
    the actor's class (stream/cli/worker.RayWorkerActor: it loads the service from the command line's options).
    Each actor runs the worker's app on its node's address and announces that address as its ICE host (unless the
    operator gave --ice-host), so media flows between the viewer and that node."""

    kind = "ray"

    def __init__(self, address: str, options: dict[str, Any], secret: str, ice_hosts: list[str] | None,
                 actor_body: type, namespace: str = "recast") -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=address, namespace=namespace, log_to_driver=True)
        self.options, self.secret, self.ice_hosts, self.namespace = options, secret, ice_hosts, namespace
        self._names: dict[str, str] = {}  # worker name -> its actor's name
        self._actor_class: Any = ray.remote(num_cpus=round(1 / WORKERS_PER_CORE, 2), max_restarts=0,
                                            scheduling_strategy="SPREAD")(actor_body)

    async def start(self, name: str) -> Worker:
        # detached: the actor outlives this gateway, for the next one to adopt (it ends itself once orphaned and idle)
        actor_name = f"recast-worker-{name}-{os.getpid()}-{time.monotonic_ns()}"
        actor = self._actor_class.options(name=actor_name, lifetime="detached").remote(
            name, self.options, self.secret, self.ice_hosts)
        try:
            url = await asyncio.wait_for(_await_ref(actor.start.remote()), START_TIMEOUT_S)
        except Exception as err:
            import ray

            ray.kill(actor)
            raise WorkerFailed(f"worker {name} did not start on the cluster ({err})") from None
        self._names[name] = actor_name
        return Worker(name, str(url), actor)

    def exited(self, worker: Worker) -> bool:
        return False  # a dead actor is found by its failed status requests

    def describe(self, worker: Worker) -> dict[str, Any]:
        return {"name": worker.name, "url": worker.url, "actor": self._names[worker.name]}

    def adopt(self, record: dict[str, Any]) -> Worker | None:
        import ray

        actor_name, name, url = record.get("actor"), record.get("name"), record.get("url")
        if not isinstance(actor_name, str) or not isinstance(name, str) or not isinstance(url, str):
            return None
        try:
            actor = ray.get_actor(actor_name, namespace=self.namespace)
        except ValueError:  # no such actor any more
            return None
        self._names[name] = actor_name
        return Worker(name, url, actor)

    async def stop(self, worker: Worker, kill: bool = False) -> None:
        import ray

        if not kill:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_await_ref(worker.handle.stop.remote()), 10.0)
        with contextlib.suppress(Exception):
            ray.kill(worker.handle)


async def _await_ref(ref: Any) -> Any:
    return await asyncio.wrap_future(ref.future())
