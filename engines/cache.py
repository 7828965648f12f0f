"""The title cache of DESIGN.md 3.6: what a bake leaves behind for playback.

    CACHE/titles/ID/manifest.json   schema, title id, source sha256, frame count, fps, tool versions, what was
                                    baked (stages with their keys), sha256 of every file below
    CACHE/titles/ID/tracks.npz      per frame and track: box, landmarks, raw_quad, quad, mask_outline; cuts
    CACHE/titles/ID/pivots/*.npy    per track, per frame W+ latent (a StyleGAN bake)
    CACHE/titles/ID/generator/...   tuned generator: .safetensors, .onnx, .plan
    CACHE/titles/ID/fomm/*.npz      per track, the actor's keypoints (a FOMM bake)
    CACHE/titles/ID/stitched/*.npz  per track, the stitched crops of the bake-time edits
    CACHE/titles/ID/renditions/     the title encoded for the relay: NAME.h264 / audio.opus with NAME.index.npz

A bake is a chain of stages; each stage has a key (a sha256 over everything that changes its result: the source,
the models, the options, the versions, and the keys of the stages it reads). A stage whose key matches and whose
files all verify is a cache hit. Every file is written to a temporary name, hashed and renamed; the manifest is
rewritten the same way after each stage, so a killed bake leaves either the old state or the new one (and
temporary files, removed by the next holder of the title's lock). A file whose
sha256 does not match the manifest is reported (a warning naming it) and its stage is rebuilt; it is never used.
Engines (``generator/``, ``fomm/``) are the big, rebuildable part: over the size limit, the least recently used
title's engines are evicted first and their stages marked as not baked.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engines.errors import InputError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
TITLE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ENGINE_FOLDERS = ("generator", "fomm", "stitched")  # evictable: rebuilt by the next bake


class CacheError(InputError):
    """A cache entry that cannot be used; str() names the file and the problem."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_path(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def stage_key(**parts: Any) -> str:
    """A stage key: sha256 of the canonical JSON of everything that changes the stage's result."""
    return sha256_bytes(json.dumps(parts, sort_keys=True, default=str).encode())


def tool_versions() -> dict[str, str]:
    """Versions that change baked results (recorded in the manifest and folded into keys)."""
    from importlib import metadata

    out = {"schema": str(SCHEMA_VERSION)}
    for name in ("recast", "torch", "numpy", "dlib-bin", "av", "onnxruntime"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


@dataclass
class Stage:
    name: str
    key: str
    files: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class TitleEntry:
    """One title's folder in the cache. Not thread-safe; `locked()` keeps two bakes of one title apart."""

    def __init__(self, cache: TitleCache, title_id: str) -> None:
        if not TITLE_ID.match(title_id):
            raise CacheError(f"{title_id[:80]!r}: not a valid title id (letters, digits, '.', '_', '-'; "
                             "64 at most; no path separators)")
        self.cache, self.id = cache, title_id
        self.folder = cache.root / "titles" / title_id
        self.manifest_path = self.folder / "manifest.json"
        self.manifest = self._read_manifest()
        self._held = False
        # rel -> (sha256, size, mtime) of files already hashed: playback asks for the same files per face per frame,
        # and hashing a generator costs tens of milliseconds; a file that changes on disk is hashed again
        self._checked: dict[str, tuple[str, int, int]] = {}

    # --- manifest ------------------------------------------------------------------------------------------

    def _empty(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "title": self.id, "source_sha256": None, "frame_count": None,
                "fps": None, "versions": tool_versions(), "baked": [], "stages": {}, "files": {},
                "last_used": 0.0}

    def _read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return self._empty()
        try:
            data = json.loads(self.manifest_path.read_text())
            if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION or data.get("title") != self.id:
                raise ValueError(f"schema {data.get('schema') if isinstance(data, dict) else None!r}")
            for key in ("stages", "files"):
                if not isinstance(data.get(key), dict):
                    raise ValueError(f"no {key!r} table")
            return data
        except (OSError, ValueError, RecursionError) as err:
            log.warning("%s: unreadable manifest (%s); the entry is rebuilt", self.manifest_path, err)
            return self._empty()

    def save_manifest(self) -> None:
        self.manifest["baked"] = sorted(self.manifest["stages"])
        self.write_bytes("manifest.json", json.dumps(self.manifest, indent=1, sort_keys=True).encode(),
                         record=False)

    def describe(self, **fields: Any) -> None:
        """Set top-level manifest fields (source_sha256, frame_count, fps, source, ...)."""
        self.manifest.update(fields)

    def touch(self) -> None:
        """Record a use (for LRU eviction). Never waits for another process's bake of the title, and never
        writes over the manifest it is changing: while one holds the lock, that bake's own record stands."""
        with self.locked(wait=False) as held:
            if held:
                self.manifest["last_used"] = time.time()
                self.save_manifest()

    # --- files -----------------------------------------------------------------------------------------------

    def path(self, rel: str) -> Path:
        target = (self.folder / rel).resolve()
        if self.folder.resolve() not in target.parents:
            raise CacheError(f"{rel!r}: outside the title's folder")
        return target

    def write_with(self, rel: str, writer: Callable[[Path], object], record: bool = True) -> str:
        """Atomic write through `writer(tmp_path)`; returns (and records) the file's sha256."""
        target = self.path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            writer(tmp)
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
            digest = sha256_path(tmp)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        if record:
            self.manifest["files"][rel] = digest
        return digest

    def write_bytes(self, rel: str, data: bytes, record: bool = True) -> str:
        return self.write_with(rel, lambda p: p.write_bytes(data), record=record)

    def verified(self, rel: str) -> Path:
        """The file's path once its sha256 matches the manifest; raises CacheError naming it otherwise. A file is
        hashed once per entry (again only if its size or modification time changes)."""
        expected = self.manifest["files"].get(rel)
        path = self.path(rel)
        if expected is None:
            raise CacheError(f"{path}: not recorded in the manifest")
        try:
            found = path.stat()  # one stat: this runs per face per frame during playback
        except OSError:
            found = None
        if found is None or not stat.S_ISREG(found.st_mode):
            raise CacheError(f"{path}: missing")
        seen = (expected, found.st_size, found.st_mtime_ns)
        if self._checked.get(rel) == seen:
            return path
        actual = sha256_path(path)
        if actual != expected:
            raise CacheError(f"{path}: checksum mismatch (sha256 {actual[:12]}..., manifest {expected[:12]}...)")
        self._checked[rel] = seen
        return path

    def input_sha256(self, path: Path) -> str:
        """The sha256 of an input of the bake (the source, a checkpoint), remembered in the manifest with the file's
        size and modification time: a second bake of unchanged inputs reads no byte of them (as `make` trusts
        times), and a file rewritten since is hashed again."""
        path = path.resolve()
        found = path.stat()
        memo = self.manifest.setdefault("inputs", {})
        seen = memo.get(str(path))
        if isinstance(seen, list) and seen[:2] == [found.st_size, found.st_mtime_ns]:
            return str(seen[2])
        digest = sha256_path(path)
        memo[str(path)] = [found.st_size, found.st_mtime_ns, digest]
        return digest

    # --- stages ---------------------------------------------------------------------------------------------

    def stage(self, name: str) -> Stage | None:
        data = self.manifest["stages"].get(name)
        return Stage(name=name, **data) if isinstance(data, dict) else None

    def generator_rel(self, track_id: int) -> str:
        """The tuned generator a track plays with: its own (a per-track PTI bake) or the title's."""
        stage = self.stage("pti")
        if stage is None:
            raise CacheError(f"{self.folder}: no tuned generator (bake with --generator and --encoder)")
        per_track = f"generator/track_{track_id}.safetensors"
        return per_track if per_track in stage.files else "generator/title.safetensors"

    def problems(self, name: str) -> list[str]:
        """What is wrong with a recorded stage's files (empty when they all verify)."""
        stage = self.stage(name)
        if stage is None:
            return [f"{self.folder}: stage {name!r} not baked"]
        out = []
        for rel in stage.files:
            try:
                self.verified(rel)
            except CacheError as err:
                out.append(str(err))
        return out

    def is_done(self, name: str, key: str) -> bool:
        """A cache hit: the stage ran with this key and every file it wrote verifies. A corrupted or partial
        stage is reported and dropped, so the caller rebuilds it."""
        stage = self.stage(name)
        if stage is None or stage.key != key:
            return False
        problems = self.problems(name)
        if problems:
            for problem in problems:
                log.warning("cache: %s; rebuilding stage %r", problem, name)
            self.forget(name)
            return False
        return True

    def complete(self, name: str, key: str, files: list[str], info: dict[str, Any] | None = None,
                 seconds: float = 0.0) -> None:
        missing = [rel for rel in files if rel not in self.manifest["files"]]
        if missing:
            raise CacheError(f"{self.folder}: stage {name!r} names files it never wrote: {missing}")
        self.manifest["stages"][name] = {"key": key, "files": sorted(files), "info": info or {},
                                         "seconds": round(seconds, 3)}
        self.manifest["versions"] = tool_versions()  # of the bake, not of a later player
        self.save_manifest()

    def forget(self, name: str, remove_files: bool = True) -> None:
        stage = self.manifest["stages"].pop(name, None)
        if stage and remove_files:
            for rel in stage["files"]:
                self.manifest["files"].pop(rel, None)
                self.path(rel).unlink(missing_ok=True)
        self.save_manifest()

    def engine_bytes(self) -> int:
        return sum(f.stat().st_size for folder in ENGINE_FOLDERS if (self.folder / folder).is_dir()
                   for f in (self.folder / folder).rglob("*") if f.is_file())

    def evict_engines(self) -> int:
        """Drop this title's engines (and the stages that wrote them); returns the bytes freed."""
        freed = self.engine_bytes()
        for name, stage in list(self.manifest["stages"].items()):
            if any(rel.split("/", 1)[0] in ENGINE_FOLDERS for rel in stage["files"]):
                self.forget(name)
        for folder in ENGINE_FOLDERS:
            shutil.rmtree(self.folder / folder, ignore_errors=True)
        self.save_manifest()
        return freed

    @contextlib.contextmanager
    def locked(self, wait: bool = True) -> Iterator[bool]:
        """An exclusive lock on the title (another bake of it waits); reloads the manifest once held. Yields
        whether the lock is held: False only with `wait=False` while another process holds it. Re-entrant."""
        if self._held:
            yield True
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / ".lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            self._held = True
            try:
                self.manifest = self._read_manifest()
                self._remove_leftovers()
                yield True
            finally:
                self._held = False
                fcntl.flock(handle, fcntl.LOCK_UN)


    def _remove_leftovers(self) -> None:
        """The temporary files of a writer that was killed (every writer holds the lock, so none is writing)."""
        for leftover in self.folder.rglob(".*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()
                log.info("%s: removed what a killed bake left", leftover)


class TitleCache:
    """The cache root. `limit_bytes` bounds the engines' total size (None: unbounded)."""

    def __init__(self, root: str | Path, limit_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.limit_bytes = limit_bytes

    def entry(self, title_id: str) -> TitleEntry:
        return TitleEntry(self, title_id)

    def title_ids(self) -> list[str]:
        folder = self.root / "titles"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if TITLE_ID.match(p.name) and (p / "manifest.json").exists())

    def engine_bytes(self) -> int:
        return sum(self.entry(t).engine_bytes() for t in self.title_ids())

    def evict(self, keep: str | None = None) -> list[str]:
        """Evict engines, least recently used title first, until under the limit; never the `keep` title."""
        if self.limit_bytes is None:
            return []
        entries = sorted((self.entry(t) for t in self.title_ids() if t != keep),
                         key=lambda e: float(e.manifest.get("last_used", 0.0)))
        total = self.engine_bytes()
        evicted = []
        for entry in entries:
            if total <= self.limit_bytes:
                break
            size = entry.engine_bytes()
            if size == 0:
                continue
            with entry.locked():
                total -= entry.evict_engines()
            evicted.append(entry.id)
            log.info("cache: evicted the engines of %s (%d bytes; limit %d)", entry.id, size, self.limit_bytes)
        return evicted
