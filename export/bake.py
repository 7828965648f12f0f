"""The per-title bake (`recast bake`): STIT's offline work moved ahead of playback.

Stages, each cached in the title cache (engines/cache.py) under a key of everything that changes its result:

1. ``tracks``  the offline pipeline (detect, track, cuts, smoothed quads, landmarks) -> tracks.npz
2. ``pivots``  every face of every track aligned at the generator's size and inverted with e4e -> pivots/*.npy
3. ``pti``     pivotal tuning: the generator's weights fitted so that G(pivot_i) reproduces crop i (L2, plus LPIPS
               when its weights are present locally), per title or per track, Adam, checkpointed every N steps
               so that a killed bake resumes -> generator/*.safetensors
4. ``stitch``  with bake-time edits: the edited crops, stitching-tuned per track segment (export/stitch.py)
               -> stitched/*.npz
5. ``export``  the tuned generator's synthesis network to ONNX (and a TensorRT plan where TensorRT runs)
6. ``fomm``    the actor's keypoints per face, for the `fomm` recaster -> fomm/*.npz

A second bake with the same inputs finds every stage done and does nothing. Work that is not a result (PTI
checkpoints) lives in ``work/`` and is deleted once its stage completes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from engines import stylegan2
from engines.cache import TitleCache, TitleEntry, sha256_bytes, sha256_path, stage_key, tool_versions
from engines.checkpoints import Checkpoint, generator_of, open_checkpoint, save_safetensors
from engines.directions import Direction, apply_direction, fits
from engines.errors import InputError
from export.stitch import StitchJob, StitchOptions, map_segments, segments
from stream.align import alignment, crop, face_mask
from stream.media import MediaSource
from stream.pipeline import RenderOptions, run_tracking
from stream.tracks import TrackSet

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int, dict[str, float]], None]  # stage, done, total, figures (loss, fps)


class BakeError(InputError):
    """A bake that cannot run (bad input, mismatched models); the message names the file."""


@dataclass
class PTIOptions:
    steps: int = 300
    scope: str = "title"  # title: one tuned generator; track: one per track
    lr: float = 3e-4
    batch: int = 4
    l2_weight: float = 1.0
    lpips_weight: float = 1.0  # used only with `lpips` weights
    lpips: str | None = None  # path to local LPIPS weights (never fetched)
    checkpoint_every: int = 25
    seed: int = 0


@dataclass
class BakeOptions:
    render: RenderOptions = field(default_factory=RenderOptions)
    encoder_size: int = 256  # e4e reads a resize of the aligned crop
    every: int = 1  # invert and tune on every N-th face of a track (pivots for the others are interpolated)
    pti: PTIOptions = field(default_factory=PTIOptions)
    export: tuple[str, ...] = ()  # "onnx", "plan"
    max_frames: int | None = None  # bake only the first N frames
    edits: tuple[tuple[Direction, float], ...] = ()  # bake-time edits, stitched per track segment
    stitch: StitchOptions = field(default_factory=StitchOptions)
    segment_executor: str = "local"  # where stitching segments run: local | ray

    def tracking_options(self) -> dict[str, Any]:
        r = self.render
        return {"detector": r.detector, "tiles": r.tiles, "detect_interval": r.detect_interval,
                "detect_width": r.detect_width, "upsample": r.upsample, "max_frames": self.max_frames}


@dataclass
class BakeReport:
    title: str
    stages: dict[str, str]  # stage -> "baked" | "cached"
    seconds: dict[str, float]
    figures: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Models:
    generator: Checkpoint | None = None
    encoder: Checkpoint | None = None
    fomm: Checkpoint | None = None

    @classmethod
    def open(cls, generator: str | None, encoder: str | None, fomm: str | None) -> Models:
        models = cls(open_checkpoint(generator, "stylegan2") if generator else None,
                     open_checkpoint(encoder, "e4e") if encoder else None,
                     open_checkpoint(fomm, "fomm") if fomm else None)
        if (models.generator is None) != (models.encoder is None):
            raise BakeError("a StyleGAN bake needs both --generator and --encoder")
        if models.generator is not None and models.encoder is not None:
            synthesis = generator_of(models.generator).synthesis
            style_count = int(models.encoder.modules["encoder"].style_count)  # type: ignore[arg-type]
            if synthesis.num_ws != style_count or synthesis.w_dim != 512:
                raise BakeError(f"{models.encoder.path}: the encoder gives {style_count} styles of 512, the generator "
                                f"{models.generator.path} takes {synthesis.num_ws} of {synthesis.w_dim}")
        return models


# --- crops --------------------------------------------------------------------------------------------------


def aligned_crops(location: str | Path, tracks: TrackSet, size: int,
                  every: int = 1) -> dict[int, tuple[list[int], np.ndarray]]:
    """Per track: the rows (positions in the track) taken and their crops [n,size,size,3] uint8, aligned on the
    smoothed quad (STIT's crop). Decoding stops after the last frame with a face wanted."""
    wanted: dict[int, dict[int, int]] = {}  # frame -> {track: row}
    for track in tracks.tracks:
        for row, face in enumerate(track.faces):
            if row % every == 0 or row == len(track.faces) - 1:
                wanted.setdefault(face.index, {})[track.track_id] = row
    rows: dict[int, list[int]] = {t.track_id: [] for t in tracks.tracks}
    images: dict[int, list[np.ndarray]] = {t.track_id: [] for t in tracks.tracks}
    faces = {t.track_id: t.faces for t in tracks.tracks}
    last = max(wanted) if wanted else -1
    with MediaSource(location, keep_audio=False) as source:
        for frame in source.frames():
            if frame.index > last:
                break
            for track_id, row in wanted.get(frame.index, {}).items():
                face = faces[track_id][row]
                rows[track_id].append(row)
                images[track_id].append(crop(frame.image, alignment(face.crop_params, size)))
    return {t: (rows[t], np.stack(images[t])) for t in rows if rows[t]}


def to_tensor(images: np.ndarray, size: int | None = None) -> torch.Tensor:
    """uint8 [n,h,w,3] -> float [n,3,size,size] in [-1,1]."""
    if size is not None and images.shape[1] != size:
        images = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def interpolate_rows(rows: list[int], values: np.ndarray, count: int) -> np.ndarray:
    """Latents for every row of a track from those of the sampled rows (linear in W+)."""
    if len(rows) == count:
        return values
    flat = values.reshape(len(rows), -1)
    out = np.stack([np.interp(np.arange(count), rows, flat[:, j]) for j in range(flat.shape[1])], axis=1)
    return out.reshape(count, *values.shape[1:]).astype(np.float32)


# --- PTI ----------------------------------------------------------------------------------------------------


class PerceptualLoss(nn.Module):
    """LPIPS from local weights (engines/lpips.py); absent unless the operator gives the file."""

    def __init__(self, path: str) -> None:
        super().__init__()
        from engines.lpips import load_lpips

        self.net = load_lpips(path)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(a, b).mean()


def _batches(count: int, batch: int, steps: int, seed: int, start: int) -> Iterator[tuple[int, np.ndarray]]:
    """The crops of each step: a fixed permutation per epoch, so a resumed run draws exactly what the uninterrupted
    one would have."""
    per_epoch = max(1, math.ceil(count / batch))
    for step in range(start, steps):
        epoch, offset = divmod(step, per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(count)
        yield step, order[offset * batch : (offset + 1) * batch]


def tune(generator: Any, pivots: torch.Tensor, targets: torch.Tensor, options: PTIOptions,
         checkpoint: Callable[[int, dict[str, Any]], None] | None = None, resume: dict[str, Any] | None = None,
         progress: Callable[[int, float], None] | None = None) -> list[float]:
    """Pivotal tuning of `generator.synthesis` in place; returns the loss per step. `resume` is a checkpoint
    written by `checkpoint` (step, synthesis and optimizer state)."""
    synthesis = generator.synthesis
    synthesis.train()
    for p in generator.parameters():
        p.requires_grad_(False)
    params = [p for p in synthesis.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=options.lr, betas=(0.9, 0.999))
    start = 0
    if resume is not None:
        synthesis.load_state_dict(resume["synthesis"])
        optimizer.load_state_dict(resume["optimizer"])
        start = int(resume["step"])
        log.info("PTI resumes at step %d of %d", start, options.steps)
    lpips = PerceptualLoss(options.lpips) if options.lpips else None
    losses: list[float] = []
    for step, index in _batches(len(pivots), options.batch, options.steps, options.seed, start):
        idx = torch.from_numpy(index)
        fake = synthesis(pivots[idx], noise_mode="const")
        real = targets[idx]
        loss = options.l2_weight * torch.nn.functional.mse_loss(fake, real)
        if lpips is not None:
            loss = loss + options.lpips_weight * lpips(fake, real)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, losses[-1])
        done = step + 1
        if checkpoint is not None and (done % options.checkpoint_every == 0) and done < options.steps:
            checkpoint(done, {"step": done, "synthesis": synthesis.state_dict(), "optimizer": optimizer.state_dict()})
    synthesis.eval()
    for p in params:
        p.requires_grad_(False)
    return losses


@torch.no_grad()
def reconstruction_error(generator: Any, pivots: torch.Tensor, targets: torch.Tensor, batch: int = 8) -> float:
    """Mean squared error of G(pivot) against the crops, in [-1,1] units."""
    total, count = 0.0, 0
    for i in range(0, len(pivots), batch):
        fake = generator.synthesis(pivots[i : i + batch], noise_mode="const")
        total += float(((fake - targets[i : i + batch]) ** 2).mean()) * len(fake)
        count += len(fake)
    return total / max(count, 1)


# --- the bake -----------------------------------------------------------------------------------------------


class Baker:
    def __init__(self, cache: TitleCache, title_id: str, source: str | Path, models: Models, options: BakeOptions,
                 progress: Progress | None = None) -> None:
        self.cache, self.source, self.models, self.options = cache, Path(source), models, options
        self.entry: TitleEntry = cache.entry(title_id)
        self.progress = progress
        self.report = BakeReport(title_id, {}, {}, {})
        self._tracks: TrackSet | None = None
        self._crops: dict[int, tuple[list[int], np.ndarray]] | None = None

    def _note(self, stage: str, done: int, total: int, **figures: float) -> None:
        if self.progress is not None:
            self.progress(stage, done, total, figures)

    def run(self) -> BakeReport:
        if not self.source.is_file():
            raise BakeError(f"{self.source}: no such file")
        with self.entry.locked():
            source_sha = sha256_path(self.source)
            keys = {"tracks": stage_key(stage="tracks", source=source_sha, options=self.options.tracking_options(),
                                        versions=tool_versions())}
            self._stage("tracks", keys["tracks"], self._bake_tracks)
            g, e, f = self.models.generator, self.models.encoder, self.models.fomm
            if g is not None and e is not None:
                keys["pivots"] = stage_key(stage="pivots", tracks=keys["tracks"], encoder=e.sha256,
                                           generator_size=self._size(), encoder_size=self.options.encoder_size,
                                           every=self.options.every)
                self._stage("pivots", keys["pivots"], self._bake_pivots)
                pti = {k: v for k, v in asdict(self.options.pti).items() if k != "checkpoint_every"}
                keys["pti"] = stage_key(stage="pti", pivots=keys["pivots"], generator=g.sha256, pti=pti)
                self._stage("pti", keys["pti"], lambda: self._bake_pti(keys["pti"]))
                if self.options.edits:
                    styles = int(generator_of(g).num_ws)
                    for direction, _ in self.options.edits:
                        if not fits(direction, styles):
                            raise BakeError(f"{direction.path}: a {direction.vector.shape} direction does not fit "
                                            f"{g.path}'s {styles} styles")
                    edits = [(d.name, d.convention, sha256_bytes(np.ascontiguousarray(d.vector).tobytes()), factor)
                             for d, factor in self.options.edits]
                    keys["stitch"] = stage_key(stage="stitch", pti=keys["pti"], edits=edits,
                                               stitch=asdict(self.options.stitch))
                    self._stage("stitch", keys["stitch"], self._bake_stitch)
                if self.options.export:
                    keys["export"] = stage_key(stage="export", pti=keys["pti"], formats=sorted(self.options.export),
                                               versions=tool_versions())
                    self._stage("export", keys["export"], self._bake_export)
            if f is not None:
                keys["fomm"] = stage_key(stage="fomm", tracks=keys["tracks"], fomm=f.sha256)
                self._stage("fomm", keys["fomm"], self._bake_fomm)
            self.entry.describe(source=str(self.source.resolve()), source_sha256=source_sha)
            self.entry.touch()
        self.cache.evict(keep=self.entry.id)
        return self.report

    def _stage(self, name: str, key: str, bake: Callable[[], tuple[list[str], dict[str, Any]]]) -> None:
        if self.entry.is_done(name, key):
            self.report.stages[name] = "cached"
            log.info("%s: %s is cached", self.entry.id, name)
            return
        start = time.perf_counter()
        files, info = bake()
        seconds = time.perf_counter() - start
        self.entry.complete(name, key, files, info, seconds)
        self.report.stages[name] = "baked"
        self.report.seconds[name] = round(seconds, 3)

    # tracks ---------------------------------------------------------------------------------------------------

    def tracks(self) -> TrackSet:
        if self._tracks is None:
            path = self.entry.verified("tracks.npz")
            with np.load(path, allow_pickle=False) as arrays:
                self._tracks = TrackSet.from_arrays(arrays)
        return self._tracks

    def _bake_tracks(self) -> tuple[list[str], dict[str, Any]]:
        options = RenderOptions(**{**asdict(self.options.render), "mode": "offline"})
        limit = self.options.max_frames
        with MediaSource(self.source, keep_audio=False) as media:
            total = media.info.frame_count if limit is None else min(limit, media.info.frame_count or limit)
        start = time.perf_counter()

        def on_frame(index: int) -> None:
            self._note("tracks", index + 1, total, fps=(index + 1) / max(time.perf_counter() - start, 1e-9))

        tracks = run_tracking(self.source, options, on_frame=on_frame, max_frames=limit)
        seconds = time.perf_counter() - start
        frames = tracks.frame_count
        self.entry.write_with("tracks.npz", functools.partial(_savez, arrays=tracks.to_arrays()))
        self.entry.describe(frame_count=frames, fps=tracks.fps)
        self._tracks = tracks
        faces = sum(len(t.faces) for t in tracks.tracks)
        self.report.figures["tracking_fps"] = round(frames / max(seconds, 1e-9), 2)
        return ["tracks.npz"], {"frames": frames, "tracks": len(tracks.tracks), "faces": faces, "cuts": tracks.cuts}

    # pivots ---------------------------------------------------------------------------------------------------

    def _size(self) -> int:
        assert self.models.generator is not None
        return int(generator_of(self.models.generator).img_resolution)

    def crops(self) -> dict[int, tuple[list[int], np.ndarray]]:
        if self._crops is None:
            self._crops = aligned_crops(self.source, self.tracks(), self._size(), self.options.every)
        return self._crops

    def _bake_pivots(self) -> tuple[list[str], dict[str, Any]]:
        from engines.e4e import E4EEngine, Encoder4Editing

        assert self.models.encoder is not None
        enc = self.models.encoder
        encoder = enc.modules["encoder"]
        assert isinstance(encoder, Encoder4Editing)
        engine = E4EEngine(encoder, enc.tensors["latent_avg"]).eval()
        files, done, start = [], 0, time.perf_counter()
        total = sum(len(rows) for rows, _ in self.crops().values())
        for track in self.tracks().tracks:
            if track.track_id not in self.crops():
                continue
            rows, images = self.crops()[track.track_id]
            codes = []
            with torch.no_grad():
                for i in range(0, len(images), 8):
                    codes.append(engine(to_tensor(images[i : i + 8], self.options.encoder_size)).numpy())
                    done += len(codes[-1])
                    self._note("pivots", done, total, fps=done / max(time.perf_counter() - start, 1e-9))
            pivots = interpolate_rows(rows, np.concatenate(codes).astype(np.float32), len(track.faces))
            rel = f"pivots/track_{track.track_id}.npy"
            self.entry.write_with(rel, functools.partial(_save_npy, array=pivots))
            files.append(rel)
        self.report.figures["inversion_fps"] = round(total / max(time.perf_counter() - start, 1e-9), 2)
        return files, {"faces_inverted": total}

    def pivots(self, track_id: int) -> np.ndarray:
        return np.load(self.entry.verified(f"pivots/track_{track_id}.npy"), allow_pickle=False)

    # PTI --------------------------------------------------------------------------------------------------------

    def _bake_pti(self, key: str) -> tuple[list[str], dict[str, Any]]:
        assert self.models.generator is not None
        groups: list[tuple[str, list[int]]]
        track_ids = [t.track_id for t in self.tracks().tracks if t.track_id in self.crops()]
        if self.options.pti.scope == "track":
            groups = [(f"track_{t}", [t]) for t in track_ids]
        else:
            groups = [("title", track_ids)]
        files, info = [], {}
        for name, ids in groups:
            if not ids:
                continue
            rel, figures = self._tune_group(name, ids, key)
            files.append(rel)
            info[name] = figures
        return files, info

    def _tune_group(self, name: str, track_ids: list[int], key: str) -> tuple[str, dict[str, Any]]:
        assert self.models.generator is not None
        generator = _fresh_generator(self.models.generator)
        pivots, targets = [], []
        for t in track_ids:
            rows, images = self.crops()[t]
            pivots.append(torch.from_numpy(self.pivots(t)[rows]))
            targets.append(to_tensor(images))
        w, x = torch.cat(pivots), torch.cat(targets)
        before = reconstruction_error(generator, w, x)
        mean_crop = float(((x - x.mean(0, keepdim=True)) ** 2).mean())  # the best single image: a baseline
        work = f"work/pti_{name}.pt"
        resume = self._load_checkpoint(work, key)
        options = self.options.pti
        start = time.perf_counter()
        first = int(resume["step"]) if resume else 0

        def checkpoint(step: int, state: dict[str, Any]) -> None:
            self.entry.write_with(work, lambda p: torch.save({**state, "key": key}, p), record=False)

        def progress(step: int, loss: float) -> None:
            rate = (step - first) / max(time.perf_counter() - start, 1e-9)
            self._note(f"pti {name}", step, options.steps, loss=loss, steps_per_s=rate)

        losses = tune(generator, w, x, options, checkpoint, resume, progress)
        seconds = time.perf_counter() - start
        after = reconstruction_error(generator, w, x)
        ckpt = Checkpoint("stylegan2", self.models.generator.path, self.models.generator.sha256,
                          self.models.generator.config, {"generator": generator})
        rel = f"generator/{name}.safetensors"
        self.entry.write_with(rel, lambda p: _save_generator(ckpt, p))
        self.entry.path(work).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.entry.path("work").rmdir()
        steps_run = len(losses)
        self.report.figures["pti_steps_per_s"] = round(steps_run / max(seconds, 1e-9), 2)
        self.report.figures[f"pti_{name}_mse_before"] = before
        self.report.figures[f"pti_{name}_mse_after"] = after
        log.info("PTI %s: mse %.4f -> %.4f over %d steps (%d run now)", name, before, after, options.steps, steps_run)
        return rel, {"mse_before": before, "mse_after": after, "mse_mean_crop": mean_crop, "steps": options.steps,
                     "resumed_at": first, "crops": len(w), "loss_first": losses[0] if losses else None,
                     "loss_last": losses[-1] if losses else None}

    def _load_checkpoint(self, rel: str, key: str) -> dict[str, Any] | None:
        path = self.entry.path(rel)
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a checkpoint cut short by the kill: start over
            log.warning("%s: unreadable PTI checkpoint (%s); tuning starts over", path, err)
            return None
        if not isinstance(state, dict) or state.get("key") != key:
            log.warning("%s: PTI checkpoint of other inputs; tuning starts over", path)
            return None
        return state

    # stitching ---------------------------------------------------------------------------------------------

    def _bake_stitch(self) -> tuple[list[str], dict[str, Any]]:
        size, options = self._size(), self.options.stitch
        crops = self.crops() if self.options.every == 1 else aligned_crops(self.source, self.tracks(), size)
        jobs: list[StitchJob] = []
        where: list[tuple[int, list[int]]] = []
        for track in self.tracks().tracks:
            if track.track_id not in crops:
                continue
            rows, images = crops[track.track_id]
            edited = torch.from_numpy(self.pivots(track.track_id)[rows])
            for direction, factor in self.options.edits:
                edited = apply_direction(edited, direction, factor)
            masks = []
            for row in rows:
                face = track.faces[row]
                align = alignment(face.crop_params, size)
                masks.append(face_mask(align.points_to_crop(face.landmarks.astype(np.float64)), size))
            generator = str(self.entry.verified(self.entry.generator_rel(track.track_id)))
            for a, b in segments(len(rows), options.segment):
                jobs.append(StitchJob(generator, edited[a:b].numpy(), images[a:b], np.stack(masks[a:b]), options))
                where.append((track.track_id, rows[a:b]))
        start = time.perf_counter()

        def on_done(done: int, figures: dict[str, float]) -> None:
            self._note("stitch", done, len(jobs), border=figures["border_after"])

        results = map_segments(jobs, self.options.segment_executor, on_done)
        seconds = time.perf_counter() - start
        by_track: dict[int, tuple[list[int], list[np.ndarray]]] = {}
        for (track_id, rows), (pixels, _) in zip(where, results, strict=True):
            kept_rows, kept = by_track.setdefault(track_id, ([], []))
            kept_rows.extend(rows)
            kept.append(pixels)
        files = []
        for track_id, (rows, parts) in by_track.items():
            rel = f"stitched/track_{track_id}.npz"
            arrays = {"rows": np.asarray(rows, np.int64), "crops": np.concatenate(parts)}
            self.entry.write_with(rel, functools.partial(_savez, arrays=arrays))
            files.append(rel)
        figures = {k: float(np.mean([f[k] for _, f in results])) for k in ("border_before", "border_after",
                                                                             "content_after", "steps")}
        self.report.figures.update({f"stitch_{k}": round(v, 5) for k, v in figures.items()})
        self.report.figures["stitch_segments_per_s"] = round(len(jobs) / max(seconds, 1e-9), 3)
        edits = {d.name: float(f) for d, f in self.options.edits}
        return files, {"edits": edits, "segments": len(jobs), "executor": self.options.segment_executor, **figures}

    # export --------------------------------------------------------------------------------------------------

    def _bake_export(self) -> tuple[list[str], dict[str, Any]]:
        from engines.stylegan2 import SynthesisEngine
        from export.onnx import check_onnx

        stage = self.entry.stage("pti")
        assert stage is not None
        files: list[str] = []
        info: dict[str, Any] = {}
        for rel in stage.files:
            ckpt = open_checkpoint(self.entry.verified(rel), "stylegan2")
            module = SynthesisEngine(generator_of(ckpt)).eval()
            base = rel.rsplit(".", 1)[0]
            if "onnx" in self.options.export or "plan" in self.options.export:
                onnx_rel = base + ".onnx"
                meta = {"architecture": "stylegan2-synthesis", "source_sha256": ckpt.sha256, "title": self.entry.id}
                self.entry.write_with(onnx_rel, functools.partial(_export, module, metadata=meta))
                check = check_onnx(module, self.entry.path(onnx_rel), atol=1e-4)
                if not check.ok:
                    raise BakeError(f"{self.entry.path(onnx_rel)}: ONNX round trip failed: {check.format()}")
                info[onnx_rel] = {"max_abs_error": max(check.errors.values())}
                files.append(onnx_rel)
            if "plan" in self.options.export:
                from export.tensorrt import build_plan

                plan_rel = base + ".plan"
                self.entry.write_with(plan_rel, functools.partial(build_plan, self.entry.path(onnx_rel)))
                files.append(plan_rel)
        return files, info

    # FOMM ----------------------------------------------------------------------------------------------------

    def _bake_fomm(self) -> tuple[list[str], dict[str, Any]]:
        from engines.fomm import KeypointEngine, KPDetector

        assert self.models.fomm is not None
        size = int(self.models.fomm.config.get("image_size", 256))
        detector = self.models.fomm.modules["kp_detector"]
        assert isinstance(detector, KPDetector)
        engine = KeypointEngine(detector, size).eval()
        crops = aligned_crops(self.source, self.tracks(), size)
        files = []
        for track_id, (rows, images) in crops.items():
            values, jacobians = [], []
            with torch.no_grad():
                for i in range(0, len(images), 8):
                    v, j = engine(to_tensor(images[i : i + 8]).add(1).div(2))
                    values.append(v.numpy())
                    jacobians.append(j.numpy())
            rel = f"fomm/track_{track_id}.npz"
            arrays = {"rows": np.asarray(rows), "value": np.concatenate(values), "jacobian": np.concatenate(jacobians)}
            self.entry.write_with(rel, functools.partial(_savez, arrays=arrays))
            files.append(rel)
        return files, {"size": size}


def _export(module: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    from export.onnx import export_onnx

    export_onnx(module, path, metadata=metadata)


def _fresh_generator(ckpt: Checkpoint) -> stylegan2.Generator:
    """A private copy of the checkpoint's generator to tune (the loaded one stays as it was)."""
    from engines.checkpoints import build_modules

    generator = build_modules("stylegan2", ckpt.config)["generator"]
    assert isinstance(generator, stylegan2.Generator)
    generator.load_state_dict(generator_of(ckpt).state_dict())
    return generator.eval()


def _save_generator(ckpt: Checkpoint, path: Path) -> None:
    save_safetensors(ckpt, path)


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with path.open("wb") as f:
        np.savez(f, allow_pickle=False, **arrays)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as f:
        np.save(f, array)


def bake_title(cache: TitleCache, title_id: str, source: str | Path, models: Models, options: BakeOptions,
               progress: Progress | None = None) -> BakeReport:
    return Baker(cache, title_id, source, models, options, progress).run()
