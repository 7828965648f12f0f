"""`recast bench --only bake`: what a bake costs and what it saves, in one run on one title.

The title is baked into a throw-away cache (tracks, e4e pivots, PTI), timing each stage: tracking in frames per
second, inversion in faces per second, tuning in PTI steps per second. Then the same title is played three ways,
each rendered to a file as fast as it goes: the `warp` recaster with live tracking (detection, landmarks, the
causal smoother), the `warp` recaster on the baked tracks (no detection: the cost the bake removes), and the
`stylegan` recaster on the baked tracks (the tuned generator on each frame's pivot), eager and through the
bake's ONNX export on ONNX Runtime. Without --generator and
--encoder the bake uses the small untrained models of `export.small`: the figures then show the machinery's
cost at 64 px, not an FFHQ model's.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from engines.cache import TitleCache
from export.bake import Models, bake_title
from export.options import BakeOptions, PTIOptions
from export.small import SMALL_ENCODER_SIZE, small_models
from stream.perception.baked_title import BakedTitle
from stream.recasters.contract import Recaster
from stream.recasters.learned import StyleGANRecaster
from stream.render.options import RenderOptions
from stream.render.pipeline import render


def _play(location: str | Path, folder: Path, name: str, recaster: Recaster, options: RenderOptions,
          title: BakedTitle | None) -> dict[str, Any]:
    report = render(location, folder / f"{name}.mp4", recaster, options,
                    tracks=title.tracks if title is not None else None)
    return {"fps": report.as_dict()["fps"],
            "wall_ms_per_frame": round(report.seconds * 1e3 / max(report.frames, 1), 2),
            "ms_per_frame": report.ms_per_frame, "faces_recast": report.faces_recast, "frames": report.frames}


def run_bake_bench(location: str | Path, warp: Recaster, options: RenderOptions, *, generator: str | None = None,
                   encoder: str | None = None, encoder_size: int = 256, pti_steps: int = 50,
                   device: str = "cpu") -> dict[str, Any]:
    if (generator is None) != (encoder is None):
        raise ValueError("give both --generator and --encoder, or neither (the small built-in models)")
    if generator is None:
        models = Models(*small_models())
        encoder_size, which = SMALL_ENCODER_SIZE, "small untrained 64 px StyleGAN2 + e4e (export.small)"
    else:
        models = Models.open(generator, encoder, None)
        which = f"{generator} + {encoder}"
    bake = BakeOptions(render=options, encoder_size=encoder_size, pti=PTIOptions(steps=pti_steps), export=("onnx",))
    with tempfile.TemporaryDirectory(prefix="recast-bake-bench-") as tmp:
        folder = Path(tmp)
        cache = TitleCache(folder / "cache")
        start = time.perf_counter()
        report = bake_title(cache, "bench", location, models, bake)
        bake_seconds = time.perf_counter() - start
        start = time.perf_counter()
        hit = bake_title(cache, "bench", location, models, bake)  # every stage cached: keys and verification only
        hit_seconds = time.perf_counter() - start
        if set(hit.stages.values()) != {"cached"}:
            raise RuntimeError(f"a second bake of the same inputs re-ran stages: {hit.stages}")
        title = BakedTitle(cache, "bench")
        faces = sum(len(t.faces) for t in title.tracks.tracks)
        offline = dataclasses.replace(options, mode="offline")
        playback = {
            "warp_live_tracking": _play(location, folder, "live", warp, dataclasses.replace(options, mode="live"),
                                        None),
            "warp_baked_tracks": _play(location, folder, "baked", warp, offline, title),
            "stylegan_baked": _play(location, folder, "stylegan", StyleGANRecaster(title, device=device), offline,
                                    title),
            "stylegan_baked_onnx": _play(location, folder, "onnx", StyleGANRecaster(title, runtime="onnx"), offline,
                                         title),
        }
    return {"input": str(location), "models": which, "frames": title.tracks.frame_count, "faces": faces,
            "pti_steps": pti_steps, "bake_seconds": round(bake_seconds, 2),
            "cache_hit_seconds": round(hit_seconds, 3),
            "stage_seconds": {k: round(v, 2) for k, v in report.seconds.items()},
            "figures": report.figures, "playback": playback}


def format_bake_bench(result: dict[str, Any]) -> str:
    figures, playback = result["figures"], result["playback"]
    lines = [
        f"bake of {result['input']} ({result['frames']} frames, {result['faces']} faces) with {result['models']}: "
        f"{result['bake_seconds']:.1f} s",
        f"  tracking {figures.get('tracking_fps', 0):.1f} frames/s, inversion {figures.get('inversion_fps', 0):.1f} "
        f"faces/s, PTI {figures.get('pti_steps_per_s', 0):.1f} steps/s ({result['pti_steps']} steps; error "
        f"{figures.get('pti_title_mse_before', 0):.3f} -> {figures.get('pti_title_mse_after', 0):.3f})",
        "  stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result["stage_seconds"].items()),
        f"  a second bake (a cache hit, in the same process): {result['cache_hit_seconds']:.3f} s",
        "playback (ms/frame per stage, summed over threads):",
    ]
    for name, run in playback.items():
        stages = ", ".join(f"{k} {v:.2f}" for k, v in run["ms_per_frame"].items())
        lines.append(f"  {name:<20} {run['fps']:6.1f} fps ({run['wall_ms_per_frame']:.1f} ms/frame wall): {stages}")
    return "\n".join(lines)
