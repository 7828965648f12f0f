"""A real aiortc client for the service tests: create a session, negotiate on 127.0.0.1, receive frames, talk on
the control channel."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import aiohttp
from aiohttp import web

from stream.casts.cast import Cast, hopper_cast
from stream.server.app import build_app
from stream.server.ice import restrict_host_candidates
from stream.server.service import ServerConfig
from stream.server.titles import Title


def run_async(fn: Callable[[], Awaitable[None]], timeout: float = 120) -> None:
    """Run a test's async scenario on a fresh event loop, failing it after ``timeout`` seconds."""
    asyncio.run(asyncio.wait_for(fn(), timeout))


@contextlib.asynccontextmanager
async def running_server(config: ServerConfig, titles: dict[str, Title], casts: Sequence[Cast]
                         ) -> AsyncIterator[tuple[str, web.Application]]:
    restrict_host_candidates(["127.0.0.1"])
    app = build_app(config, titles, casts)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        await runner.cleanup()
        restrict_host_candidates(None)


@contextlib.asynccontextmanager
async def serving(titles: dict[str, Title], config: ServerConfig | None = None, casts: Sequence[Cast] | None = None
                  ) -> AsyncIterator[tuple[str, web.Application, aiohttp.ClientSession]]:
    """The server tests' preamble: the service on 127.0.0.1 (open, as `--demo`, unless `config` says otherwise)
    with `titles` and Hopper's cast unless `casts` are given, and an HTTP client: (base URL, app, client)."""
    async with running_server(config or ServerConfig(demo=True), titles, [hopper_cast()] if casts is None else casts
                              ) as (base, app), aiohttp.ClientSession() as http:
        yield base, app, http
