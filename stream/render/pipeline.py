"""File to file: the track pass, the render (offline from whole tracks, or live in one causal pass), and crops
exported for training."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from stream.look.align import alignment, crop
from stream.media.grain import offline_tuning
from stream.media.provenance import file_metadata
from stream.media.sinks import MediaSink
from stream.media.sources import Frame, MediaSource, is_live
from stream.perception.face_stage import LiveFaceStage, track_frames
from stream.perception.geometry import to_gray
from stream.perception.hog import FaceDetector, LandmarkPredictor
from stream.perception.hog_tracker import FaceTracker
from stream.perception.mesh_tracker import MeshTracker
from stream.perception.stills import DETECTORS
from stream.perception.track_set import FaceState, TrackSet
from stream.perception.tracker import Tracker
from stream.recasters.contract import Recaster
from stream.render.options import RenderOptions, RenderReport
from stream.render.renderer import FaceRenderer, PreparedFace, RenderedFrame
from stream.render.threads import Prefetch, StageTimer, ThreadedWriter


def make_tracker(options: RenderOptions, predictor: LandmarkPredictor | None = None) -> Tracker:
    if options.detector == "mediapipe":
        from stream.perception.blazeface import BlazeFace
        from stream.perception.mesh import FaceMesh

        return MeshTracker(BlazeFace(tiles=options.tiles, threads=options.threads), FaceMesh(threads=options.threads),
                           detect_interval=options.detect_interval, max_faces=options.max_faces)
    if options.detector != "hog":
        raise ValueError(f"unknown detector {options.detector!r} (one of {', '.join(DETECTORS)})")
    return FaceTracker(FaceDetector(options.detect_width, options.upsample), predictor or LandmarkPredictor(),
                       detect_interval=options.detect_interval, max_faces=options.max_faces)


def run_tracking(location: str | Path, options: RenderOptions,
                 on_frame: Callable[[int], None] | None = None, max_frames: int | None = None) -> TrackSet:
    """The track pass (``recast track``, the first pass of an offline render and of a bake); `max_frames` stops
    after the first N frames."""
    with MediaSource(location, keep_audio=False) as source:
        frames = itertools.islice(source.frames(), max_frames)
        return track_frames(frames, source.info, make_tracker(options), mode=options.mode,
                            lookahead=options.lookahead, on_frame=on_frame)


def render(location: str | Path, output: str | Path, recaster: Recaster, options: RenderOptions, *,
           tracks: TrackSet | None = None, on_frame: Callable[[int], None] | None = None,
           on_rendered: Callable[[Frame, np.ndarray, RenderedFrame], None] | None = None) -> RenderReport:
    """Render a recast copy of ``location`` to ``output`` (mp4, audio copied, timestamps kept).

    Offline mode uses ``tracks`` (or runs the track pass first); live mode tracks causally in one pass.
    """
    timer = StageTimer()
    if options.mode == "offline" and tracks is None:
        tracks = run_tracking(location, options)
    faces_by_frame = tracks.by_frame() if tracks is not None else {}
    renderer = FaceRenderer(recaster, badge=options.badge, occlusion=options.occlusion,
                            mark_id=options.mark_id or Path(output).name)
    stage = make_tracker(options) if options.mode == "live" else None
    live = LiveFaceStage(stage, options.lookahead) if stage is not None else None
    count = 0
    seen_tracks: set[int] = set()
    # whatever was opened or started is closed and joined in reverse order, however far the set-up got (a sink
    # that fails to open leaves no thread behind)
    with contextlib.ExitStack() as opened:
        source = opened.enter_context(MediaSource(location))
        # an offline render of a file keeps a grainy source's grain (x264's `grain` tuning), a clean one x264's default
        tuning = offline_tuning(location) if options.mode == "offline" and not is_live(location) else None
        metadata = file_metadata(recaster.describe(), Path(str(location)).name, options.mode)
        if renderer.watermark is not None:
            metadata["recast_mark_id"] = str(renderer.watermark.payload.mark_id)
        sink = opened.enter_context(MediaSink(output, source.info, audio_stream=source.audio_stream,
                                              metadata=metadata, crf=options.crf, preset=options.preset,
                                              live=options.mode == "live", tune=tuning))
        writer = ThreadedWriter(sink, source.audio_packets, timer)
        opened.callback(writer.close)
        frames = Prefetch(source.frames(), drop_old=is_live(location), timer=timer)
        opened.callback(frames.close)
        start = time.perf_counter()

        def emit(frame: Frame, faces: list[FaceState], prepared: dict[int, PreparedFace] | None = None) -> None:
            nonlocal count
            seen_tracks.update(f.track_id for f in faces)
            image = frame.image
            rendered = renderer.render(image, faces, timer, prepared)
            if on_rendered is not None:
                on_rendered(frame, image, rendered)
            writer.write(frame, image)
            count += 1
            if on_frame is not None:
                on_frame(frame.index)

        if live is None:
            for frame in frames:
                emit(frame, faces_by_frame.get(frame.index, []))
        else:
            # tracking runs in its own thread, ahead of the renderer by up to a few frames: the two overlap (the
            # models and OpenCV release the GIL), so the live path costs the longer of the two, not their sum
            tracked = Prefetch(_tracked(frames, live, renderer, timer), maxsize=4, stage="track")
            opened.callback(tracked.close, wait=True)  # before the decoder it reads from is closed
            for frame, faces, prepared in tracked:
                emit(frame, faces, prepared)
    seconds = time.perf_counter() - start
    info = source.info
    source_seconds = count / info.fps if info.fps else 0.0
    cuts = tracks.cuts if tracks is not None else (stage.stats.cuts if stage is not None else [])
    return RenderReport(count, seconds, source_seconds, renderer.faces_recast, renderer.faces_failed,
                        frames.dropped, list(cuts), len(seen_tracks), timer.ms_per_frame(count), source.decode_errors,
                        renderer.faces_held)


def _tracked(frames: Iterable[Frame], live: LiveFaceStage, renderer: FaceRenderer, timer: StageTimer
             ) -> Iterator[tuple[Frame, list[FaceState], dict[int, PreparedFace]]]:
    """The frames with their faces, as the live face stage makes them ready (timed as "track"), and what the
    renderer prepares of each face (its crop and what passes in front)."""
    for frame in itertools.chain(frames, [None]):
        start = time.perf_counter()
        ready = live.flush() if frame is None else live.push(frame, to_gray(frame.image))
        timer.add("track", time.perf_counter() - start)
        for done, faces, _ in ready:
            yield done, faces, renderer.prepare(done.image, faces, timer)


def export_crops(location: str | Path, tracks: TrackSet, folder: Path, size: int = 64, every: int = 1) -> int:
    """Aligned face crops (the smoothed STIT quad at ``size`` px) as PNGs ``t{track}_f{frame}.png``; every N-th
    face of each track. Returns how many were written."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    wanted: dict[int, list[FaceState]] = {}
    for track in tracks.tracks:
        for i, face in enumerate(track.faces):
            if i % every == 0:
                wanted.setdefault(face.index, []).append(face)
    written = 0
    with MediaSource(location, keep_audio=False) as source:
        for frame in source.frames():
            for face in wanted.get(frame.index, []):
                pixels = crop(frame.image, alignment(face.crop_params, size), cv2.INTER_AREA)
                Image.fromarray(pixels).save(folder / f"t{face.track_id:03d}_f{frame.index:06d}.png")
                written += 1
    return written
