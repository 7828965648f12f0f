"""`recast serve`: the playback service started from the command line (stream/cli/service_options.py loads and
checks what it serves): one process (`--workers 0`), or a gateway with local or Ray session workers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from stream.cli.demo_title import cache_dir
from stream.cli.options import UsageError
from stream.cli.service_options import (
    checked_api_keys,
    event_loop_factory,
    load_service,
    publish_keys,
    worker_options,
)

log = logging.getLogger(__name__)


def default_workers(cores: int, max_sessions: int) -> int:
    """`--workers` unless given: WORKERS_PER_CORE a core (stream/server/fleet.py), never more than the sessions the
    service holds."""
    from stream.server.fleet import WORKERS_PER_CORE

    return max(1, min(max_sessions, round(cores * WORKERS_PER_CORE)))


def _serve_with_workers(args: argparse.Namespace) -> int:
    """`recast serve` with workers: the gateway on --host:--port, the workers started by the launcher."""
    from stream.media.machine import usable_cores
    from stream.server.fleet import Launcher, LocalLauncher, WorkerFailed, load_fleet
    from stream.server.gateway import Gateway, run_gateway
    from stream.server.http import Access
    from stream.server.signing import new_secret

    keys = checked_api_keys(args)
    cores = usable_cores()
    count = args.workers if args.workers else default_workers(cores, args.max_sessions)
    record = Path(args.fleet_record) if args.fleet_record else cache_dir() / "fleet" / f"gateway-{args.port}.json"
    previous = load_fleet(record, "ray" if args.ray_address else "local")  # a gateway before this one: adopt its fleet
    secret = previous["secret"] if previous is not None else new_secret()
    options = worker_options(args)
    launcher: Launcher
    if args.ray_address:
        from stream.cli.worker import RayWorkerActor
        from stream.server.fleet import RayLauncher

        launcher = RayLauncher(args.ray_address, options, secret, args.ice_host, RayWorkerActor)
    else:
        launcher = LocalLauncher(options, secret, args.host)
    per_worker = max(1, -(-args.max_sessions // count))
    gateway = Gateway(launcher, secret, count, args.max_sessions, per_worker, Access(keys, publish_keys(args)),
                      args.sessions_per_minute, args.drain_s, record, previous)
    if not keys:
        print(f"recast serve: demo mode, open access without API keys on {args.host} (viewing and publishing "
              "live channels over WHIP)", file=sys.stderr)
    print(f"recast serve: gateway on http://{args.host}:{args.port}/ with {count} {launcher.kind} session workers",
          file=sys.stderr)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(run_gateway(gateway, args.host, args.port))
    except WorkerFailed as err:
        if err.usage:
            raise UsageError("the session workers refused the options (the reason is above)") from None
        raise
    return 0



def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    if args.workers != 0 or args.ray_address:
        return _serve_with_workers(args)
    from stream.server.app import build_app

    config, titles, casts = load_service(args)
    if not config.api_keys:
        print(f"recast serve: demo mode, open access without API keys on {args.host} (viewing and publishing "
              "live channels over WHIP)", file=sys.stderr)
    new_loop = event_loop_factory()
    print(f"recast serve: {len(titles)} titles, {len(casts)} casts on http://{args.host}:{args.port}/",
          file=sys.stderr)
    web.run_app(build_app(config, titles, casts), host=args.host, port=args.port, print=None,
                access_log=None, shutdown_timeout=10, loop=new_loop() if new_loop is not None else None)
    return 0
