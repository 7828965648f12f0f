"""What passes in front of a face stays in front of the recast face: a per-track occlusion mask.

Each track keeps a picture of its own face in a fixed, canonical geometry (the track's first landmarks; every
later crop is pulled onto them by the piecewise-affine warp of the 68 points, so head motion and expression
are undone), with a per-pixel mean and variance that follow the face slowly. A pixel of the current face that is
far from that picture, in units of its own variation, is something in front of the face: a hand, a microphone,
a cup. The variance learns what moves by itself (eyes, brows, lips, teeth), and those zones need a larger
mismatch from the start; a global offset per channel follows changes of light. Pixels judged occluded do not
update the picture, so a hand that stays keeps being a hand. The mask is computed at ``size`` pixels (the face
fills about half of it), cleaned of specks, kept on by hysteresis so that it does not flicker, and returned in
the recaster's crop geometry; the renderer multiplies the recast's blend mask by its complement, so it serves
every recaster alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stream.look.masks import disc, polygon_mask
from stream.look.piecewise import PiecewiseAffine
from stream.perception.geometry import mask_outline

# the zones that move by themselves: eyes, brows, nose tip and nostrils, lips
_ZONES = (list(range(36, 42)), list(range(42, 48)), list(range(17, 22)), list(range(22, 27)),
          list(range(31, 36)), list(range(48, 60)))


@dataclass
class _TrackPicture:
    warp: PiecewiseAffine
    region: np.ndarray  # [S,S] bool: the face hull in the canonical geometry
    threshold: np.ndarray  # [S,S] float32: the z-score past which a pixel is occluded
    mean: np.ndarray  # [S,S,3] float32 YCrCb
    var: np.ndarray  # [S,S,3] float32
    occluded: np.ndarray  # [S,S] bool, the last frame's
    last_index: int
    pose: tuple[float, float] | None  # the (yaw, pitch) it was learnt at, following the face slowly


class OcclusionMasker:
    """Per track, the part of the face hidden behind something else ([N,N] float32, 1 = hidden)."""

    def __init__(self, size: int = 96, threshold: float = 2.0, zone_factor: float = 2.0, rate: float = 0.08,
                 forget_after: int = 30) -> None:
        self.size = size
        self.threshold = threshold
        self.zone_factor = zone_factor  # eyes, brows and lips need this many times the mismatch
        self.rate = rate  # how fast the picture follows the face where nothing is in front of it
        self.heal = 0.004  # how fast it follows a persistent mismatch that never became an occluder
        self.forget_after = forget_after  # frames a track may be away before its picture is dropped
        self.max_turn = 15.0  # degrees of yaw or pitch away from its picture past which a face is learnt anew
        self.max_hidden = 0.5  # the part of a face that may be judged hidden before its picture is doubted
        self.floor = np.array([5.0, 2.0, 2.0], dtype=np.float32) ** 2  # noise floor per channel (Y, Cr, Cb)
        self.start_var = np.array([12.0, 4.0, 4.0], dtype=np.float32) ** 2  # before the picture has seen motion
        self._tracks: dict[int, _TrackPicture] = {}

    def forget(self, index: int) -> None:
        """Drop the pictures of tracks not seen for ``forget_after`` frames before frame ``index``."""
        for track_id in [t for t, p in self._tracks.items() if index - p.last_index > self.forget_after]:
            del self._tracks[track_id]

    def mask(self, track_id: int, index: int, image: np.ndarray, landmarks: np.ndarray,
             pose: tuple[float, float] | None = None) -> np.ndarray:
        """The occlusion mask of one face: ``image`` its aligned crop [N,N,3] uint8 RGB, ``landmarks`` its 68
        points in crop pixels, ``pose`` its (yaw, pitch) in degrees where the tracker gives one."""
        n = image.shape[0]
        s = self.size
        none = np.zeros((n, n), dtype=np.float32)
        small = cv2.resize(image, (s, s), interpolation=cv2.INTER_AREA)
        points = _control_points(landmarks * (s / n))
        picture = self._tracks.get(track_id)
        turned = (picture is not None and pose is not None and picture.pose is not None
                  and max(abs(pose[0] - picture.pose[0]), abs(pose[1] - picture.pose[1])) > self.max_turn)
        if picture is None or index <= picture.last_index or turned:
            # a new face, or one seen from too far another side for its picture to say anything: start over
            self._tracks[track_id] = self._start(points, small, index, pose)
            return none
        picture.last_index = index
        lab = _colour(picture.warp.unwarp(small, points))
        diff = lab - picture.mean
        diff -= np.median(diff[picture.region], axis=0)  # a change of light moves the whole face
        z = np.sqrt(np.mean(diff * diff / (picture.var + self.floor), axis=2))
        strong = (z > picture.threshold) & picture.region
        weak = (z > picture.threshold * 0.5) & picture.region
        occluded = _clean(strong | (weak & _grow(picture.occluded, 1)), min_area=max(4, s * s // 400))
        occluded = _fill_holes(occluded, picture.region)
        if np.count_nonzero(occluded) > self.max_hidden * np.count_nonzero(picture.region):
            # more of the face behind something than a tracked face can be: the picture is what is wrong
            self._tracks[track_id] = self._start(points, small, index, pose)
            return none
        # the picture follows the face where it matches it; a pixel already half-way to the threshold waits (so an
        # occluder that slides in slowly is not learnt as face), and nothing in front of the face (and a margin
        # around it) is learnt at all
        free = picture.region & ~_grow(occluded, 2)
        trust = np.clip(1.0 - z / picture.threshold, 0.0, 1.0)
        rate = ((np.float32(self.rate) * trust + np.float32(self.heal)) * free)[..., None]
        picture.mean += rate * (lab - picture.mean)
        picture.var += rate * (diff * diff - picture.var)
        picture.occluded = occluded
        if pose is not None and picture.pose is not None:
            picture.pose = (picture.pose[0] + self.rate * (pose[0] - picture.pose[0]),
                            picture.pose[1] + self.rate * (pose[1] - picture.pose[1]))
        if not occluded.any():
            return none
        soft = cv2.GaussianBlur(_grow(occluded, 1).astype(np.float32), (0, 0), 1.0)
        back = picture.warp.warp(soft, points)  # canonical geometry -> this frame's crop
        return cv2.resize(back, (n, n), interpolation=cv2.INTER_LINEAR)

    def _start(self, points: np.ndarray, small: np.ndarray, index: int,
               pose: tuple[float, float] | None) -> _TrackPicture:
        s = self.size
        warp = PiecewiseAffine(points, s)
        region = polygon_mask(mask_outline(points[:68]), s) > 0.5
        drawn = np.max([polygon_mask(points[zone], s) for zone in _ZONES], axis=0)
        zones = cv2.dilate(drawn, np.ones((3, 3), np.uint8), iterations=max(1, s // 48))
        threshold = (self.threshold * (1.0 + (self.zone_factor - 1.0) * zones)).astype(np.float32)
        mean = _colour(small)  # the first crop is already in the canonical geometry
        var = np.broadcast_to(self.start_var, mean.shape).copy()
        return _TrackPicture(warp, region, threshold, mean, var, np.zeros((s, s), dtype=bool), index, pose)


def _control_points(landmarks: np.ndarray) -> np.ndarray:
    """The 68 landmarks and the brows lifted to the hairline (the top of the face mask)."""
    return np.concatenate([landmarks, mask_outline(landmarks)[17:]])


def _colour(rgb: np.ndarray) -> np.ndarray:
    """Luma and the two chroma differences (YCrCb, 0..255), float32: linear, so cheap."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb).astype(np.float32)


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), disc(pixels)).astype(bool)


def _clean(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Specks removed: an opening, then only the connected parts of at least ``min_area`` pixels."""
    opened = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    keep = np.zeros(count, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return keep[labels]


def _fill_holes(occluded: np.ndarray, region: np.ndarray) -> np.ndarray:
    """An occluder's inside: a flat hand over a cheek differs from the face at its rim and shadows more than in
    its middle. A free part of the face is filled when most of what surrounds it is occluded: a hand coming in
    from the edge (its rim meets the face's) is filled, the free face around an occluder (mostly bordered by
    what lies outside the face) is not."""
    free = (region & ~occluded).astype(np.uint8)
    count, labels = cv2.connectedComponents(free, connectivity=4)
    if count <= 2 or not occluded.any():
        return occluded
    out = occluded.copy()
    ring = np.ones((3, 3), np.uint8)
    for k in range(1, count):
        part = (labels == k).astype(np.uint8)
        around = cv2.dilate(part, ring).astype(bool) & ~part.astype(bool)
        if np.count_nonzero(around & occluded) > 0.6 * np.count_nonzero(around):
            out |= part.astype(bool)
    return out
