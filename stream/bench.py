"""``recast bench``: per-stage cost and real-time factor of the live path, and tracking against a naive
baseline (full-frame detection on every frame), measured in the same run on the same frames."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from stream.faces import FaceDetector, LandmarkPredictor, to_gray
from stream.media import Frame, MediaSource
from stream.pipeline import RenderOptions, make_tracker, render
from stream.recasters import Recaster
from stream.tracks import LiveFaceStage


def bench_tracking(location: str | Path, options: RenderOptions, naive_frames: int = 60) -> dict[str, Any]:
    """Tracking cost per frame (detect + landmarks + cut detection + live smoothing) on pre-decoded frames,
    against detecting on every full frame (the same landmark model) over the first ``naive_frames``."""
    with MediaSource(location, keep_audio=False) as source:
        frames = [Frame(f.index, f.pts, f.time_base, to_gray(f.image)) for f in source.frames()]
    predictor = LandmarkPredictor()
    tracker = make_tracker(options, predictor)
    stage = LiveFaceStage(tracker, options.lookahead)
    faces = 0
    start = time.perf_counter()
    for frame in frames:
        for _, found, _ in stage.push(frame, frame.image):
            faces += len(found)
    for _, found, _ in stage.flush():
        faces += len(found)
    tracked_s = time.perf_counter() - start

    detector = FaceDetector(detect_width=0, upsample=0)
    subset = frames[:naive_frames]
    naive_faces = 0
    start = time.perf_counter()
    for frame in subset:
        for box in detector.detect(frame.image):
            predictor.predict(frame.image, box)
            naive_faces += 1
    naive_s = time.perf_counter() - start
    tracked_ms = tracked_s * 1e3 / len(frames)
    naive_ms = naive_s * 1e3 / max(len(subset), 1)
    return {
        "frames": len(frames),
        "tracked_ms_per_frame": round(tracked_ms, 3),
        "tracked_faces_per_frame": round(faces / len(frames), 3),
        "detections": tracker.stats.detections,
        "landmark_calls": tracker.stats.landmark_calls,
        "naive_frames": len(subset),
        "naive_ms_per_frame": round(naive_ms, 3),
        "naive_faces_per_frame": round(naive_faces / max(len(subset), 1), 3),
        "speedup_vs_naive": round(naive_ms / tracked_ms, 2) if tracked_ms > 0 else None,
        "cuts": tracker.stats.cuts,
    }


def bench_live_path(location: str | Path, recaster: Recaster, options: RenderOptions, repeats: int = 1
                    ) -> dict[str, Any]:
    """The whole live path (decode, track, smooth, align, recast, paste, badge, encode) on a file,
    as fast as it goes: frames per second and the factor against the source's own frame rate."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="recast-bench-") as tmp:
        for i in range(repeats):
            report = render(location, Path(tmp) / f"bench{i}.mp4", recaster, options)
            runs.append(report.as_dict())
    best = max(runs, key=lambda r: r["realtime_factor"])
    return {
        "frames": best["frames"],
        "fps": best["fps"],
        "realtime_factor": best["realtime_factor"],
        "ms_per_frame": best["ms_per_frame"],
        "wall_ms_per_frame": round(best["seconds"] * 1e3 / max(best["frames"], 1), 3),
        "faces_recast": best["faces_recast"],
        "dropped": best["dropped"],
        "runs_realtime_factor": [r["realtime_factor"] for r in runs],
    }


def run_bench(location: str | Path, recaster: Recaster, options: RenderOptions, repeats: int = 2
              ) -> dict[str, Any]:
    with MediaSource(location, keep_audio=False) as source:
        info = source.info
    live_options = dataclasses.replace(options, mode="live")
    return {
        "input": str(location),
        "width": info.width,
        "height": info.height,
        "fps": round(info.fps, 3),
        "engine": recaster.name,
        "detect_interval": options.detect_interval,
        "live_path": bench_live_path(location, recaster, live_options, repeats),
        "tracking": bench_tracking(location, live_options),
        "cpu_count": _cpus(),
    }


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def format_bench(result: dict[str, Any]) -> str:
    live, tracking = result["live_path"], result["tracking"]
    lines = [
        f"input {result['input']} ({result['width']}x{result['height']} @ {result['fps']} fps), "
        f"engine {result['engine']}, {result['cpu_count']} cpu",
        f"live path: {live['fps']:.1f} fps, {live['realtime_factor']:.2f}x real time "
        f"({live['wall_ms_per_frame']:.1f} ms/frame wall, {live['frames']} frames)",
        "  per stage (ms/frame, summed over threads): "
        + ", ".join(f"{k} {v:.2f}" for k, v in live["ms_per_frame"].items()),
        f"tracking: {tracking['tracked_ms_per_frame']:.2f} ms/frame "
        f"({tracking['detections']} detections, {tracking['landmark_calls']} landmark calls); "
        f"naive full-frame detection every frame: {tracking['naive_ms_per_frame']:.2f} ms/frame "
        f"-> {tracking['speedup_vs_naive']}x",
    ]
    return "\n".join(lines)

