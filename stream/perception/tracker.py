"""What every tracker shares: the face it reports, its statistics, the protocol the face stage
needs, and the checks that a face's landmarks still fit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from stream.perception.geometry import Box, landmark_box


class _Identified(Protocol):
    track_id: int


T = TypeVar("T", bound=_Identified)


@dataclass
class TrackedFace:
    """One face in one frame, as the tracker sees it."""

    track_id: int
    box: Box
    landmarks: np.ndarray  # [68,2] float32, frame pixels
    detected: bool
    yaw: float | None = None  # degrees, 0 facing the camera (the mesh tracker estimates it; HOG's does not)
    pitch: float | None = None
    presence: float | None = None  # the landmark model's confidence that this is a face (mesh tracker)
    mesh: np.ndarray | None = None  # [468,3] frame pixels and depth (mesh tracker)


@dataclass
class TrackerStats:
    frames: int = 0
    detections: int = 0
    landmark_calls: int = 0
    lost: int = 0
    cuts: list[int] = field(default_factory=list)


class Tracker(Protocol):
    """What the face stage needs of a tracker: one causal update per frame, and its statistics."""

    stats: TrackerStats

    def update(self, index: int, gray: np.ndarray, rgb: np.ndarray | None = None
               ) -> tuple[bool, list[TrackedFace]]: ...


def plausible(previous: np.ndarray, current: np.ndarray, width: int, height: int) -> bool:
    """Landmarks that jumped, collapsed or left the frame mean the face was lost."""
    a, b = landmark_box(previous), landmark_box(current)
    if b.width < 8 or b.height < 8:
        return False
    size = max(a.width, a.height)
    ratio = max(b.width, b.height) / max(size, 1.0)
    if not 0.7 < ratio < 1.4:
        return False
    (ax, ay), (bx, by) = a.center, b.center
    if np.hypot(bx - ax, by - ay) > 0.5 * size:
        return False
    inside_x = max(0.0, min(b.x1, width) - max(b.x0, 0.0)) / b.width
    inside_y = max(0.0, min(b.y1, height) - max(b.y0, 0.0)) / b.height
    return inside_x * inside_y > 0.6


def drop_duplicates(tracks: list[T], box_of: Callable[[T], Box]) -> list[T]:
    """Two tracks that converged on one face (boxes overlapping by half): keep the older id."""
    kept: list[tuple[T, Box]] = []
    for track in sorted(tracks, key=lambda t: t.track_id):
        box = box_of(track)
        if all(box.iou(other) < 0.5 for _, other in kept):
            kept.append((track, box))
    return [track for track, _ in kept]
