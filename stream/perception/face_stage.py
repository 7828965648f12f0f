"""The face stage: a tracker's causal output smoothed into crop quads, live (a short look-ahead) or over the
whole clip (offline), and the same faces read back from a baked title."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable

import numpy as np

from stream.media.sources import Frame, VideoInfo
from stream.perception.geometry import to_gray
from stream.perception.smoothing import LiveSmoother, quad_params, smooth_offline
from stream.perception.track_set import YAW_SLEW, FaceState, FaceTrack, Mode, TrackSet, contiguous_runs, steady_pose
from stream.perception.tracker import Tracker


class LiveFaceStage:
    """The causal face stage of the live path: cut detection, tracking, and live quad smoothing.

    ``push`` a frame and get back the frames that are ready, each ``lookahead`` frames late, with every
    face's smoothed quad filled in. A track that ends (lost, or at a cut) is flushed, so its last frames
    use the look-ahead they have; no smoothing crosses a cut.
    """

    def __init__(self, tracker: Tracker, lookahead: int = 4, center_sigma: float = 1.0,
                 xy_sigma: float = 3.0, quad_scale: float = 1.0) -> None:
        self.tracker = tracker
        self.lookahead = lookahead
        self._sigmas = (center_sigma, xy_sigma)
        self.quad_scale = quad_scale
        self._smoothers: dict[int, LiveSmoother] = {}
        self._yaw: dict[int, float] = {}  # per track, the steadied yaw (causal)
        self._waiting: dict[int, collections.deque[FaceState]] = {}
        self._pending: collections.deque[tuple[Frame, list[FaceState], bool]] = collections.deque()

    def push(self, frame: Frame, gray: np.ndarray | None = None) -> list[tuple[Frame, list[FaceState], bool]]:
        rgb = frame.image if frame.image.ndim == 3 else None
        cut, tracked = self.tracker.update(frame.index, to_gray(frame.image) if gray is None else gray, rgb)
        faces = [FaceState(t.track_id, frame.index, frame.time, t.box, t.landmarks,
                           quad_params(t.landmarks, self.quad_scale), yaw=t.yaw, pitch=t.pitch, presence=t.presence,
                           mesh=t.mesh)
                 for t in tracked]
        present = {f.track_id for f in faces}
        for face in faces:
            if face.yaw is not None:
                last = self._yaw.get(face.track_id, face.yaw)
                step = float(np.clip(YAW_FOLLOW * (face.yaw - last), -YAW_SLEW, YAW_SLEW))
                face.steady_yaw = self._yaw[face.track_id] = last + step
        for track_id in [tid for tid in self._yaw if tid not in present]:
            del self._yaw[track_id]
        for track_id in [tid for tid in self._smoothers if tid not in present]:
            self._assign(track_id, self._smoothers.pop(track_id).flush())
            del self._waiting[track_id]
        for face in faces:
            if face.track_id not in self._smoothers:
                self._smoothers[face.track_id] = LiveSmoother(self.lookahead, *self._sigmas)
                self._waiting[face.track_id] = collections.deque()
            self._waiting[face.track_id].append(face)
            self._assign(face.track_id, self._smoothers[face.track_id].push(face.raw))
        self._pending.append((frame, faces, cut))
        ready = []
        while len(self._pending) > self.lookahead:
            ready.append(self._pending.popleft())
        return ready

    def flush(self) -> list[tuple[Frame, list[FaceState], bool]]:
        for track_id, smoother in self._smoothers.items():
            self._assign(track_id, smoother.flush())
        self._smoothers.clear()
        self._waiting.clear()
        ready = list(self._pending)
        self._pending.clear()
        return ready

    def _assign(self, track_id: int, smoothed: list[np.ndarray]) -> None:
        waiting = self._waiting[track_id]
        for params in smoothed:
            waiting.popleft().quad = params


class BakedFaceStage:
    """The face stage of a baked title: its tracks by frame index, with the offline smoothing; no detection and no
    look-ahead. Frames the bake does not cover (past ``--max-frames``) have no faces and pass through."""

    lookahead = 0

    def __init__(self, by_frame: dict[int, list[FaceState]]) -> None:
        self.by_frame = by_frame
        self.cycle = 0  # a title played on repeat: its frames a pass (frame indices run on across passes)

    def push(self, frame: Frame, gray: np.ndarray | None = None) -> list[tuple[Frame, list[FaceState], bool]]:
        index = frame.index % self.cycle if self.cycle else frame.index
        return [(frame, self.by_frame.get(index, []), False)]


YAW_FOLLOW = 0.35  # live: how far the steadied yaw moves toward each new estimate


def track_frames(frames: Iterable[Frame], info: VideoInfo, tracker: Tracker, *, mode: Mode = "offline",
                 lookahead: int = 4, center_sigma: float = 1.0, xy_sigma: float = 3.0, quad_scale: float = 1.0,
                 on_frame: Callable[[int], None] | None = None) -> TrackSet:
    """Track a whole video and smooth every track segment in the given mode."""
    tracks: dict[int, FaceTrack] = {}
    count = 0

    def collect(ready: Iterable[tuple[Frame, list[FaceState], bool]]) -> None:
        for _frame, faces, _cut in ready:
            for face in faces:
                tracks.setdefault(face.track_id, FaceTrack(face.track_id)).faces.append(face)

    stage = LiveFaceStage(tracker, lookahead, center_sigma, xy_sigma, quad_scale)
    for frame in frames:
        collect(stage.push(frame))
        count += 1
        if on_frame is not None:
            on_frame(frame.index)
    collect(stage.flush())
    ordered = sorted(tracks.values(), key=lambda t: t.track_id)
    if mode == "offline":
        for track in ordered:
            for run in contiguous_runs(track.faces):  # a track that was lost and took its id back has gaps
                raw = np.stack([f.raw for f in run])
                for face, params in zip(run, smooth_offline(raw, center_sigma, xy_sigma), strict=True):
                    face.quad = params
        steady_pose(ordered)
    return TrackSet(info.location, info.width, info.height, info.fps, count, mode,
                    list(tracker.stats.cuts), ordered, tracker.stats)
