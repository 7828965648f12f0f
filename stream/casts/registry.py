"""The cast registry (`recast casts add`): each checked cast in a folder of its own, prepared once.

    CASTS/ID/cast.json     id, kind, source note, when added, the detector whose landmark model found its 68
                           points, those points in the portrait and in the prepared texture, the portrait's
                           468-point mesh (mediapipe), the FOMM checkpoint it plays with (path and sha256), the
                           sha256 of the files below
    CASTS/ID/portrait.png  the portrait's pixels as read (RGB)
    CASTS/ID/texture.png   the prepared texture: the aligned face, its hair left out (alpha 0 there)

A cast is written to a temporary folder and renamed into place, so a reader sees the whole cast or none of it.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engines.cache import sha256_path
from engines.errors import InputError
from stream.casts.cast import Cast, Prepared

log = logging.getLogger(__name__)
CAST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")
MAX_SOURCE_NOTE = 500
REGISTRY_VERSION = 1
CAST_FILES = ("portrait.png", "texture.png")  # the files of a cast's folder that its entry names and hashes
MAX_ENTRY_BYTES = 1 << 20  # a cast.json is about 30 KB (its mesh's 468 points)
MAX_CAST_FILE_BYTES = 256 << 20  # a portrait of MAX_CAST_PIXELS as PNG is well under this
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# the version of a cast texture's preparation (casts/preparation.py, casts/texture.py), stored with each entry: a
# texture made by an older one is made again from the portrait and its checked points at load. Raise it whenever
# a change to the preparation changes a texture's pixels.
TEXTURE_VERSION = 6


class RegistryError(InputError):
    """A cast registry entry that cannot be used or written; the message names the file."""


def default_registry() -> Path:
    """Where `recast casts add` writes and `recast serve` reads: ``$RECAST_CASTS``, else
    ``$XDG_DATA_HOME/recast/casts`` (``~/.local/share/recast/casts``)."""
    if os.environ.get("RECAST_CASTS"):
        return Path(os.environ["RECAST_CASTS"])
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "recast" / "casts"


RESERVED_IDS = ("actor", "collins", "hopper")  # a baked title's own cast, and the built-in casts


def check_cast_id(cast_id: str) -> str:
    """`cast_id` if a registered cast may take it, else RegistryError: not a safe folder name, or one `recast serve`
    already gives another cast (it would refuse to start with both)."""
    if not CAST_ID.match(cast_id) or cast_id.lower() in RESERVED_IDS:
        raise RegistryError(f"cast id {cast_id!r}: use 1-48 letters, digits, '_', '-' or '.', starting with a letter "
                            "or digit (and not 'actor', a baked title's own, nor 'collins' or 'hopper', the "
                            "built-in casts)")
    return cast_id


def check_source_note(note: str) -> str:
    note = note.strip()
    if not note or len(note) > MAX_SOURCE_NOTE or any(ch in note for ch in "\r\n\x00"):
        raise RegistryError(f"--source: one line of 1-{MAX_SOURCE_NOTE} characters saying where the portrait comes "
                            "from (who consented, or what generated it)")
    return note


class CastRegistry:
    """The registered casts in a folder, one sub-folder each (see the module's docstring)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def ids(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.name for p in self.folder.iterdir() if (p / "cast.json").is_file() and CAST_ID.match(p.name))

    def __contains__(self, cast_id: str) -> bool:
        return (self.folder / cast_id / "cast.json").is_file()

    def check_free(self, cast_id: str, replace_existing: bool = False) -> None:
        """RegistryError unless `cast_id` is a valid id not registered yet (or one to be replaced)."""
        check_cast_id(cast_id)
        if (self.folder / cast_id).exists() and not replace_existing:
            raise RegistryError(f"{self.folder / cast_id}: a cast {cast_id!r} is registered already (--replace to "
                                "replace it, or --id to name this one)")

    def add(self, cast: Cast, fomm_sha256: str | None = None, replace_existing: bool = False) -> Path:
        """Write a checked and prepared cast (``cast.prepared`` set); its folder."""
        self.check_free(cast.cast_id, replace_existing)
        if cast.prepared is None:
            raise ValueError("a cast is registered once checked and prepared")
        final = self.folder / cast.cast_id
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f".{cast.cast_id}.", dir=self.folder))
        except OSError as exc:
            raise RegistryError(f"{self.folder}: cannot write the cast registry there ({exc.strerror or exc})") from exc
        work.chmod(0o755)  # mkdtemp's folder is the owner's only; a registry is read by the service's user too
        try:
            Image.fromarray(cast.image).save(work / "portrait.png")
            Image.fromarray(cast.prepared.rgba, "RGBA").save(work / "texture.png")
            entry = {
                "version": REGISTRY_VERSION, "texture": TEXTURE_VERSION, "id": cast.cast_id, "kind": cast.kind,
                "source": cast.source,
                "added": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "detector": cast.prepared.detector,
                "landmarks": np.round(cast.prepared.landmarks, 3).tolist(),
                "texture_points": np.round(cast.prepared.points, 3).tolist(),
                "mesh": None if cast.prepared.mesh is None else np.round(cast.prepared.mesh, 2).tolist(),
                "fomm": None if cast.fomm is None else {"path": str(cast.fomm), "sha256": fomm_sha256},
                "files": {name: sha256_path(work / name) for name in CAST_FILES},
            }
            (work / "cast.json").write_text(json.dumps(entry, indent=1))
            old = None
            if final.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{cast.cast_id}.old.", dir=self.folder))
                os.replace(final, old / "cast")
            os.replace(work, final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
        return final

    def remove(self, cast_id: str) -> None:
        folder = self.folder / cast_id
        if not CAST_ID.match(cast_id) or cast_id not in self:
            raise RegistryError(f"{self.folder}: no cast {cast_id!r} registered (it has {self.ids()})")
        gone = Path(tempfile.mkdtemp(prefix=f".{cast_id}.gone.", dir=self.folder))
        os.replace(folder, gone / "cast")
        shutil.rmtree(gone, ignore_errors=True)

    def entry(self, cast_id: str) -> dict[str, Any]:
        """A cast's `cast.json`, read within MAX_ENTRY_BYTES and checked field by field; RegistryError naming the
        file and what is wrong otherwise (a damaged entry never stops the registry's other casts)."""
        path = self.folder / cast_id / "cast.json"
        try:
            with path.open("rb") as file:
                if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                    raise RegistryError(f"{path}: not a regular file")
                raw = file.read(MAX_ENTRY_BYTES + 1)
        except FileNotFoundError:
            raise RegistryError(f"{self.folder}: no cast {cast_id!r} registered (it has {self.ids()})") from None
        except OSError as exc:
            raise RegistryError(f"{path}: unreadable ({exc.strerror or exc})") from exc
        if len(raw) > MAX_ENTRY_BYTES:
            raise RegistryError(f"{path}: over {MAX_ENTRY_BYTES} bytes; not a cast entry")
        try:
            entry = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested deeper than Python parses
            raise RegistryError(f"{path}: unreadable ({type(exc).__name__})") from None
        if not isinstance(entry, dict) or entry.get("version") != REGISTRY_VERSION or entry.get("id") != cast_id:
            raise RegistryError(f"{path}: not a version-{REGISTRY_VERSION} entry for cast {cast_id!r}")
        problem = _entry_problem(entry)
        if problem:
            raise RegistryError(f"{path}: a damaged entry ({problem})")
        return entry

    def load(self, cast_id: str, problems: list[str] | None = None) -> Cast:
        """A registered cast with its checked landmarks and prepared texture, each file checked against its
        sha256; RegistryError naming the file otherwise. A FOMM checkpoint that is gone or changed since the cast
        was added is left out (the cast plays with the warp recaster) and said in `problems`. A texture made by an
        older preparation than this version's is marked so, and made again from the portrait and its checked
        landmarks when the cast is prepared (`add --replace` stores the new one)."""
        entry = self.entry(cast_id)
        folder = self.folder / cast_id
        try:
            for name, digest in entry["files"].items():
                if _file_digest(folder / name) != digest:
                    raise RegistryError(f"{folder / name}: does not match its sha256 in cast.json (changed or "
                                        "damaged); add the cast again")
            with Image.open(folder / "portrait.png") as im:
                image = np.array(im.convert("RGB"))
            with Image.open(folder / "texture.png") as im:
                rgba = np.array(im.convert("RGBA"))
            landmarks = np.asarray(entry["landmarks"], np.float64).reshape(68, 2)
            points = np.asarray(entry["texture_points"], np.float64).reshape(68, 2)
            mesh = None if entry.get("mesh") is None else np.asarray(entry["mesh"], np.float64).reshape(468, 2)
            kind, source, detector = entry["kind"], check_source_note(entry["source"]), str(entry["detector"])
            current = int(entry.get("texture", 1)) >= TEXTURE_VERSION
            fomm = self._fomm(cast_id, entry["fomm"], problems) if entry.get("fomm") else None
        except RegistryError:
            raise
        except (OSError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RegistryError(f"{folder / 'cast.json'}: a damaged entry ({type(exc).__name__}: {exc})") from exc
        if kind not in ("synthetic", "consented"):
            raise RegistryError(f"{folder / 'cast.json'}: kind {kind!r} is neither synthetic nor consented")
        if not current:
            log.info("cast %s: its texture was prepared by an older version; it is prepared again (casts add "
                     "--replace stores it)", cast_id)
        return Cast(cast_id, kind, source, image, Prepared(detector, landmarks, rgba, points, mesh, current), fomm)

    @staticmethod
    def _fomm(cast_id: str, fomm: dict[str, str], problems: list[str] | None) -> Path | None:
        path = Path(fomm["path"])
        reason = ("is gone" if not path.is_file() else
                  "has changed since the cast was added" if sha256_path(path) != fomm["sha256"] else None)
        if reason is None:
            return path
        if problems is not None:
            problems.append(f"{path}: the FOMM checkpoint of cast {cast_id!r} {reason}; the cast plays with the warp "
                            "recaster")
        return None

    def load_all(self, problems: list[str]) -> list[Cast]:
        """Every registered cast that loads; each one that does not is skipped with its reason in `problems`."""
        casts = []
        for cast_id in self.ids():
            try:
                casts.append(self.load(cast_id, problems))
            except RegistryError as exc:
                problems.append(str(exc))
        return casts


def _entry_problem(entry: dict[str, Any]) -> str:
    """What is wrong with a cast entry's fields, or "": the files it names are exactly the cast's own two (never a
    path outside its folder), each with a sha256; the other fields of the types `add` writes."""
    files = entry.get("files")
    if not isinstance(files, dict) or set(files) != set(CAST_FILES):
        return f"files must name exactly {', '.join(CAST_FILES)}"
    if not all(isinstance(d, str) and SHA256.match(d) for d in files.values()):
        return "each file's sha256 must be 64 hex digits"
    for key in ("kind", "source", "detector"):
        if not isinstance(entry.get(key), str):
            return f"{key} must be a string"
    for key in ("landmarks", "texture_points"):
        if not isinstance(entry.get(key), list):
            return f"{key} must be a list of points"
    if entry.get("mesh") is not None and not isinstance(entry["mesh"], list):
        return "mesh must be a list of points or null"
    fomm = entry.get("fomm")
    if fomm is not None and not (isinstance(fomm, dict) and isinstance(fomm.get("path"), str)
                                 and isinstance(fomm.get("sha256"), str)):
        return "fomm must be null or a path and its sha256"
    if not isinstance(entry.get("texture", 1), int):
        return "texture must be a version number"
    return ""


def _file_digest(path: Path) -> str:
    """A cast file's sha256, read only when it lies in its cast's folder (a link out of it is refused) and is a
    regular file (not a device, a pipe or a folder) of at most MAX_CAST_FILE_BYTES; RegistryError otherwise."""
    if not path.resolve().is_relative_to(path.parent.resolve()):
        raise RegistryError(f"{path}: leads out of its cast's folder; add the cast again")
    try:
        info = path.stat()
    except OSError as exc:
        raise RegistryError(f"{path}: unreadable ({exc.strerror or exc}); add the cast again") from exc
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_CAST_FILE_BYTES:
        raise RegistryError(f"{path}: not a regular file of at most {MAX_CAST_FILE_BYTES} bytes; add the cast again")
    return sha256_path(path)
