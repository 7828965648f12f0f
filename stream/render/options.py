"""The options of a render and of the track pass under it, and the report a render gives."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from stream.perception.stills import DEFAULT_DETECTOR
from stream.perception.track_set import Mode


@dataclass
class TrackingOptions:
    """Everything that decides a clip's tracks. A baked title's tracks are keyed by all of it (export/bake.py), so
    an option added here is in the key by construction; an option that does not change the tracks belongs to
    `RenderOptions` alone (tests/test_bake.py holds the list)."""

    detector: str = DEFAULT_DETECTOR  # mediapipe: BlazeFace and the face mesh on LiteRT; hog: dlib's HOG and 68 points
    detect_interval: int = 10
    detect_width: int = 640
    upsample: int = 0
    tiles: int = 2  # mediapipe: tile columns besides the whole frame (0: the whole frame only)
    max_faces: int = 16  # faces tracked (and recast) per frame at most, the largest first


@dataclass
class RenderOptions(TrackingOptions):
    mode: Mode = "offline"
    # mediapipe: threads of each LiteRT model. Two halve the tracking's latency on a 2-core machine and cost the
    # live path nothing (measured); the service gives each session one, since its sessions run side by side
    threads: int = 2
    lookahead: int = 4  # live mode only: frames the smoother looks ahead
    badge: bool = True
    mark_id: str = ""  # what the invisible mark's id is made from (a render's output name, a session's id)
    occlusion: bool = True  # keep what passes in front of a face (a hand, a microphone) in front of the recast
    crf: int = 18
    preset: str | None = None  # x264's preset; by default veryfast offline, ultrafast live (sinks.LIVE_PRESET)

    def tracking(self) -> TrackingOptions:
        return TrackingOptions(**{f.name: getattr(self, f.name) for f in fields(TrackingOptions)})


@dataclass
class RenderReport:
    frames: int
    seconds: float
    source_seconds: float
    faces_recast: int
    faces_failed: int
    dropped: int
    cuts: list[int]
    tracks: int
    ms_per_frame: dict[str, float]
    decode_errors: int
    faces_held: int = 0  # of faces_recast: a repeated frame's face, its recast kept from the frame before

    @property
    def realtime_factor(self) -> float:
        return self.source_seconds / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "realtime_factor": round(self.realtime_factor, 3),
                "fps": round(self.frames / self.seconds, 2) if self.seconds else 0.0}
