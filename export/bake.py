"""The per-title bake (`recast bake`): STIT's offline work moved ahead of playback.

A bake is a chain of stages, each a small object below that holds its cache key and its body together, and each
stored in the title cache (engines/cache.py) under its key:

1. ``tracks``  the offline pipeline (detect, track, cuts, smoothed quads, landmarks) -> tracks.npz
2. ``pivots``  every face of every track aligned at the generator's size and inverted with e4e (export/invert.py)
               -> pivots/*.npy
3. ``pti``     pivotal tuning (export/pti.py), per title or per track, checkpointed every N steps so that a killed
               bake resumes -> generator/*.safetensors
4. ``stitch``  with bake-time edits: the edited crops, stitching-tuned per track segment (export/stitching.py)
               -> stitched/*.npz
5. ``export``  the tuned generator's synthesis network to ONNX (and a TensorRT plan where TensorRT runs)
6. ``fomm``    the actor's keypoints per face, for the `fomm` recaster -> fomm/*.npz

Keys are made of the inputs' sha256 (remembered by size and modification time, `TitleEntry.input_sha256`), whole
option dataclasses (export/options.py), the keys of the stages a stage reads, and the tool versions. So every key
is known before anything is loaded: a second bake with the same inputs verifies the cached files and loads no
model, no PyTorch and no frame. Work that is not a result (PTI checkpoints) lives in ``work/`` and is deleted once
its stage completes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from engines.cache import TitleCache, TitleEntry, sha256_bytes, stage_key, tool_versions
from engines.errors import InputError
from export.options import BakeOptions, PTIOptions, StitchOptions, key_part
from stream.perception.track_set import TrackSet

if TYPE_CHECKING:
    from engines.official import Checkpoint
    from export.invert import Crops
    from stream.casts.cast import Cast

__all__ = ["BakeError", "BakeOptions", "BakeReport", "Models", "PTIOptions", "StitchOptions", "bake_title"]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int, dict[str, float]], None]  # stage, done, total, figures (loss, fps)
Files = tuple[list[str], dict[str, Any]]  # a stage's files (relative to the entry) and its info


class BakeError(InputError):
    """A bake that cannot run (bad input, mismatched models); the message names the file."""


@dataclasses.dataclass
class BakeReport:
    title: str
    stages: dict[str, str]  # stage -> "baked" | "cached"
    seconds: dict[str, float]
    figures: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Models:
    """The checkpoints of a bake, by path; each is opened (and checked against the others) only when a stage that
    needs it has work to do. Already loaded checkpoints may be given instead (tests, the bench)."""

    def __init__(self, generator: str | Path | Checkpoint | None = None, encoder: str | Path | Checkpoint | None = None,
                 fomm: str | Path | Checkpoint | None = None) -> None:
        self._given = {"generator": generator, "encoder": encoder, "fomm": fomm}
        self._open: dict[str, Checkpoint] = {}
        if (generator is None) != (encoder is None):
            raise BakeError("a StyleGAN bake needs both --generator and --encoder")

    @classmethod
    def open(cls, generator: str | None, encoder: str | None, fomm: str | None) -> Models:
        return cls(generator, encoder, fomm)

    def has(self, role: str) -> bool:
        return self._given[role] is not None

    def sha256(self, role: str, entry: TitleEntry) -> str:
        given = self._given[role]
        return entry.input_sha256(Path(given)) if isinstance(given, str | Path) else given.sha256  # type: ignore[union-attr]

    def get(self, role: str) -> Checkpoint:
        if role not in self._open:
            from engines.checkpoints import open_checkpoint

            given = self._given[role]
            assert given is not None, role
            kind = {"generator": "stylegan2", "encoder": "e4e", "fomm": "fomm"}[role]
            self._open[role] = open_checkpoint(given, kind) if isinstance(given, str | Path) else given
        return self._open[role]

    def check_stylegan(self) -> None:
        """The encoder's styles fit the generator (a clear error before any work, not a shape error midway)."""
        from engines.checkpoints import generator_of

        generator, encoder = self.get("generator"), self.get("encoder")
        synthesis = generator_of(generator).synthesis
        style_count = int(encoder.modules["encoder"].style_count)  # type: ignore[arg-type]
        if synthesis.num_ws != style_count or synthesis.w_dim != 512:
            raise BakeError(f"{encoder.path}: the encoder gives {style_count} styles of 512, the generator "
                            f"{generator.path} takes {synthesis.num_ws} of {synthesis.w_dim}")


class Bake:
    """What the stages share: the entry, the inputs, and what is loaded once it is needed (tracks, crops)."""

    def __init__(self, entry: TitleEntry, source: Path, models: Models, options: BakeOptions,
                 progress: Progress | None) -> None:
        self.entry, self.source, self.models, self.options = entry, source, models, options
        self.progress = progress
        self.report = BakeReport(entry.id, {}, {}, {})
        self.keys: dict[str, str] = {}
        self._tracks: TrackSet | None = None
        self._crops: Crops | None = None

    def note(self, stage: str, done: int, total: int, **figures: float) -> None:
        if self.progress is not None:
            self.progress(stage, done, total, figures)

    def tracks(self) -> TrackSet:
        if self._tracks is None:
            with np.load(self.entry.verified("tracks.npz"), allow_pickle=False) as arrays:
                self._tracks = TrackSet.from_arrays(arrays)
        return self._tracks

    def size(self) -> int:
        from engines.checkpoints import generator_of

        return int(generator_of(self.models.get("generator")).img_resolution)

    def crops(self) -> Crops:
        """The crops inversion and tuning read (every `every`-th face), decoded once per bake."""
        from export.invert import aligned_crops

        if self._crops is None:
            self._crops = aligned_crops(self.source, self.tracks(), self.size(), self.options.every)
        return self._crops

    def pivots(self, track_id: int) -> np.ndarray:
        return np.load(self.entry.verified(f"pivots/track_{track_id}.npy"), allow_pickle=False)


class Stage:
    """One stage: whether this bake wants it, its key (from inputs and options only, never from loaded models),
    the checkpoints its body opens, and the body, which returns the files it wrote and an info table."""

    name: ClassVar[str]
    models: ClassVar[tuple[str, ...]] = ()

    def wanted(self, bake: Bake) -> bool:
        return all(bake.models.has(role) for role in self.models)

    def key(self, bake: Bake) -> str:
        raise NotImplementedError

    def check(self, bake: Bake) -> None:
        """Checks of the inputs, run before any stage's work when this one has work to do: by default, that its
        checkpoints open as what they should hold."""
        for role in self.models:
            bake.models.get(role)

    def run(self, bake: Bake) -> Files:
        raise NotImplementedError


class Tracks(Stage):
    name = "tracks"

    def key(self, bake: Bake) -> str:
        return stage_key(stage="tracks", source=bake.entry.input_sha256(bake.source),
                         options=key_part(bake.options.render.tracking()), max_frames=bake.options.max_frames,
                         versions=tool_versions())

    def run(self, bake: Bake) -> Files:
        from stream.media.sources import MediaSource
        from stream.render.pipeline import run_tracking

        options = dataclasses.replace(bake.options.render, mode="offline")
        limit = bake.options.max_frames
        with MediaSource(bake.source, keep_audio=False) as media:
            total = media.info.frame_count if limit is None else min(limit, media.info.frame_count or limit)
        start = time.perf_counter()

        def on_frame(index: int) -> None:
            bake.note("tracks", index + 1, total, fps=(index + 1) / max(time.perf_counter() - start, 1e-9))

        tracks = run_tracking(bake.source, options, on_frame=on_frame, max_frames=limit)
        seconds = time.perf_counter() - start
        bake.entry.write_with("tracks.npz", functools.partial(_savez, arrays=tracks.to_arrays()))
        bake.entry.describe(frame_count=tracks.frame_count, fps=tracks.fps)
        bake._tracks = tracks
        bake.report.figures["tracking_fps"] = round(tracks.frame_count / max(seconds, 1e-9), 2)
        faces = sum(len(t.faces) for t in tracks.tracks)
        return ["tracks.npz"], {"frames": tracks.frame_count, "tracks": len(tracks.tracks), "faces": faces,
                                "cuts": tracks.cuts}


class Pivots(Stage):
    name = "pivots"
    models = ("generator", "encoder")

    def key(self, bake: Bake) -> str:
        # the crops are at the generator's size: the generator's file stands for it, so no model is opened here
        return stage_key(stage="pivots", tracks=bake.keys["tracks"], encoder=bake.models.sha256("encoder", bake.entry),
                         generator=bake.models.sha256("generator", bake.entry),
                         encoder_size=bake.options.encoder_size, every=bake.options.every)

    def check(self, bake: Bake) -> None:
        super().check(bake)
        bake.models.check_stylegan()

    def run(self, bake: Bake) -> Files:
        from export.invert import Inverter

        inverter = Inverter(bake.models.get("encoder"), bake.options.encoder_size)
        crops = bake.crops()
        total, done, start = sum(len(rows) for rows, _ in crops.values()), 0, time.perf_counter()

        def on_batch(n: int) -> None:
            nonlocal done
            done += n
            bake.note("pivots", done, total, fps=done / max(time.perf_counter() - start, 1e-9))

        files = []
        for track in bake.tracks().tracks:
            if track.track_id in crops:
                rows, images = crops[track.track_id]
                pivots = inverter.pivots(rows, images, len(track.faces), on_batch)
                rel = f"pivots/track_{track.track_id}.npy"
                bake.entry.write_with(rel, functools.partial(_save_npy, array=pivots))
                files.append(rel)
        bake.report.figures["inversion_fps"] = round(total / max(time.perf_counter() - start, 1e-9), 2)
        return files, {"faces_inverted": total}


class PTI(Stage):
    name = "pti"
    models = ("generator", "encoder")

    def key(self, bake: Bake) -> str:
        return stage_key(stage="pti", pivots=bake.keys["pivots"], generator=bake.models.sha256("generator", bake.entry),
                         pti=key_part(bake.options.pti))

    def check(self, bake: Bake) -> None:
        super().check(bake)
        bake.models.check_stylegan()

    def run(self, bake: Bake) -> Files:
        crops = bake.crops()
        track_ids = [t.track_id for t in bake.tracks().tracks if t.track_id in crops]
        if bake.options.pti.scope == "track":
            groups = [(f"track_{t}", [t]) for t in track_ids]
        else:
            groups = [("title", track_ids)] if track_ids else []
        files, info = [], {}
        for name, ids in groups:
            rel, figures = self._tune_group(bake, name, ids)
            files.append(rel)
            info[name] = figures
        return files, info

    def _tune_group(self, bake: Bake, name: str, track_ids: list[int]) -> tuple[str, dict[str, Any]]:
        import torch

        from engines.checkpoints import save_safetensors
        from engines.images import to_tensor
        from engines.official import Checkpoint
        from export.pti import fresh_generator, load_resume, reconstruction_error, tune

        base, key, options = bake.models.get("generator"), bake.keys["pti"], bake.options.pti
        generator = fresh_generator(base)
        pivots, targets = [], []
        for t in track_ids:
            rows, images = bake.crops()[t]
            pivots.append(torch.from_numpy(bake.pivots(t)[rows]))
            targets.append(to_tensor(images))
        w, x = torch.cat(pivots), torch.cat(targets)
        before = reconstruction_error(generator, w, x)
        mean_crop = float(((x - x.mean(0, keepdim=True)) ** 2).mean())  # the best single image: a baseline
        work = f"work/pti_{name}.pt"
        resume = load_resume(bake.entry.path(work), key)
        start = time.perf_counter()
        first = int(resume["step"]) if resume else 0

        def checkpoint(step: int, state: dict[str, Any]) -> None:
            bake.entry.write_with(work, lambda p: torch.save({**state, "key": key}, p), record=False)

        def progress(step: int, loss: float) -> None:
            rate = (step - first) / max(time.perf_counter() - start, 1e-9)
            bake.note(f"pti {name}", step, options.steps, loss=loss, steps_per_s=rate)

        losses = tune(generator, w, x, options, checkpoint, resume, progress)
        seconds = time.perf_counter() - start
        after = reconstruction_error(generator, w, x)
        tuned = Checkpoint("stylegan2", base.path, base.sha256, base.config, {"generator": generator})
        rel = f"generator/{name}.safetensors"
        bake.entry.write_with(rel, functools.partial(save_safetensors, tuned))
        bake.entry.path(work).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            bake.entry.path("work").rmdir()
        figures = bake.report.figures
        figures["pti_steps_per_s"] = round(len(losses) / max(seconds, 1e-9), 2)
        figures[f"pti_{name}_mse_before"], figures[f"pti_{name}_mse_after"] = before, after
        log.info("PTI %s: mse %.4f -> %.4f over %d steps (%d run now)", name, before, after, options.steps,
                 len(losses))
        return rel, {"mse_before": before, "mse_after": after, "mse_mean_crop": mean_crop, "steps": options.steps,
                     "resumed_at": first, "crops": len(w), "loss_first": losses[0] if losses else None,
                     "loss_last": losses[-1] if losses else None}


class Stitch(Stage):
    name = "stitch"
    models = ("generator", "encoder")

    def wanted(self, bake: Bake) -> bool:
        return super().wanted(bake) and bool(bake.options.edits)

    def key(self, bake: Bake) -> str:
        edits = [(d.name, d.convention, sha256_bytes(np.ascontiguousarray(d.vector).tobytes()), factor)
                 for d, factor in bake.options.edits]
        return stage_key(stage="stitch", pti=bake.keys["pti"], edits=edits, stitch=key_part(bake.options.stitch))

    def check(self, bake: Bake) -> None:
        super().check(bake)
        from engines.checkpoints import generator_of
        from engines.directions import fits

        generator = bake.models.get("generator")
        styles = int(generator_of(generator).num_ws)
        for direction, _ in bake.options.edits:
            if not fits(direction, styles):
                raise BakeError(f"{direction.path}: a {direction.vector.shape} direction does not fit "
                                f"{generator.path}'s {styles} styles")

    def run(self, bake: Bake) -> Files:
        import torch

        from engines.directions import apply_direction
        from export.invert import aligned_crops
        from export.stitching import StitchJob, map_segments, segments
        from stream.look.align import alignment
        from stream.look.masks import face_mask

        size, options = bake.size(), bake.options.stitch
        crops = bake.crops() if bake.options.every == 1 else aligned_crops(bake.source, bake.tracks(), size)
        jobs: list[StitchJob] = []
        where: list[tuple[int, list[int]]] = []
        for track in bake.tracks().tracks:
            if track.track_id not in crops:
                continue
            rows, images = crops[track.track_id]
            edited = torch.from_numpy(bake.pivots(track.track_id)[rows])
            for direction, factor in bake.options.edits:
                edited = apply_direction(edited, direction, factor)
            masks = []
            for row in rows:
                face = track.faces[row]
                align = alignment(face.crop_params, size)
                masks.append(face_mask(align.points_to_crop(face.landmarks.astype(np.float64)), size))
            generator = str(bake.entry.verified(bake.entry.generator_rel(track.track_id)))
            for a, b in segments(len(rows), options.segment):
                jobs.append(StitchJob(generator, edited[a:b].numpy(), images[a:b], np.stack(masks[a:b]), options))
                where.append((track.track_id, rows[a:b]))
        start = time.perf_counter()

        def on_done(done: int, figures: dict[str, float]) -> None:
            bake.note("stitch", done, len(jobs), border=figures["border_after"])

        results = map_segments(jobs, bake.options.segment_executor, on_done)
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
            bake.entry.write_with(rel, functools.partial(_savez, arrays=arrays))
            files.append(rel)
        figures = {k: float(np.mean([f[k] for _, f in results])) for k in ("border_before", "border_after",
                                                                             "content_after", "steps")}
        bake.report.figures.update({f"stitch_{k}": round(v, 5) for k, v in figures.items()})
        bake.report.figures["stitch_segments_per_s"] = round(len(jobs) / max(seconds, 1e-9), 3)
        edits = {d.name: float(f) for d, f in bake.options.edits}
        return files, {"edits": edits, "segments": len(jobs), "executor": bake.options.segment_executor, **figures}


class Export(Stage):
    name = "export"
    models = ("generator", "encoder")

    def wanted(self, bake: Bake) -> bool:
        return super().wanted(bake) and bool(bake.options.export)

    def key(self, bake: Bake) -> str:
        return stage_key(stage="export", pti=bake.keys["pti"], formats=sorted(bake.options.export),
                         versions=tool_versions())

    def run(self, bake: Bake) -> Files:
        from engines.checkpoints import generator_of, open_checkpoint
        from engines.stylegan2 import SynthesisEngine
        from export.onnx import check_onnx, export_onnx

        entry, formats = bake.entry, bake.options.export
        stage = entry.stage("pti")
        assert stage is not None
        files: list[str] = []
        info: dict[str, Any] = {}
        for rel in stage.files:
            ckpt = open_checkpoint(entry.verified(rel), "stylegan2")
            module = SynthesisEngine(generator_of(ckpt)).eval()
            base = rel.rsplit(".", 1)[0]
            if "onnx" in formats or "plan" in formats:
                onnx_rel = base + ".onnx"
                meta = {"architecture": "stylegan2-synthesis", "source_sha256": ckpt.sha256, "title": entry.id}
                entry.write_with(onnx_rel, functools.partial(export_onnx, module, metadata=meta))
                check = check_onnx(module, entry.path(onnx_rel), atol=1e-4)
                if not check.ok:
                    raise BakeError(f"{entry.path(onnx_rel)}: ONNX round trip failed: {check.format()}")
                info[onnx_rel] = {"max_abs_error": max(check.errors.values())}
                files.append(onnx_rel)
            if "plan" in formats:
                from export.tensorrt import build_plan

                plan_rel = base + ".plan"
                entry.write_with(plan_rel, functools.partial(build_plan, entry.path(onnx_rel)))
                files.append(plan_rel)
        return files, info


class FOMMKeypoints(Stage):
    name = "fomm"
    models = ("fomm",)

    def key(self, bake: Bake) -> str:
        return stage_key(stage="fomm", tracks=bake.keys["tracks"], fomm=bake.models.sha256("fomm", bake.entry))

    def run(self, bake: Bake) -> Files:
        import torch

        from engines.fomm import KeypointEngine, KPDetector
        from engines.images import to_tensor
        from export.invert import aligned_crops

        fomm = bake.models.get("fomm")
        size = int(fomm.config.get("image_size", 256))
        detector = fomm.modules["kp_detector"]
        assert isinstance(detector, KPDetector)
        engine = KeypointEngine(detector, size).eval()
        files = []
        for track_id, (rows, images) in aligned_crops(bake.source, bake.tracks(), size).items():
            values, jacobians = [], []
            with torch.no_grad():
                for i in range(0, len(images), 8):
                    v, j = engine(to_tensor(images[i : i + 8], "unit"))
                    values.append(v.numpy())
                    jacobians.append(j.numpy())
            rel = f"fomm/track_{track_id}.npz"
            arrays = {"rows": np.asarray(rows), "value": np.concatenate(values), "jacobian": np.concatenate(jacobians)}
            bake.entry.write_with(rel, functools.partial(_savez, arrays=arrays))
            files.append(rel)
        return files, {"size": size}


class Renditions(Stage):
    """The original and a recast per cast, encoded once for the relay (export/renditions.py)."""

    name = "renditions"

    def wanted(self, bake: Bake) -> bool:
        return bool(bake.options.renditions.casts)

    def _casts(self, bake: Bake) -> list[Cast]:
        from export.renditions import rendition_casts

        options = bake.options.renditions
        return rendition_casts(options.casts, options.registry, bake.options.render.detector)

    def key(self, bake: Bake) -> str:
        casts = {c.cast_id: c.describe()["pixels_sha256"] for c in self._casts(bake)}
        return stage_key(stage="renditions", tracks=bake.keys["tracks"], source=bake.entry.input_sha256(bake.source),
                         casts=casts, options=key_part(bake.options.renditions),
                         look={"detector": bake.options.render.detector, "occlusion": bake.options.render.occlusion},
                         versions=tool_versions())

    def check(self, bake: Bake) -> None:
        from export.renditions import probe

        probe(bake.source)
        self._casts(bake)

    def run(self, bake: Bake) -> Files:
        from export.renditions import (
            AUDIO,
            ORIGINAL,
            baked_frames,
            cast_recaster,
            cast_rendition,
            encode_audio,
            encode_video,
            gop_frames,
            index_file,
            probe,
            stream_file,
        )

        options, tracks = bake.options.renditions, bake.tracks()
        source, origin = probe(bake.source)
        gop = gop_frames(tracks.fps, options.gop_s)
        detector, occlusion = bake.options.render.detector, bake.options.render.occlusion
        jobs = [(ORIGINAL, None)] + [(cast_rendition(c.cast_id), cast_recaster(c, detector))
                                     for c in self._casts(bake)]
        files: list[str] = []
        sizes: dict[str, int] = {}
        for done, (name, recaster) in enumerate(jobs):
            made: dict[str, Any] = {}

            def write(tmp: Path, recaster: Any = recaster, made: dict[str, Any] = made) -> None:
                frames = baked_frames(bake.source, tracks, recaster, occlusion, mark_id=f"title:{bake.entry.id}")
                made["index"] = encode_video(frames, tracks.fps, tmp, gop=gop, crf=options.crf,
                                             max_kbps=options.max_kbps)

            bake.entry.write_with(stream_file(name), write)
            bake.entry.write_with(index_file(name), made["index"].save)
            files += [stream_file(name), index_file(name)]
            sizes[name] = int(made["index"].sizes.sum())
            bake.note("renditions", done + 1, len(jobs))
        if source.has_audio:
            audio: dict[str, Any] = {}

            def write_audio(tmp: Path) -> None:
                seconds = tracks.frame_count / max(tracks.fps, 1e-9)
                audio["index"] = encode_audio(bake.source, tmp, max_seconds=seconds)

            bake.entry.write_with(stream_file(AUDIO), write_audio)
            bake.entry.write_with(index_file(AUDIO), audio["index"].save)
            files += [stream_file(AUDIO), index_file(AUDIO)]
            sizes[AUDIO] = int(audio["index"].sizes.sum())
        bake.report.figures["rendition_mb"] = round(sum(sizes.values()) / 1e6, 3)
        return files, {"gop_frames": gop, "fps": tracks.fps, "frames": tracks.frame_count, "bytes": sizes,
                       "origin": origin}


STAGES: tuple[Stage, ...] = (Tracks(), Pivots(), PTI(), Stitch(), Export(), FOMMKeypoints(), Renditions())


def bake_title(cache: TitleCache, title_id: str, source: str | Path, models: Models, options: BakeOptions,
               progress: Progress | None = None) -> BakeReport:
    """Bake what is missing. Every wanted stage's key is computed first; the inputs are checked (models opened)
    only when some stage has work to do, and a stage whose key and files are in the cache is skipped."""
    source = Path(source)
    if not source.is_file():
        raise BakeError(f"{source}: no such file")
    entry = cache.entry(title_id)
    with entry.locked():
        bake = Bake(entry, source, models, options, progress)
        wanted = [stage for stage in STAGES if stage.wanted(bake)]
        for stage in wanted:
            bake.keys[stage.name] = stage.key(bake)
        todo = [stage for stage in wanted if not entry.is_done(stage.name, bake.keys[stage.name])]
        for stage in todo:
            stage.check(bake)
        for stage in wanted:
            if stage not in todo:
                bake.report.stages[stage.name] = "cached"
                log.info("%s: %s is cached", entry.id, stage.name)
                continue
            start = time.perf_counter()
            files, info = stage.run(bake)
            seconds = time.perf_counter() - start
            entry.complete(stage.name, bake.keys[stage.name], files, info, seconds)
            bake.report.stages[stage.name] = "baked"
            bake.report.seconds[stage.name] = round(seconds, 3)
        entry.describe(source=str(source.resolve()), source_sha256=entry.input_sha256(source))
        entry.touch()
    cache.evict(keep=entry.id)
    return bake.report


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with path.open("wb") as f:
        np.savez(f, allow_pickle=False, **arrays)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as f:
        np.save(f, array)
