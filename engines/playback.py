"""Playback of a baked title: its cached tracks (no detection), and the two learned recasters.

- ``stylegan``: the title's tuned generator renders the pivot of that frame, with the edits chosen at playback
  (directions, STIT or InterFaceGAN arithmetic). The face stays the actor's; the edits change age, smile, ...
- ``fomm``: a registered cast face is driven by the actor's crop: FOMM keypoints of the actor (baked, or computed
  when the bake has none), motion relative to the track's first frame, the cast's portrait as the source.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines import fomm
from engines.cache import CacheError, TitleCache, TitleEntry
from engines.checkpoints import Checkpoint, open_checkpoint
from engines.directions import Direction, apply_direction
from export.bake import generator_of
from stream.align import face_mask
from stream.casts import Cast
from stream.faces import FaceDetector, LandmarkPredictor
from stream.recasters import CastError, FaceCrop, Recaster, prepare_cast
from stream.tracks import TrackSet

log = logging.getLogger(__name__)


class BakedTitle:
    """A title's cache entry, verified: tracks, and per-track pivots and keypoints on demand."""

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
        self.entry.touch()

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

    def generator_file(self, track_id: int) -> Path:
        stage = self.entry.stage("pti")
        if stage is None:
            raise CacheError(f"{self.entry.folder}: no tuned generator (bake with --generator and --encoder)")
        per_track = f"generator/track_{track_id}.safetensors"
        rel = per_track if per_track in stage.files else "generator/title.safetensors"
        return self.entry.verified(rel)

    def keypoints(self, track_id: int) -> dict[str, np.ndarray] | None:
        if not self.baked("fomm"):
            return None
        if track_id not in self._kp:
            with np.load(self.entry.verified(f"fomm/track_{track_id}.npz"), allow_pickle=False) as arrays:
                self._kp[track_id] = {k: arrays[k] for k in arrays.files}
        return self._kp[track_id]


def _to_uint8(image: torch.Tensor, low: float) -> np.ndarray:
    """[1,3,N,N] in [low,1] -> [N,N,3] uint8."""
    scaled = (image[0].clamp(low, 1) - low) * (255.0 / (1 - low))
    return scaled.round().byte().permute(1, 2, 0).cpu().numpy().copy()


class StyleGANRecaster(Recaster):
    """The tuned generator on the frame's pivot, plus edits (name -> (direction, factor)) set at playback."""

    name = "stylegan"

    def __init__(self, title: BakedTitle, device: str = "cpu") -> None:
        if not title.baked("pivots") or not title.baked("pti"):
            raise CacheError(f"{title.entry.folder}: the StyleGAN stages are not baked (run `recast bake` with "
                             "--generator and --encoder)")
        self.title, self.device = title, device
        self.edits: dict[str, tuple[Direction, float]] = {}
        self._generators: dict[Path, Checkpoint] = {}
        first = title.tracks.tracks[0].track_id if title.tracks.tracks else 0
        self.crop_size = int(generator_of(self._generator(first)).img_resolution)

    def set_edit(self, direction: Direction, factor: float) -> None:
        if factor == 0:
            self.edits.pop(direction.name, None)
        else:
            self.edits[direction.name] = (direction, factor)

    def _generator(self, track_id: int) -> Checkpoint:
        path = self.title.generator_file(track_id)
        if path not in self._generators:
            self._generators[path] = open_checkpoint(path, "stylegan2")
            self._generators[path].modules["generator"].to(self.device)
        return self._generators[path]

    @torch.no_grad()
    def recast(self, face: FaceCrop) -> tuple[np.ndarray, np.ndarray]:
        pivot = self.title.pivots(face.track_id)[self.title.row(face.track_id, face.index)]
        w = torch.from_numpy(pivot)[None].to(self.device)
        for direction, factor in self.edits.values():
            w = apply_direction(w, direction, factor)
        generator = generator_of(self._generator(face.track_id))
        image = _to_uint8(generator.synthesis(w, noise_mode="const"), -1.0)
        return image, face_mask(face.landmarks, image.shape[0])

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "title": self.title.id,
                "edits": {name: factor for name, (_, factor) in self.edits.items()}}


class FOMMRecaster(Recaster):
    """A cast portrait animated by the actor's motion (relative to each track's first frame)."""

    name = "fomm"

    def __init__(self, ckpt: Checkpoint, casts: Sequence[Cast], title: BakedTitle | None = None,
                 device: str = "cpu", predictor: LandmarkPredictor | None = None) -> None:
        if ckpt.kind != "fomm":
            raise CastError(f"{ckpt.path}: holds a {ckpt.kind} network, not FOMM")
        if not casts:
            raise CastError("the fomm recaster needs at least one cast image")
        self.title, self.device = title, device
        self.crop_size = int(ckpt.config.get("image_size", 256))
        self.detector_net = ckpt.modules["kp_detector"].to(device)
        self.generator = ckpt.modules["generator"].to(device)
        norm = dict(ckpt.config.get("normalize_kp", {}))
        has_jacobian = bool(ckpt.config["common_params"].get("estimate_jacobian", False))
        norm.update(use_relative_movement=True, use_relative_jacobian=has_jacobian)
        self.norm = norm
        predictor = predictor or LandmarkPredictor()
        detector = FaceDetector(detect_width=0, upsample=1)
        self.casts: dict[str, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}
        for cast in casts:
            prepared = prepare_cast(cast, self.crop_size, detector, predictor)
            source = self._tensor(prepared.image)
            with torch.no_grad():
                self.casts[cast.cast_id] = (source, self.detector_net(source))
        self.order = [c.cast_id for c in casts]
        self.assigned: dict[int, str] = {}
        self._initial: dict[int, dict[str, torch.Tensor]] = {}

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).to(self.device)

    def cast_for(self, track_id: int) -> str:
        return self.assigned.get(track_id) or self.order[(track_id - 1) % len(self.order)]

    def _driving(self, face: FaceCrop) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """This frame's keypoints and the track's first, baked when the bake has them."""
        baked = self.title.keypoints(face.track_id) if self.title is not None else None
        if baked is not None and self.title is not None:
            row = self.title.row(face.track_id, face.index)
            position = int(np.searchsorted(baked["rows"], row))
            if position < len(baked["rows"]) and int(baked["rows"][position]) == row:
                def kp(i: int) -> dict[str, torch.Tensor]:
                    return {"value": torch.from_numpy(baked["value"][i : i + 1]).to(self.device),
                            "jacobian": torch.from_numpy(baked["jacobian"][i : i + 1]).to(self.device)}

                return kp(position), kp(0)
        current = self.detector_net(self._tensor(face.image))
        initial = self._initial.setdefault(face.track_id, current)
        return current, initial

    @torch.no_grad()
    def recast(self, face: FaceCrop) -> tuple[np.ndarray, np.ndarray]:
        source, kp_source = self.casts[self.cast_for(face.track_id)]
        kp_driving, kp_initial = self._driving(face)
        kp_norm = fomm.normalize_kp(kp_source, kp_driving, kp_initial, **self.norm)
        prediction = self.generator(source, kp_driving=kp_norm, kp_source=kp_source)["prediction"]
        image = _to_uint8(prediction, 0.0)
        return image, face_mask(face.landmarks, image.shape[0])

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "casts": list(self.order)}
