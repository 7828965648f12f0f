"""A baked title opened for playback: its cached tracks (no detection at play time), and per track, on demand, the
pivots, the tuned generator's file, the stitched crops and the FOMM keypoints, each verified once against the
manifest (engines/cache.py). Used by the learned recasters (stream/recasters/learned.py), the service and the CLI.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.cache import CacheError, TitleCache, TitleEntry
from stream.perception.track_set import TrackSet


class BakedTitle:
    """A title's cache entry for playback, verified: tracks, and per-track pivots and keypoints on demand."""

    def __init__(self, cache: TitleCache, title_id: str) -> None:
        self.entry: TitleEntry = cache.entry(title_id)
        if not self.entry.manifest_path.exists() or self.entry.stage("tracks") is None:
            raise CacheError(f"{self.entry.folder}: title {title_id!r} is not baked (run `recast bake`)")
        problems = self.entry.problems("tracks")
        if problems:
            raise CacheError("; ".join(problems) + " (re-run `recast bake` to rebuild it)")
        with np.load(self.entry.verified("tracks.npz"), allow_pickle=False) as arrays:
            self.tracks = TrackSet.from_arrays(arrays)
        self.rows = {t.track_id: {f.index: row for row, f in enumerate(t.faces)} for t in self.tracks.tracks}
        self.source = Path(str(self.entry.manifest.get("source", "")))
        self._pivots: dict[int, np.ndarray] = {}
        self._kp: dict[int, dict[str, np.ndarray]] = {}
        self._stitched: dict[int, tuple[dict[str, float], dict[int, np.ndarray]]] = {}
        self.entry.touch()

    def source_file(self, given: Path | None = None) -> Path:
        """The file to play: ``given``, or else the one the manifest names; CacheError when it is missing or is not
        the file the title was baked from (its sha256 differs): a baked title's tracks fit only their own source."""
        from engines.cache import sha256_path

        path = given if given is not None else self.source
        if not path.is_file():
            raise CacheError(f"{path}: the title's source is missing (a copy of the same file can be given instead)")
        if sha256_path(path) != self.entry.manifest.get("source_sha256"):
            raise CacheError(f"{path}: not the file title {self.id!r} was baked from (sha256 differs)")
        return path

    @property
    def id(self) -> str:
        return self.entry.id

    def baked(self, stage: str) -> bool:
        return self.entry.stage(stage) is not None and not self.entry.problems(stage)

    def row(self, track_id: int, index: int) -> int:
        try:
            return self.rows[track_id][index]
        except KeyError:
            raise KeyError(f"{self.id}: no face of track {track_id} in frame {index}") from None

    def pivots(self, track_id: int) -> np.ndarray:
        if track_id not in self._pivots:
            self._pivots[track_id] = np.load(self.entry.verified(f"pivots/track_{track_id}.npy"), allow_pickle=False)
        return self._pivots[track_id]

    def generator_file(self, track_id: int, suffix: str = ".safetensors") -> Path:
        """The tuned generator of this track (or the title's): the weights, or with `suffix` .onnx / .plan the
        exported engine."""
        rel = self.entry.generator_rel(track_id)
        if suffix != ".safetensors":
            rel = rel.removesuffix(".safetensors") + suffix
            export = self.entry.stage("export")
            if export is None or rel not in export.files or self.entry.problems("export"):
                raise CacheError(f"{self.entry.folder}: no usable exported {rel} (bake with --export "
                                 f"{'onnx' if suffix == '.onnx' else 'onnx,plan'})")
        return self.entry.verified(rel)

    def stitched(self, track_id: int) -> tuple[dict[str, float], dict[int, np.ndarray]] | None:
        """The bake-time edits and this track's stitched crops by row, when the bake has them."""
        if not self.baked("stitch"):
            return None
        if track_id not in self._stitched:
            stage = self.entry.stage("stitch")
            assert stage is not None
            rel = f"stitched/track_{track_id}.npz"
            if rel not in stage.files:
                return None
            with np.load(self.entry.verified(rel), allow_pickle=False) as arrays:
                crops = dict(zip(arrays["rows"].tolist(), arrays["crops"], strict=True))
            self._stitched[track_id] = ({k: float(v) for k, v in stage.info["edits"].items()}, crops)
        return self._stitched[track_id]

    def keypoints(self, track_id: int) -> dict[str, np.ndarray] | None:
        if not self.baked("fomm"):
            return None
        if track_id not in self._kp:
            with np.load(self.entry.verified(f"fomm/track_{track_id}.npz"), allow_pickle=False) as arrays:
                self._kp[track_id] = {k: arrays[k] for k in arrays.files}
        return self._kp[track_id]
