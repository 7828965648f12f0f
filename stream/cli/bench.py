"""``recast bench``: per-stage cost and real-time factor of the live path, tracking against a naive baseline
(full-frame detection on every frame), measured in the same run on the same frames, and the cost of each step
of the warp's look (stream/look/) on the input's own faces."""

from __future__ import annotations

import dataclasses
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stream.look.blinks import eyes_to_read
from stream.look.detail import Softening
from stream.look.finish import TrackLook
from stream.look.lids import TrackLids
from stream.media.machine import usable_cores
from stream.media.sources import MediaSource
from stream.perception.face_stage import LiveFaceStage
from stream.perception.geometry import to_gray
from stream.perception.hog import FaceDetector, LandmarkPredictor
from stream.recasters.contract import Recaster
from stream.render.options import RenderOptions
from stream.render.pipeline import make_tracker, render
from stream.render.renderer import FaceRenderer, HeldFace


def _naive(options: RenderOptions) -> Callable[[np.ndarray, np.ndarray], int]:
    """The naive baseline of a detector: find every face on every full frame and run the landmark model on each."""
    if options.detector == "mediapipe":
        from stream.perception.blazeface import BlazeFace
        from stream.perception.mesh import FaceMesh, crop_from_detection

        detector, mesh = BlazeFace(tiles=options.tiles, threads=options.threads), FaceMesh(threads=options.threads)

        def mediapipe(rgb: np.ndarray, _gray: np.ndarray) -> int:
            found = detector.detect_rgb(rgb)
            for d in found:
                mesh.run(rgb, crop_from_detection(d))
            return len(found)

        return mediapipe
    hog, predictor = FaceDetector(detect_width=0, upsample=0), LandmarkPredictor()

    def dlib_hog(_rgb: np.ndarray, gray: np.ndarray) -> int:
        boxes = hog.detect(gray)
        for box in boxes:
            predictor.predict(gray, box)
        return len(boxes)

    return dlib_hog


def bench_tracking(location: str | Path, options: RenderOptions, naive_frames: int = 60,
                   span: tuple[int, int] | None = None) -> dict[str, Any]:
    """Tracking cost per frame (detect + landmarks + cut detection + live smoothing) on pre-decoded frames (the
    frames of ``span``, first and last index, when given), against the naive baseline (every face found on every
    full frame, the same models) over the first ``naive_frames``. Also the landmark model's own cost per face,
    timed on every call the tracker makes."""
    with MediaSource(location, keep_audio=False) as source:
        frames = [f for f in source.frames() if span is None or span[0] <= f.index <= span[1]]
    grays = [to_gray(f.image) for f in frames]
    tracker = make_tracker(options)
    calls: list[float] = []
    mesh = getattr(tracker, "mesh", None) or getattr(tracker, "predictor", None)
    timed = _timing(mesh, "run" if hasattr(mesh, "run") else "predict", calls)
    stage = LiveFaceStage(tracker, options.lookahead)
    faces = 0
    start = time.perf_counter()
    for frame, gray in zip(frames, grays, strict=True):
        for _, found, _ in stage.push(frame, gray):
            faces += len(found)
    for _, found, _ in stage.flush():
        faces += len(found)
    tracked_s = time.perf_counter() - start
    timed()

    naive = _naive(options)
    subset = list(zip(frames, grays, strict=True))[:naive_frames]
    naive_faces = 0
    start = time.perf_counter()
    for frame, gray in subset:
        naive_faces += naive(frame.image, gray)
    naive_s = time.perf_counter() - start
    tracked_ms = tracked_s * 1e3 / len(frames)
    naive_ms = naive_s * 1e3 / max(len(subset), 1)
    return {
        "detector": options.detector,
        "frames": len(frames),
        "span": list(span) if span else None,
        "tracked_ms_per_frame": round(tracked_ms, 3),
        "tracked_faces_per_frame": round(faces / len(frames), 3),
        "landmarks_ms_per_face": round(float(np.mean(calls)) * 1e3, 3) if calls else None,
        "detections": tracker.stats.detections,
        "landmark_calls": tracker.stats.landmark_calls,
        "naive_frames": len(subset),
        "naive_ms_per_frame": round(naive_ms, 3),
        "naive_faces_per_frame": round(naive_faces / max(len(subset), 1), 3),
        "speedup_vs_naive": round(naive_ms / tracked_ms, 2) if tracked_ms > 0 else None,
        "cuts": tracker.stats.cuts,
    }


def _timing(owner: Any, name: str, into: list[float]) -> Callable[[], None]:
    """Time every call of ``owner.name`` into ``into`` (seconds); returns the function that stops timing."""
    if owner is None:
        return lambda: None
    original = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - began)

    setattr(owner, name, timed)
    return lambda: delattr(owner, name)


def bench_live_path(location: str | Path, recaster: Recaster, options: RenderOptions, repeats: int = 1
                    ) -> dict[str, Any]:
    """The whole live path (decode, track, smooth, align, recast, paste, badge, encode) on a file,
    as fast as it goes: frames per second and the factor against the source's own frame rate."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="recast-bench-") as tmp:
        for i in range(repeats):
            before = _cpu_seconds()
            report = render(location, Path(tmp) / f"bench{i}.mp4", recaster, options)
            runs.append(report.as_dict() | {"cpu_ms_per_frame": round((_cpu_seconds() - before) * 1e3
                                                                      / max(report.frames, 1), 2)})
    best = max(runs, key=lambda r: r["realtime_factor"])
    return {
        "frames": best["frames"],
        "fps": best["fps"],
        "realtime_factor": best["realtime_factor"],
        "ms_per_frame": best["ms_per_frame"],
        "wall_ms_per_frame": round(best["seconds"] * 1e3 / max(best["frames"], 1), 3),
        "cpu_ms_per_frame": best["cpu_ms_per_frame"],  # the process's CPU time, all threads and both cores
        "faces_recast": best["faces_recast"],
        "faces_held": best["faces_held"],
        "dropped": best["dropped"],
        "runs_realtime_factor": [r["realtime_factor"] for r in runs],
    }


def _cpu_seconds() -> float:
    """The CPU time this process has used, on every thread."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_look_steps(location: str | Path, recaster: Recaster, options: RenderOptions, frames: int = 30,
                     repeats: int = 5) -> dict[str, Any] | None:
    """Each step of the warp recaster's face, timed alone on the first `frames` frames' faces cropped as the
    renderer crops them (ms per face): the warps (68 points, dense mesh), then the compositor's steps."""
    from stream.look.detail import match_detail
    from stream.look.gaze import cast_gaze
    from stream.look.light import transfer_light
    from stream.look.masks import face_mask
    from stream.look.paste import crispness_kept, paste_back
    from stream.recasters.contract import FaceCrop
    from stream.recasters.warp import WarpRecaster

    if not isinstance(recaster, WarpRecaster):
        return None
    stage = LiveFaceStage(make_tracker(options), options.lookahead)
    renderer = FaceRenderer(recaster, badge=False, occlusion=False)
    crops: list[FaceCrop] = []
    shots: list[tuple[np.ndarray, np.ndarray, Any]] = []  # the frame, the face's 68 points there, the alignment
    with MediaSource(location, keep_audio=False) as source:
        for frame in source.frames():
            if frame.index >= frames:
                break
            for ready, faces, _ in stage.push(frame):
                for face in faces[:1]:
                    one, align = renderer.face_crop(ready.image, face)
                    crops.append(one)
                    shots.append((ready.image, face.landmarks, align))
    if not crops:
        return None
    prepared = recaster._casts[recaster.cast_for(crops[0].track_id)]
    steps: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        out = fn(*args, **kwargs)
        steps.setdefault(name, []).append(time.perf_counter() - began)
        return out

    soften = Softening()  # one track's: its softening blur is measured on every 4th face, as in a render
    cast_id = recaster.cast_for(crops[0].track_id)
    track = TrackLook()  # one track's: its texture is coloured again when its colour moves, as in a render
    read: list[bool] = []  # whether the recast reads the iris model on each face (look.blinks.eyes_to_read)
    for _ in range(repeats):
        schedule = TrackLids()  # the track's eyes as the schedule remembers them, from its first face
        for one, (image, landmarks, align) in zip(crops, shots, strict=True):
            n, points, actor = one.image.shape[0], one.landmarks, one.image
            # the renderer's own steps: the crop's crispness kept (every 4th frame of a track), and the test for
            # a repeated frame (every frame of a track after its first)
            timed("crispness kept", crispness_kept, image, actor, align, landmarks)
            region = paste_back(image.copy(), actor, face_mask(points, n), align)
            held = HeldFace.of(region, None) if region is not None else None
            if held is not None:
                timed("repeat test", held.repeated, image)
            texture = timed("warp 68 points", prepared.warp.warp, prepared.rgba, points, n)
            if one.mesh is not None and prepared.dense is not None:
                dense, ids = prepared.dense
                texture = timed("warp dense mesh", dense.warp, prepared.rgba, one.mesh[ids, :2], n,
                                depth=one.mesh[ids, 2])
                lowered = one.mesh[ids, :2].copy()  # each upper lid half way down: the eyes redrawn exactly
                for _, lower, upper, _ in prepared.mesh_lids:
                    lowered[upper] = (lowered[upper] + lowered[lower]) / 2
                timed("warp dense mesh, lids lowered", dense.warp, prepared.rgba, lowered, n, depth=one.mesh[ids, 2],
                      under_points=one.mesh[ids, :2][dense.under_ids])
            if recaster._eyes is not None:  # timed on every face; the recast reads the model on some faces only
                timed("eye openings, a call", recaster._eyes, actor, points)
                read.append(eyes_to_read(points, schedule))
            pixels = np.ascontiguousarray(texture[..., :3])
            alpha = texture[..., 3].astype(np.float32) / 255.0
            mask = timed("mask", face_mask, points, n) * alpha
            timed("mouth interior", recaster.finish.blend_mouth, pixels, actor, points, track)
            timed("colour (into the texture, on average)", recaster._recolour, cast_id, actor, mask, track)
            timed("light", transfer_light, pixels, actor, points, mask)
            timed("gaze", cast_gaze, pixels, actor, points)
            timed("detail", match_detail, pixels, actor, points, mask, memory=soften)
    for _ in range(repeats):  # the whole recast of a face, every step in its place, one track's state carried
        whole = recaster.session_copy()
        for one in crops:
            timed("the whole recast", whole.recast, one)
    # the median of every step; the mean of the colour's, whose cost is in the few faces that colour the texture
    colour = "colour (into the texture, on average)"
    ms = {k: round(float(np.mean(v) if k == colour else np.median(v)) * 1e3, 2) for k, v in steps.items()}
    if read:  # the model's cost spread over every face, as a recast pays it
        ms["eye openings, a face on average"] = round(ms["eye openings, a call"] * float(np.mean(read)), 2)
    return {"faces": len(crops), "size": int(np.median([c.image.shape[0] for c in crops])), "ms_per_face": ms}


def run_bench(location: str | Path, recaster: Recaster, options: RenderOptions, repeats: int = 2,
              span: tuple[int, int] | None = None) -> dict[str, Any]:
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
        "tracking": bench_tracking(location, live_options, span=span),
        "look_steps": bench_look_steps(location, recaster, live_options),
        "cpu_count": usable_cores(),
    }


def _span(span: list[int] | None) -> str:
    return f", frames {span[0]}-{span[1]}" if span else ""


def format_bench(result: dict[str, Any]) -> str:
    live, tracking = result["live_path"], result["tracking"]
    lines = [
        f"input {result['input']} ({result['width']}x{result['height']} @ {result['fps']} fps), "
        f"engine {result['engine']}, {result['cpu_count']} cpu",
        f"live path: {live['fps']:.1f} fps, {live['realtime_factor']:.2f}x real time "
        f"({live['wall_ms_per_frame']:.1f} ms/frame wall, {live['cpu_ms_per_frame']:.1f} ms of CPU a frame, "
        f"{live['frames']} frames)",
        "  per stage (ms/frame, summed over threads): "
        + ", ".join(f"{k} {v:.2f}" for k, v in live["ms_per_frame"].items()),
        f"tracking ({tracking['detector']}{_span(tracking['span'])}): "
        f"{tracking['tracked_ms_per_frame']:.2f} ms/frame, {tracking['tracked_faces_per_frame']:.2f} faces/frame, "
        f"landmarks {tracking['landmarks_ms_per_face']} ms/face "
        f"({tracking['detections']} detections, {tracking['landmark_calls']} landmark calls); "
        f"naive full-frame detection every frame: {tracking['naive_ms_per_frame']:.2f} ms/frame "
        f"-> {tracking['speedup_vs_naive']}x",
    ]
    look = result.get("look_steps")
    if look:
        lines.append(f"the warp's steps (ms/face, median over {look['faces']} faces at {look['size']} px): "
                     + ", ".join(f"{k} {v:.2f}" for k, v in look["ms_per_face"].items()))
    return "\n".join(lines)

