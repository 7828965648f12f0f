"""`recast bake`, `recast export` and the playback of baked titles (`recast render --title ID --cache DIR`)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engines.edits import edit_factor
from engines.errors import InputError
from engines.formats import BAKE_EXPORTS, EXPORTS
from stream.cli.options import add_detector_option, progress_bar


class BakeUsageError(InputError, ValueError):
    """Bad bake/export/playback arguments (exit status 2)."""


def _batch(text: str) -> tuple[int, int, int]:
    try:
        low, opt, high = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch is MIN:OPT:MAX, got {text!r}") from None
    if not 1 <= low <= opt <= high:
        raise argparse.ArgumentTypeError(f"--batch needs 1 <= MIN <= OPT <= MAX, got {text!r}")
    return low, opt, high


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    text = text.strip().lower().removesuffix("b")
    try:
        return int(float(text[:-1]) * units[text[-1]]) if text and text[-1] in units else int(text)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"a size like 20G or 500M, got {text!r}") from None


def add_bake_commands(sub: Any) -> None:
    bake = sub.add_parser("bake", help="pre-bake titles into the title cache (tracks, e4e pivots, PTI, export)")
    bake.add_argument("inputs", nargs="+", metavar="INPUT", help="title video(s); several are baked as a batch")
    bake.add_argument("--title", help="title id (one INPUT; default: the file name's stem)")
    bake.add_argument("--cache", required=True, metavar="DIR")
    bake.add_argument("--generator", metavar="G.pkl", help="StyleGAN2 generator (official .pkl or ours)")
    bake.add_argument("--encoder", metavar="e4e.pt", help="e4e encoder (official .pt or ours)")
    bake.add_argument("--fomm", metavar="vox-cpk.pth.tar", help="also bake the actor's FOMM keypoints")
    bake.add_argument("--executor", choices=("local", "ray"), default="local")
    bake.add_argument("--ray-address", help="an existing Ray cluster (default: RAY_ADDRESS, else a local one)")
    bake.add_argument("--pti-steps", type=int, default=300)
    bake.add_argument("--pti-scope", choices=("title", "track"), default="title")
    bake.add_argument("--pti-lr", type=float, default=3e-4)
    bake.add_argument("--pti-batch", type=int, default=4)
    bake.add_argument("--l2-weight", type=float, default=1.0)
    bake.add_argument("--lpips", metavar="WEIGHTS", help="local LPIPS weights; adds the LPIPS term to PTI")
    bake.add_argument("--lpips-weight", type=float, default=1.0)
    bake.add_argument("--checkpoint-every", type=int, default=25, metavar="STEPS",
                      help="PTI checkpoint interval (a killed bake resumes from the last one)")
    bake.add_argument("--every", type=int, default=1, metavar="N", help="invert and tune on every N-th face")
    bake.add_argument("--encoder-size", type=int, default=256, metavar="PX")
    bake.add_argument("--export", default="", metavar="onnx[,plan]", help="export the tuned generator")
    bake.add_argument("--max-frames", type=int, metavar="N", help="bake only the first N frames")
    bake.add_argument("--renditions", default="", metavar="CAST[,CAST...]|all",
                      help="also encode the title's original and a recast per cast for the relay (all: every "
                           "built-in and registered cast)")
    bake.add_argument("--casts", metavar="DIR", help="the cast registry --renditions reads (default: $RECAST_CASTS "
                      "or ~/.local/share/recast/casts)")
    bake.add_argument("--cache-limit", type=_size, metavar="SIZE", help="bound on cached engines (LRU eviction)")
    bake.add_argument("--detect-interval", type=int, default=10, metavar="N")
    add_detector_option(bake)
    bake.add_argument("--edit", action="append", default=[], metavar="NAME=FACTOR",
                      help="a bake-time edit, stitched per track segment (repeatable; needs a StyleGAN bake)")
    bake.add_argument("--directions", metavar="DIR", help="folder of direction files for --edit")
    bake.add_argument("--stitch-steps", type=int, default=100, metavar="N", help="stitching tuning steps per segment")
    bake.add_argument("--stitch-segment", type=int, default=25, metavar="FACES", help="faces per stitching segment")
    bake.add_argument("--stitch-lr", type=float, default=3e-4)
    bake.add_argument("--stitch-content-weight", type=float, default=0.01,
                      help="weight of the content loss inside the face (STIT's content_loss_lambda)")

    export = sub.add_parser("export", help="export a checkpoint's networks to ONNX or a TensorRT plan")
    export.add_argument("checkpoint", metavar="CHECKPOINT")
    export.add_argument("--format", choices=EXPORTS, required=True)
    export.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="file (.onnx/.plan), or a folder for a FOMM checkpoint's two networks")
    export.add_argument("--kind", choices=("stylegan2", "fomm", "e4e"))
    export.add_argument("--fp16", action="store_true", help="TensorRT: build in fp16")
    export.add_argument("--batch", type=_batch, default=(1, 4, 16), metavar="MIN:OPT:MAX")
    export.add_argument("--atol", type=float, default=1e-4, help="ONNX round-trip tolerance against PyTorch")


def bake_options(args: argparse.Namespace) -> Any:
    from export.options import BakeOptions, PTIOptions, RenditionOptions, StitchOptions
    from stream.render.options import RenderOptions

    formats = tuple(f for f in args.export.split(",") if f)
    bad = [f for f in formats if f not in BAKE_EXPORTS]
    if bad:
        raise BakeUsageError(f"--export takes {' and '.join(BAKE_EXPORTS)}, got {bad}")
    for name in ("pti_steps", "pti_batch", "checkpoint_every", "every", "encoder_size", "stitch_steps",
                 "stitch_segment"):
        if getattr(args, name) < 1:
            raise BakeUsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_frames is not None and args.max_frames < 1:
        raise BakeUsageError("--max-frames must be at least 1")
    if args.lpips and not Path(args.lpips).is_file():
        raise BakeUsageError(f"{args.lpips}: no such LPIPS weights file")
    pti = PTIOptions(steps=args.pti_steps, scope=args.pti_scope, lr=args.pti_lr, batch=args.pti_batch,
                     l2_weight=args.l2_weight, lpips_weight=args.lpips_weight, lpips=args.lpips,
                     checkpoint_every=args.checkpoint_every)
    if args.edit and not args.generator:
        raise BakeUsageError("--edit needs a StyleGAN bake (--generator and --encoder)")
    stitch = StitchOptions(steps=args.stitch_steps, segment=args.stitch_segment, lr=args.stitch_lr,
                           content_weight=args.stitch_content_weight)
    renditions = RenditionOptions(casts=tuple(c for c in args.renditions.split(",") if c),
                                  registry=str(Path(args.casts).resolve()) if args.casts else None)
    return BakeOptions(render=RenderOptions(detect_interval=args.detect_interval, detector=args.detector),
                       encoder_size=args.encoder_size,
                       every=args.every, pti=pti, export=formats, max_frames=args.max_frames,
                       edits=tuple(parse_edits(args.edit, args.directions)), stitch=stitch,
                       segment_executor=args.executor, renditions=renditions)


def cmd_bake(args: argparse.Namespace) -> int:
    from engines.cache import TITLE_ID
    from export.executors import BakeJob, run_local, run_ray

    if args.title and len(args.inputs) > 1:
        raise BakeUsageError("--title names one title; with several inputs each takes its file name's stem")
    for path in [*args.inputs, args.generator, args.encoder, args.fomm]:
        if path and not Path(path).is_file():
            raise BakeUsageError(f"{path}: no such file")
    if bool(args.generator) != bool(args.encoder):
        raise BakeUsageError("a StyleGAN bake needs both --generator and --encoder")
    jobs = []
    for path in args.inputs:
        title = args.title or Path(path).stem
        if not TITLE_ID.match(title):
            raise BakeUsageError(f"{path}: {title!r} is not a valid title id (give --title)")
        generator, encoder, fomm = (str(Path(p).resolve()) if p else None
                                    for p in (args.generator, args.encoder, args.fomm))
        jobs.append(BakeJob(title, str(Path(path).resolve()), str(Path(args.cache).resolve()), generator, encoder,
                            fomm, cache_limit_bytes=args.cache_limit))
    if len({j.title_id for j in jobs}) != len(jobs):
        raise BakeUsageError("two inputs have the same title id (file stem)")
    options = bake_options(args)
    if args.executor == "ray":
        run_ray(jobs, options, args.ray_address, on_done=_print_report)
        return 0
    for job in jobs:
        with _StageBars() as bars:
            _print_report(run_local([job], options, bars.update)[0])
    return 0


def _print_report(result: dict[str, Any]) -> None:
    stages = ", ".join(f"{k} {v}" for k, v in result["stages"].items())
    figures = ", ".join(f"{k} {v:.4g}" for k, v in result["figures"].items())
    hit = " (cache hit: nothing to do)" if all(v == "cached" for v in result["stages"].values()) else ""
    print(f"{result['title']}: {stages}{hit}" + (f"; {figures}" if figures else ""))


class _StageBars:
    """One progress bar per stage, with the stage's figures (PTI's loss) as its postfix."""

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}

    def update(self, stage: str, done: int, total: int, figures: dict[str, float]) -> None:
        bar = self.bars.get(stage)
        if bar is None:
            unit = {"pti": "step", "stitch": "segment"}.get(stage.split()[0], "frame")
            bar = self.bars[stage] = progress_bar(total, stage, unit=unit)
        bar.n = done
        bar.set_postfix({k: f"{v:.4g}" for k, v in figures.items()}, refresh=False)
        bar.refresh()

    def __enter__(self) -> _StageBars:
        return self

    def __exit__(self, *exc: object) -> None:
        for bar in self.bars.values():
            bar.close()


def cmd_export(args: argparse.Namespace) -> int:
    from engines.checkpoints import open_checkpoint
    from engines.families import family
    from engines.runtime import engine_module
    from export.onnx import check_onnx, export_onnx

    ckpt = open_checkpoint(args.checkpoint, kind=args.kind)
    print(f"{ckpt.path}: {ckpt.kind}, sha256 {ckpt.sha256}", file=sys.stderr)
    output = Path(args.output)
    parts: list[str | None] = list(family(ckpt.kind).exports)
    if len(parts) > 1:
        output.mkdir(parents=True, exist_ok=True)
    for part in parts:
        module = engine_module(ckpt, part)
        name = f"{ckpt.kind}-{part}" if len(parts) > 1 else ckpt.kind
        onnx_path = output / f"{name}.onnx" if len(parts) > 1 else output.with_suffix(".onnx")
        metadata = {"architecture": name, "source_sha256": ckpt.sha256, "source_name": ckpt.path.name}
        export_onnx(module, onnx_path, metadata=metadata, max_batch=args.batch[2])
        check = check_onnx(module, onnx_path, atol=args.atol)
        print(check.format())
        if not check.ok:
            raise BakeUsageError(f"{onnx_path}: the ONNX round trip is over the tolerance")
        if args.format == "tensorrt":
            from export.tensorrt import build_plan

            plan = onnx_path.with_suffix(".plan")
            build_plan(onnx_path, plan, fp16=args.fp16, batch=args.batch)
            print(f"{plan}: TensorRT plan ({'fp16' if args.fp16 else 'fp32'}, batch {args.batch})")
    return 0


def parse_edits(edits: list[str], directions: str | None) -> list[tuple[Any, float]]:
    """`--edit NAME=FACTOR` options: (direction, factor) pairs; NAME is a file in `directions` (its stem) or a
    direction file's path."""
    if not edits:
        return []
    from engines.directions import list_directions, load_direction

    found: dict[str, Any] | None = None
    parsed = []
    for edit in edits:
        name, sep, factor = edit.partition("=")
        if not sep or not name:
            raise BakeUsageError(f"--edit {edit!r}: NAME=FACTOR, e.g. age=2")
        value = edit_factor(factor, f"--edit {edit!r}")
        if Path(name).suffix in (".npy", ".pt"):
            parsed.append((load_direction(name), value))
            continue
        if not directions:
            raise BakeUsageError(f"--edit {name}: give --directions DIR (or the direction file's path)")
        if found is None:
            found = {d.name: d for d in list_directions(directions)}
        if name not in found:
            raise BakeUsageError(f"--edit {name}: no such direction in {directions} "
                                 f"(has {', '.join(sorted(found)) or 'none'})")
        parsed.append((found[name], value))
    return parsed


def baked_recaster(args: argparse.Namespace, casts: list[Any]) -> tuple[Any, Any]:
    """The baked title and the `stylegan` or `fomm` recaster on it, from `recast render` arguments."""
    from engines.cache import TitleCache
    from engines.checkpoints import open_checkpoint
    from stream.perception.baked_title import BakedTitle
    from stream.recasters.learned import FOMMRecaster, StyleGANRecaster

    title = BakedTitle(TitleCache(args.cache), args.title)
    if args.engine == "stylegan":
        recaster = StyleGANRecaster(title, device=args.device, runtime=args.runtime)
        for direction, value in parse_edits(args.edit, args.directions):
            recaster.set_edit(direction, value)
        return title, recaster
    if not args.fomm:
        raise BakeUsageError("--engine fomm needs --fomm CHECKPOINT (vox-cpk.pth.tar or ours)")
    return title, FOMMRecaster(open_checkpoint(args.fomm, "fomm"), casts, title, device=args.device)


def render_baked(args: argparse.Namespace, casts: list[Any], options: Any, classical: Any,
                 progress: Callable[[int, str], contextlib.AbstractContextManager[Callable[[int], None]]]) -> int:
    """`recast render --title ID --cache DIR`: the cached tracks (no detection) and any recaster; `classical` is
    the identity or warp recaster when one of those was asked for."""
    from engines.cache import TitleCache
    from stream.perception.baked_title import BakedTitle
    from stream.render.pipeline import render

    if classical is not None:
        title, recaster = BakedTitle(TitleCache(args.cache), args.title), classical
    else:
        title, recaster = baked_recaster(args, casts)
    source = title.source_file(Path(args.input) if args.input else None)
    options.mode = "offline"
    output = Path(args.output)
    with progress(title.tracks.frame_count, f"render {title.id}") as tick:
        report = render(source, output, recaster, options, tracks=title.tracks, on_frame=tick)
    print(f"{output}: {report.frames} frames of baked title {title.id}, {report.faces_recast} faces recast by "
          f"{recaster.name} ({report.faces_failed} failed), {report.frames / max(report.seconds, 1e-9):.1f} fps")
    return 0 if report.faces_failed == 0 or report.faces_recast > 0 else 1


BAKE_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"bake": cmd_bake, "export": cmd_export}
