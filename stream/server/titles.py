"""The title catalogue of `recast serve`: video files of a folder, the demo title, and the titles of a bake cache
(played from their bake: cached tracks, and the `actor` cast when the StyleGAN stages are baked)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.cache import TITLE_ID
from stream.casts.cast import Cast
from stream.media.sources import MediaError, MediaSource
from stream.perception.track_set import FaceState

if TYPE_CHECKING:
    from engines.cache import TitleCache
    from engines.directions import Direction

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov")
ACTOR_CAST = "actor"  # a baked title's own actor, re-rendered by its tuned generator (edits apply to it)


@dataclass
class Title:
    id: str
    path: Path
    duration: float
    fps: float
    has_audio: bool
    prebaked: bool = False
    faces: dict[int, list[FaceState]] | None = None  # a baked title's faces by frame index
    actor: Any = None  # a baked title's StyleGAN recaster (stream.recasters.learned.StyleGANRecaster): the `actor` cast
    loop: bool = False  # played on repeat (the demo title, or every title with `recast serve --loop`)
    renditions: Any = None  # a baked title's renditions (stream.server.relay.TitleRenditions), for the relay

    @property
    def edits(self) -> list[str]:
        return sorted(self.actor.directions) if self.actor is not None else []

    def cast_ids(self, casts: Iterable[str]) -> list[str]:
        return ([ACTOR_CAST] if self.actor is not None else []) + [c for c in casts if c != ACTOR_CAST]

    def describe(self, casts: list[Cast]) -> dict[str, Any]:
        return {"id": self.id, "live": False, "duration": round(self.duration, 3), "fps": round(self.fps, 3),
                "prebaked": self.prebaked, "loop": self.loop, "casts": self.cast_ids(c.cast_id for c in casts),
                "edits": self.edits, "renditions": sorted(self.renditions.video) if self.renditions else []}


def scan_titles(folder: Path | None, demo_path: Path | None, cache: TitleCache | None = None,
                directions: Sequence[Direction] = (), device: str = "cpu", runtime: str = "torch",
                loop: bool = False) -> dict[str, Title]:
    """Titles from a folder (file stem = id; names that are not valid ids are skipped), the demo title, and the
    baked titles of a cache (see `open_baked_title`). The demo title plays on repeat; with `loop`, every title."""
    found: dict[str, Title] = {}
    candidates: list[tuple[str, Path]] = []
    if demo_path is not None:
        candidates.append(("demo", demo_path))
    if folder is not None:
        candidates += [(p.stem, p) for p in sorted(folder.iterdir()) if p.suffix.lower() in VIDEO_SUFFIXES]
    for title_id, path in candidates:
        if not TITLE_ID.match(title_id):
            log.warning("%s: file name is not a valid title id; skipped", path)
            continue
        try:
            with MediaSource(path, keep_audio=False) as source:
                info = source.info
        except MediaError as err:
            log.warning("%s; skipped", err)
            continue
        found[title_id] = Title(title_id, path.resolve(), info.duration, info.fps, info.has_audio)
    if cache is not None:
        for title_id in cache.title_ids():
            title = open_baked_title(cache, title_id, found.get(title_id), directions, device, runtime)
            if title is not None:
                found[title_id] = title
    for title in found.values():
        title.loop = loop or (title.id == "demo" and demo_path is not None)
    return found


def open_baked_title(cache: TitleCache, title_id: str, plain: Title | None, directions: Sequence[Direction],
               device: str, runtime: str = "torch") -> Title | None:
    """A title of the cache, played from its bake: the cached tracks (no detection, the offline smoothing) and,
    when the bake has the StyleGAN stages, the `actor` cast (its tuned generator on the frame's pivot) with the
    edits of the directions that fit it. The source is the folder's file of the same id, or the file the manifest
    names; it must be the file that was baked (sha256). An entry that fails verification is skipped with a warning
    (a folder title of that id then plays with live tracking)."""
    from engines.cache import CacheError
    from engines.runtime import EngineError
    from stream.perception.baked_title import BakedTitle

    try:
        baked = BakedTitle(cache, title_id)
        path = baked.source_file(plain.path if plain is not None else None)
        with MediaSource(path, keep_audio=False) as source:
            info = source.info
        actor = None
        if baked.baked("pivots") and baked.baked("pti"):
            from stream.recasters.learned import StyleGANRecaster

            actor = StyleGANRecaster(baked, device=device, directions=directions, runtime=runtime)
    except (CacheError, MediaError, OSError, EngineError) as err:
        log.warning("baked title %s: %s; %s", title_id, err, "played live" if plain is not None else "skipped")
        return None
    from stream.server.relay import TitleRenditions

    renditions = TitleRenditions.open(baked.entry)
    if renditions is not None and info.duration and renditions.duration < info.duration - 1.5 / max(info.fps, 1.0):
        log.warning("baked title %s: its renditions cover %.2f s of %.2f s (a bake with --max-frames); it plays live",
                    title_id, renditions.duration, info.duration)
        renditions = None
    return Title(title_id, path.resolve(), info.duration, info.fps, info.has_audio, prebaked=True,
                 faces=baked.tracks.by_frame(), actor=actor, renditions=renditions)


