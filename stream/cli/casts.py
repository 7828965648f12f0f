"""`recast casts`: the cast registry (stream/casts/registry.py). `add` checks a portrait (one face, frontal
enough, large enough, sharp enough, eyes visible; a clear reason otherwise) and prepares it once; `list` and
`remove`.
`recast serve` plays every registered cast; `render --cast ID` takes one by its id."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stream.casts.cast import Cast, CastKind, cast_from_file, read_image
from stream.casts.registry import CastRegistry, RegistryError, check_cast_id, check_source_note, default_registry
from stream.cli.options import add_detector_option


def add_casts_commands(sub: Any) -> None:
    casts = sub.add_parser("casts", help="the cast registry: add (check and prepare a portrait), list, remove")
    csub = casts.add_subparsers(dest="casts_command", required=True)
    add = csub.add_parser("add", help="check a cast portrait and prepare it once")
    add.add_argument("image", help="the portrait (JPEG, PNG, WebP, ...; RGB, one face)")
    add.add_argument("--kind", required=True, choices=("synthetic", "consented"),
                     help="synthetic: generated; consented: a real person who agreed (or a public-domain portrait)")
    add.add_argument("--source", required=True, metavar="NOTE",
                     help="where the portrait comes from: who consented, or what generated it (one line)")
    add.add_argument("--id", help="the cast's id (default: the file's name without its suffix)")
    add.add_argument("--fomm", metavar="CKPT", help="a FOMM checkpoint (vox-256): `recast serve` animates this cast "
                     "with it instead of the warp recaster")
    add.add_argument("--replace", action="store_true", help="replace a cast registered with the same id")
    for p in (add, *(csub.add_parser(n, help=h) for n, h in (("list", "list the registered casts"),
                                                             ("remove", "remove a registered cast")))):
        p.add_argument("--casts", metavar="DIR", help=f"the registry (default: $RECAST_CASTS or {default_registry()})")
    add_detector_option(add)
    csub.choices["list"].add_argument("--json", action="store_true", help="print the entries as JSON")
    csub.choices["remove"].add_argument("id", help="the cast's id")


def registry_of(args: argparse.Namespace) -> CastRegistry:
    return CastRegistry(args.casts or default_registry())


def cmd_casts(args: argparse.Namespace) -> int:
    registry = registry_of(args)
    if args.casts_command == "add":
        return _add(args, registry)
    if args.casts_command == "remove":
        registry.remove(check_cast_id(args.id))
        print(f"{registry.folder}: cast {args.id!r} removed", file=sys.stderr)
        return 0
    entries: list[dict[str, Any]] = []
    for cast_id in registry.ids():
        try:
            entry = registry.entry(cast_id)
            entries.append({k: entry.get(k) for k in ("id", "kind", "source", "added", "fomm")})
        except RegistryError as exc:
            entries.append({"id": cast_id, "problem": str(exc)})
    if args.json:
        print(json.dumps(entries, indent=1))
        return 0
    for e in entries:
        fomm = f"  fomm {Path(e['fomm']['path']).name}" if e.get("fomm") else ""
        print(f"{e['id']}: {e['problem']}" if "problem" in e else f"{e['id']}  {e['kind']}  {e['source']}{fomm}")
    if not entries:
        print(f"{registry.folder}: no casts registered", file=sys.stderr)
    return 0


def _add(args: argparse.Namespace, registry: CastRegistry) -> int:
    from stream.casts.preparation import registered

    path = Path(args.image)
    cast_id = args.id or path.stem
    registry.check_free(cast_id, args.replace)  # before the work of preparing it
    note = check_source_note(args.source)
    fomm, fomm_sha = None, None
    if args.fomm:
        fomm = Path(args.fomm).resolve()
        fomm_sha = _check_fomm(fomm)
    kind: CastKind = args.kind
    ready = registered(Cast(cast_id, kind, note, read_image(path)), args.detector, str(path), fomm)
    folder = registry.add(ready, fomm_sha, replace_existing=args.replace)
    print(f"{folder}: cast {cast_id!r} ({kind}) checked and prepared" + (f", animated by {fomm.name}" if fomm else ""),
          file=sys.stderr)
    return 0


def _check_fomm(path: Path) -> str:
    """The checkpoint opens as FOMM (keys and shapes checked) now, not at the first viewer; its sha256."""
    from engines.checkpoints import open_checkpoint

    if not path.is_file():
        raise RegistryError(f"{path}: no such FOMM checkpoint")
    return open_checkpoint(path, "fomm").sha256


def casts_for(names: Sequence[str], registry: CastRegistry) -> list[Cast]:
    """The casts named on the command line: an image file, or the id of a registered cast."""
    casts = []
    for name in names:
        if not Path(name).exists() and name in registry:
            casts.append(registry.load(name))
        else:
            casts.append(cast_from_file(name))
    return casts


CASTS_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"casts": cmd_casts}
