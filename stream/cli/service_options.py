"""What `recast serve` serves, loaded and checked from its options: API keys, titles, casts and the server's
configuration. The single process, the gateway and every session worker (stream/cli/worker.py) load it the same
way; a worker gets the gateway's options as JSON (`worker_options`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.casts.cast import default_casts
from stream.casts.registry import CastRegistry, default_registry
from stream.cli.casts import casts_for
from stream.cli.options import UsageError, demo_location
from stream.server.encoding import resolve_encoding

if TYPE_CHECKING:
    from stream.casts.cast import Cast
    from stream.server.service import ServerConfig
    from stream.server.titles import Title

log = logging.getLogger(__name__)


MAX_KEYS_FILE = 1 << 20  # bytes: a million of them is some 30,000 keys


def _keys_from_file(path: Path) -> list[str]:
    """One API key a line, from a UTF-8 text file of at most MAX_KEYS_FILE bytes (read no further: a device such as
    /dev/zero is refused, not read for ever)."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_KEYS_FILE + 1)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the API keys ({exc.strerror or exc})") from exc
    if len(raw) > MAX_KEYS_FILE:
        raise UsageError(f"{path}: over {MAX_KEYS_FILE} bytes; not an API keys file (one key a line)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text; an API keys file holds one key a line") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _api_keys(args: argparse.Namespace) -> tuple[str, ...]:
    import os

    keys = [k.strip() for k in os.environ.get("RECAST_API_KEYS", "").split(",") if k.strip()]
    if args.api_keys_file:
        keys += _keys_from_file(Path(args.api_keys_file))
    if any(len(k) < 16 for k in keys):
        raise UsageError("API keys must be at least 16 characters")
    return tuple(keys)


def publish_keys(args: argparse.Namespace) -> tuple[str, ...]:
    """The keys that may publish live channels (WHIP): RECAST_PUBLISH_KEYS and --publish-keys-file."""
    import os

    keys = [k.strip() for k in os.environ.get("RECAST_PUBLISH_KEYS", "").split(",") if k.strip()]
    if getattr(args, "publish_keys_file", None):
        keys += _keys_from_file(Path(args.publish_keys_file))
    if any(len(k) < 16 for k in keys):
        raise UsageError("publish keys must be at least 16 characters")
    return tuple(keys)


def checked_api_keys(args: argparse.Namespace) -> tuple[str, ...]:
    """The API keys, and the rule that only `--demo` on a loopback address runs without any."""
    keys = _api_keys(args)
    loopback = args.host in ("127.0.0.1", "::1", "localhost")
    if not keys and not (args.demo and loopback):
        raise UsageError("no API keys: set RECAST_API_KEYS or --api-keys-file (only --demo on 127.0.0.1 runs open)")
    return keys


def load_service(args: argparse.Namespace, behind_gateway: bool = False
                 ) -> tuple[ServerConfig, dict[str, Title], list[Cast]]:
    """What `recast serve` serves, checked: its configuration, titles and casts. A session worker loads the same from
    the same options, `behind_gateway`: the gateway checks the keys, the worker its signature."""
    from stream.render.options import RenderOptions
    from stream.server.ice import restrict_host_candidates
    from stream.server.service import ServerConfig
    from stream.server.titles import scan_titles

    keys = _api_keys(args) if behind_gateway else checked_api_keys(args)
    titles_dir = Path(args.titles) if args.titles else None
    if titles_dir is not None and not titles_dir.is_dir():
        raise UsageError(f"{titles_dir}: not a folder")
    cache, directions = None, []
    if args.cache:
        from engines.cache import TitleCache

        if not Path(args.cache).is_dir():
            raise UsageError(f"{args.cache}: not a folder (the title cache)")
        cache = TitleCache(args.cache)
    if args.directions:
        from engines.directions import list_directions

        skipped: list[str] = []
        directions = list_directions(args.directions, skipped)
        for problem in skipped:
            log.warning("%s; skipped", problem)
    titles = scan_titles(titles_dir, Path(demo_location()) if args.demo else None, cache, directions, args.device,
                         args.runtime, loop=args.loop)
    if not titles:
        raise UsageError("no titles to serve (give --titles DIR, --cache DIR or --demo)")
    registry = CastRegistry(args.casts or default_registry())
    problems: list[str] = []
    casts = [*default_casts(args.demo), *registry.load_all(problems), *casts_for(args.cast, registry)]
    for problem in problems:
        log.warning("%s; skipped", problem)
        print(f"recast serve: {problem}", file=sys.stderr)
    ids = [c.cast_id for c in casts]
    if len(set(ids)) < len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise UsageError(f"cast ids {twice} are given twice (the built-in casts, the registry in {registry.folder} "
                         "and --cast must not share ids)")
    restrict_host_candidates(args.ice_host)
    config = ServerConfig(host=args.host, port=args.port, titles_dir=titles_dir, demo=args.demo, api_keys=keys,
                          publish_keys=publish_keys(args),
                          max_sessions=args.max_sessions, sessions_per_minute=args.sessions_per_minute,
                          options=RenderOptions(detect_interval=args.detect_interval, detector=args.detector,
                                                occlusion=not args.no_occlusion), device=args.device,
                          video_encoder=resolve_encoding(getattr(args, "video_encoder", "auto")))
    return config, titles, casts



def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop every `recast serve` process runs on (the single process, the gateway, a local worker):
    uvloop's where it is installed, else None (asyncio's own). A factory, never a process-wide policy, so a test
    process that starts a server keeps its own loops afterwards."""
    try:
        import uvloop
    except ImportError:
        log.info("uvloop not installed; using the default asyncio loop")
        return None
    return uvloop.new_event_loop


def worker_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options a session worker loads the service from (JSON-safe: strings, numbers, lists, None)."""
    return {k: v for k, v in vars(args).items() if isinstance(v, str | int | float | bool | list | None)}
