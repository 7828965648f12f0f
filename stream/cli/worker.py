"""A session worker started from `recast serve`'s options: `python -m stream.cli.worker NAME` (a local worker
process of the gateway; the options come as JSON in its environment, with the fleet's secret) and
`RayWorkerActor` (a worker as a Ray actor). Both load the service as `recast serve` does (`load_service`) and run
stream/server/worker.py's app."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from stream.server.worker import READY


def main(argv: Sequence[str] | None = None) -> int:
    """A local worker process: `python -m stream.cli.worker NAME`; the gateway's options and the fleet's secret
    come in the environment. Prints READY PORT once it serves, and stops on SIGTERM."""
    import signal

    from stream.cli.service_options import event_loop_factory, load_service
    from stream.server.worker import (
        OPTIONS_ENV,
        SECRET_ENV,
        VERBOSE_ENV,
        build_worker_app,
        end_when_orphaned,
        serve_worker,
    )

    args_in = list(sys.argv[1:] if argv is None else argv)
    name = args_in[0] if args_in else "worker"
    secret = os.environ.pop(SECRET_ENV, "")
    if not secret:
        print(f"recast worker {name}: no fleet secret in {SECRET_ENV}", file=sys.stderr)
        return 2
    args = argparse.Namespace(**json.loads(os.environ.pop(OPTIONS_ENV, "{}")))
    verbose = args.verbose or os.environ.get(VERBOSE_ENV) == "1"
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format=f"%(asctime)s %(levelname)s worker={name} %(name)s: %(message)s", stream=sys.stderr)
    from engines.errors import InputError

    try:
        config, titles, casts = load_service(args, behind_gateway=True)
    except InputError as err:  # the gateway's options are the caller's mistake: one line, exit 2, as `recast serve`
        print(f"recast serve: {err}", file=sys.stderr)
        return 2

    async def run() -> None:
        app = build_worker_app(config, titles, casts, secret, name)
        runner, port = await serve_worker(app, args.host, 0)
        print(f"{READY} {port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the terminal that started the gateway closed
        orphan_watch = asyncio.ensure_future(end_when_orphaned(app, stop.set))
        await stop.wait()
        orphan_watch.cancel()
        await runner.cleanup()

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(run())
    return 0


class RayWorkerActor:
    """The body of a Ray session worker: the worker's app in a thread with its own event loop."""

    def __init__(self, name: str, options: dict[str, Any], secret: str, ice_hosts: list[str] | None) -> None:
        self.name, self.options, self.secret, self.ice_hosts = name, options, secret, ice_hosts
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: Any = None

    def start(self) -> str:
        import ray

        from stream.cli.service_options import load_service
        from stream.server.worker import build_worker_app, end_when_orphaned, serve_worker

        node = ray.util.get_node_ip_address()
        os.environ["RECAST_NODE"] = ray.get_runtime_context().get_node_id()
        args = argparse.Namespace(**{**self.options, "host": node})
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
                # a detached actor: once orphaned and idle, it ends its own process (Ray then drops the actor)
                started["orphan_watch"] = asyncio.ensure_future(end_when_orphaned(app, lambda: os._exit(0)))

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


if __name__ == "__main__":
    sys.exit(main())
