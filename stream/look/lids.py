"""Lids: each track's open eye, and a warp's upper lids lowered to the actor's opening so blinks follow."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stream.look.filters import smoothstep

LID_RISE, LID_SETTLE = 0.3, 0.05  # the share of a new opening a track's open eye takes: one above it, one near it
LID_NEAR = 0.8  # of the open eye: an opening under it (a blink, a squint) leaves the open eye as it is
LID_DEAD = (0.7, 0.9)  # of the open eye: an eye as open as 0.9 of it is taken as open (the measure's own noise),
# and the whole closure is taken from 0.7 down


@dataclass
class OpenEye:
    """A track's open eye: an average opening that rises quickly to a larger opening, settles slowly on openings
    near it and ignores blinks."""

    held: float | None = None

    def update(self, opening: float) -> float:
        if self.held is None:
            self.held = opening
        elif opening > self.held:
            self.held += LID_RISE * (opening - self.held)
        elif opening > LID_NEAR * self.held:
            self.held += LID_SETTLE * (opening - self.held)
        return self.held


@dataclass
class EyeLids:
    """One eye of one set of lids a track's warp lowers: the actor's open eye and the warp lids' own."""

    actor: OpenEye = field(default_factory=OpenEye)
    lids: OpenEye = field(default_factory=OpenEye)


def _two_eyes() -> tuple[EyeLids, EyeLids]:
    return EyeLids(), EyeLids()


@dataclass
class TrackLids:
    """What a track keeps of its eyes from frame to frame: each eye of the 68 points' lids and of the dense
    mesh's, the 68 points' own open eyes (for `eyes_to_read`), and the frames seen."""

    points: tuple[EyeLids, EyeLids] = field(default_factory=_two_eyes)
    mesh: tuple[EyeLids, EyeLids] = field(default_factory=_two_eyes)
    seen: tuple[OpenEye, OpenEye] = field(default_factory=lambda: (OpenEye(), OpenEye()))
    frames_seen: int = 0


def lid_opening(upper: np.ndarray, lower: np.ndarray, width: float) -> float:
    """An eye's opening: the mean distance between its `upper` and `lower` lids' points of the same rank ([K,2]
    each) over its `width` between corners."""
    return float(np.mean(np.linalg.norm(upper - lower, axis=1))) / width


def close_lids(upper: np.ndarray, lower: np.ndarray, width: float, opening: float, eye: EyeLids) -> np.ndarray:
    """The `upper` lid's points ([K,2]) moved straight towards the `lower` lid's of the same rank so that the warp's
    eye (`width` between its corners) is as open, for its open state, as the actor's is for his: `opening` is his
    eye's opening as the iris model reads it (mesh.EyeOpenings). Each open state is the track's own (`eye`).
    Lids are only ever lowered: the mesh's own lids follow a blink part way."""
    if not np.isfinite(opening) or width <= 0:
        return upper
    share = min(opening / max(eye.actor.update(opening), 1e-6), 1.0)
    share += (1.0 - share) * float(smoothstep(LID_DEAD[0], LID_DEAD[1], share))
    now = lid_opening(upper, lower, width)
    aim = eye.lids.update(now) * share
    if now <= 1e-6 or aim >= now:
        return upper
    return lower + (upper - lower) * (aim / now)
