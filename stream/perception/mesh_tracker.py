"""The `mediapipe` tracker (the default): BlazeFace finds faces, MediaPipe's face mesh follows each one."""

from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from stream.perception.geometry import Box, landmark_box
from stream.perception.mesh import Crop, MeshResult, crop_from_detection, head_pose

if TYPE_CHECKING:
    from stream.perception.blazeface import BlazeFace, Detection
    from stream.perception.mesh import FaceMesh
from stream.media.cuts import CutDetector
from stream.perception.tracker import TrackedFace, TrackerStats, drop_duplicates, plausible

log = logging.getLogger(__name__)
LOCAL_MIN_SCORE = 0.4  # the detector's floor right around a face the mesh is losing (MediaPipe's own floor: 0.6)
MAX_COAST = 5  # frames a face may be carried by the detector alone (its last mesh moved with the detection)
EARLY_ROUNDS = (2, 5)  # extra detection rounds early in a shot: faces the first round missed come soon
MAX_FADE = 3  # frames a face is kept while its mesh still fits but its presence dips under the floor to keep it
VELOCITY_KEEP = 0.5  # the share of a face's velocity kept each frame (the rest is its last displacement)
REVIVE_WIDEN, REVIVE_FAR = 0.15, 4.0  # face sizes a lost frame, and at most, that a revived face may lie off its course
REVIVE_LIKE = 0.85  # the colours' likeness (histogram intersection) a face must share with the lost one it revives
# a face within half its size of where a lost track's motion foresaw it is that track. Over a long gap the motion
# read before the loss may be off (a walker's read as 8.5-12 px a frame against its 6, as its mesh caught up after
# a crossing): a face near the path from where the track was to where its motion foresaw it (within FORESEE_WIDEN
# of its size per frame lost, over half of it) that looks like it at least FORESEE_LIKE is that track too
FORESEE_WIDEN, FORESEE_LIKE = 0.02, 0.7
LOOK_FOLLOW = 0.1  # the share of a new look taken each clear frame (slow: a face half hidden must not spoil it)
PART_MARGIN = 0.1  # of the face's size: how much better one of two converged tracks foresaw the face
VELOCITY_DEAD = 0.05  # of the face's size a frame: slower than this a face is looked for where it was
REVIVE_SEARCH = 5  # frames after its loss in which a face is looked for where it was, every frame


@dataclass
class _MeshTrack:
    track_id: int
    result: MeshResult  # the face's latest mesh
    crop: Crop  # where the mesh looks next frame
    misses: int = 0  # detection rounds in a row that did not see this face
    age: int = 0
    last_seen: int = 0
    confirmed: bool = False  # shown only once confirmed: at birth when sure, else by the next detection round
    coasting: int = 0  # frames in a row held by the detector alone, the mesh having lost the face
    fading: int = 0  # frames in a row its mesh fitted with a presence under the floor to keep it
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # px a frame of its centre, averaged
    look: np.ndarray | None = None  # its colours where it was seen clearly (_appearance), averaged

    @property
    def landmarks(self) -> np.ndarray:
        return self.result.landmarks


class MeshTracker:
    """Frame-by-frame multi-face tracker on MediaPipe's models (causal; usable live).

    BlazeFace (the whole frame and tiles) finds faces every ``detect_interval`` frames, after a cut and whenever a
    track's mesh falls below ``keep_presence`` or jumps. Each track's mesh runs every frame on a crop made from
    its own previous mesh, so a face keeps its id through turns and profiles the detector cannot see, for as long
    as the mesh still says "face". A detection becomes a track only when the mesh run on it agrees (presence at
    least ``min_presence``, its landmark box overlapping the detection): one person gives one track, and a
    texture the detector takes for a face is dropped. A track lost for at most ``revive_frames`` frames takes its
    id back when a face reappears where it was. At most ``max_faces`` faces, the largest first.

    A new track that is not sure at birth (detector score under ``sure_score`` or mesh presence under
    ``sure_presence``) stays tentative, and hidden, until the detector, run right around it on the next frame,
    sees it again; if it does not, the track is dropped. A background texture that fools both models for one
    frame (a blurred plant in s18) is not seen twice."""

    def __init__(self, detector: BlazeFace, mesh: FaceMesh, *, detect_interval: int = 10, max_faces: int = 16,
                 min_presence: float = 0.5, keep_presence: float = 0.01, sure_presence: float = 0.9,
                 sure_score: float = 0.7, start_presence: float = 0.25, revive_frames: int = 30, min_face: float = 10.0,
                 cut_detector: CutDetector | None = None) -> None:
        if detect_interval < 1:
            raise ValueError(f"detect interval must be >= 1 frame, got {detect_interval}")
        self.detector, self.mesh = detector, mesh
        self.detect_interval, self.max_faces = detect_interval, max_faces
        self.min_presence, self.keep_presence = min_presence, keep_presence
        self.sure_presence, self.sure_score = sure_presence, sure_score
        self.start_presence, self.revive_frames, self.min_face = start_presence, revive_frames, min_face
        self.cuts = cut_detector or CutDetector()
        self.stats = TrackerStats()
        self._tracks: list[_MeshTrack] = []
        self._lost: list[_MeshTrack] = []
        self._refused: list[Box] = []  # detections the mesh refused in the last detection round
        self._ids = itertools.count(1)
        self._since_detect = detect_interval
        self._index = 0
        self._shot_age = 0
        self._rounds = 0

    def update(self, index: int, gray: np.ndarray, rgb: np.ndarray | None = None
               ) -> tuple[bool, list[TrackedFace]]:
        """Track one frame (``rgb``; a grey picture when only ``gray`` is given); returns (is this frame the first of
        a new shot, the confirmed faces in it)."""
        if rgb is None:
            rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
        self.stats.frames += 1
        self._index = index
        cut = self.cuts.update(gray)
        if cut:
            self.stats.cuts.append(index)
            self._tracks, self._lost, self._refused = [], [], []
            self._shot_age = 0
        h, w = rgb.shape[:2]
        suspects: list[_MeshTrack] = []
        before = {id(t): (dataclasses.replace(t), self._expected(t)) for t in self._tracks}
        for track in self._tracks:
            result = self.mesh.run(rgb, track.crop)
            self.stats.landmark_calls += 1
            measured = True  # the mesh found the face itself: its motion is measured
            if not self._good(track, result, w, h):
                # once more from the crop that worked last frame, then the detector right around the face
                result = self.mesh.run(rgb, track.result.crop)
                self.stats.landmark_calls += 1
                if not self._good(track, result, w, h):
                    found = self._find_near(rgb, track)
                    if found is None and track.fading < MAX_FADE and plausible(self._expected(track),
                                                                                 result.landmarks, w, h):
                        track.fading += 1  # the mesh still fits where the face was, only its presence dipped
                        measured = False
                    elif found is None:
                        suspects.append(track)
                        continue
                    else:
                        result, measured = found, False
            if result.score >= self.keep_presence:
                track.fading = 0
            self._follow(track, result, measured, rgb)
        self._part_converged(before)
        for track in [t for t in self._tracks if not t.confirmed and t not in suspects and t.age > 0]:
            # a tentative face is confirmed (or dropped) by the detector right around it on the next frame
            if self._detected_near(rgb, track):
                track.confirmed = True
            else:
                self._tracks.remove(track)
                log.debug("frame %d: tentative track %d not seen again", index, track.track_id)
        self._search_lost(rgb)
        detected: set[int] = set()
        if cut or suspects or self._since_detect >= self.detect_interval:
            detected = self._detect(rgb, suspects)
            self._since_detect = 0
        elif self._shot_age in EARLY_ROUNDS:  # extra rounds early in a shot; the periodic schedule stays
            detected = self._detect(rgb, suspects)
        self._shot_age += 1
        for track in suspects:
            if track.track_id not in detected and track in self._tracks:
                self._tracks.remove(track)
                self._lost.append(track)
                self.stats.lost += 1
                log.debug("frame %d: track %d lost (its mesh jumped or faded, no detection)", index, track.track_id)
        self._lost = [t for t in self._lost if index - t.last_seen <= self.revive_frames and t.confirmed]
        self._since_detect += 1
        faces = []
        for track in self._tracks:
            if track.confirmed:
                yaw, pitch = head_pose(track.result.mesh)
                faces.append(TrackedFace(track.track_id, landmark_box(track.landmarks), track.landmarks,
                                         track.track_id in detected, yaw, pitch, track.result.score,
                                         track.result.mesh.astype(np.float32)))
        return cut, faces

    def _good(self, track: _MeshTrack, result: MeshResult, width: int, height: int) -> bool:
        return result.score >= self.keep_presence and plausible(self._expected(track), result.landmarks, width,
                                                                 height)

    def _local_detections(self, rgb: np.ndarray, track: _MeshTrack, min_score: float) -> list[Detection]:
        """The detector on a square 2.5 times the face around its last place (one inference, and the face is
        larger in it than in the whole frame): the detections near the face."""
        h, w = rgb.shape[:2]
        box = landmark_box(self._expected(track))
        side = min(max(box.width, box.height) * 2.5, w, h)
        cx, cy = box.center
        x0, y0 = int(np.clip(cx - side / 2, 0, w - side)), int(np.clip(cy - side / 2, 0, h - side))
        region = (x0, y0, x0 + int(side), y0 + int(side))
        self.stats.detections += 1
        return [d for d in self.detector.detect_rgb(rgb, [region], min_score=min_score)
                if _box_distance(box, d.box) < 0.5]

    def _detected_near(self, rgb: np.ndarray, track: _MeshTrack) -> bool:
        # a face is born at the detector's own floor and confirmed at the lower one a known face gets (hysteresis)
        return bool(self._local_detections(rgb, track, LOCAL_MIN_SCORE))

    def _find_near(self, rgb: np.ndarray, track: _MeshTrack) -> MeshResult | None:
        """A face the mesh is losing, found again by the detector right around it at a lower score floor; the
        mesh must agree and stay plausible."""
        h, w = rgb.shape[:2]
        near = self._local_detections(rgb, track, LOCAL_MIN_SCORE)
        if not near:
            return None
        best = max(near, key=lambda d: d.score)
        result = self._confirm(rgb, best)
        if result is not None and plausible(self._expected(track), result.landmarks, w, h):
            track.coasting = 0
            return result
        if track.coasting >= MAX_COAST:
            return None
        # the detector still sees the face but the mesh does not (a hand, a strong turn): carry the last mesh
        # along with the detection for a few frames
        track.coasting += 1
        shift = np.array([*best.box.center], np.float64) - np.array([*landmark_box(track.landmarks).center])
        last = track.result
        moved = Crop(last.crop.cx + shift[0], last.crop.cy + shift[1], last.crop.side, last.crop.angle)
        mesh = last.mesh.copy()
        mesh[:, :2] += shift
        return MeshResult(mesh, last.score, moved)

    def _search_lost(self, rgb: np.ndarray) -> None:
        """Hysteresis on presence: a face lost moments ago is looked for right where it was on every frame, with
        the lower floors a known face gets (the detector at ``LOCAL_MIN_SCORE``, the mesh at a quarter of
        ``start_presence``), so a face whose scores sit at a threshold (they differ with the CPU's kernels and with
        one bit of noise) comes back on the next frame instead of the next detection round."""
        for track in list(self._lost):
            if self._index - track.last_seen > REVIVE_SEARCH or len(self._tracks) >= self.max_faces:
                continue
            near = self._local_detections(rgb, track, LOCAL_MIN_SCORE)
            if not near:
                continue
            result = self._confirm(rgb, max(near, key=lambda d: d.score), self.start_presence / 4)
            if result is None:
                continue
            box = landmark_box(result.landmarks)
            if _near(self._expected(track), box) >= 0.5 or any(landmark_box(t.landmarks).iou(box) > 0.3
                                                          for t in self._tracks):
                continue
            self._lost.remove(track)
            self._follow(track, result)
            track.misses, track.coasting = 0, 0
            self._tracks.append(track)
            log.debug("frame %d: track %d found again where it was lost", self._index, track.track_id)

    def _revived(self, rgb: np.ndarray, landmarks: np.ndarray) -> _MeshTrack | None:
        """The lost track a new face is: the one whose motion foresaw it (within half its size); else the likest one
        along whose path it lies, if alike enough (FORESEE_WIDEN, FORESEE_LIKE); else, further off
        (the longer it was lost, the further, to REVIVE_FAR sizes: it may have turned or stopped behind whatever
        hid it, and a walker covers a third of its face a frame at most), the one that looks most alike, if alike
        enough (REVIVE_LIKE)."""
        box = landmark_box(landmarks)
        near = {id(t): _near(self._expected(t), box) for t in self._lost}
        foreseen = min(self._lost, key=lambda t: near[id(t)], default=None)
        if foreseen is not None and near[id(foreseen)] < 0.5:
            return foreseen
        look = _appearance(rgb, landmarks)
        on_path = [(_alike(t.look, look), t) for t in self._lost if t.look is not None
                   and _near_path(t.landmarks, self._expected(t), box)
                   < 0.5 + FORESEE_WIDEN * (self._index - t.last_seen - 1)]
        likest = max(on_path, key=lambda pair: pair[0], default=None)
        if likest is not None and likest[0] >= FORESEE_LIKE:
            return likest[1]
        # from where it was or where its motion said, whichever is nearer: its motion may have ended behind the cover
        off = {id(t): min(near[id(t)], _near(t.landmarks, box)) for t in self._lost}
        alike = [(_alike(t.look, look), t) for t in self._lost if t.look is not None
                 and off[id(t)] < min(0.5 + REVIVE_WIDEN * (self._index - t.last_seen), REVIVE_FAR)]
        best = max(alike, key=lambda pair: pair[0], default=None)
        return best[1] if best is not None and best[0] >= REVIVE_LIKE else None

    def _part_converged(self, before: dict[int, tuple[_MeshTrack, np.ndarray]]) -> None:
        """Two tracks whose meshes went to one face this frame (a face passing in front of another): the face stays
        with the track whose motion foresaw it (by a margin of PART_MARGIN of its size); the other goes back to
        where it was and is lost, to be found again where its own motion takes it. So two people who cross keep
        their ids, where keeping the older id would hand the one in front the other's."""
        for a, b in itertools.combinations(list(self._tracks), 2):
            if a not in self._tracks or b not in self._tracks or not a.last_seen == b.last_seen == self._index:
                continue
            box = landmark_box(a.landmarks)
            if box.iou(landmark_box(b.landmarks)) < 0.5:
                continue
            misses = [float(np.hypot(*(t.landmarks.mean(axis=0) - before[id(t)][1].mean(axis=0)))) for t in (a, b)]
            if abs(misses[0] - misses[1]) < PART_MARGIN * max(box.width, box.height):
                continue  # no motion tells them apart: the older id is kept (drop_duplicates)
            loser = a if misses[0] > misses[1] else b
            old = before[id(loser)][0]
            loser.result, loser.crop, loser.velocity = old.result, old.crop, old.velocity
            loser.age, loser.last_seen = old.age, old.last_seen
            self._tracks.remove(loser)
            self._lost.append(loser)
            self.stats.lost += 1
            log.debug("frame %d: track %d went to track %d's face; lost", self._index, loser.track_id,
                      (b if loser is a else a).track_id)

    @staticmethod
    def _lead(track: _MeshTrack) -> np.ndarray:
        """A track's motion a frame, where it moves clearly (over VELOCITY_DEAD of its size); none where it is
        still, so that a still face is looked for exactly where it was."""
        box = landmark_box(track.landmarks)
        fast = float(np.hypot(*track.velocity)) > VELOCITY_DEAD * max(box.width, box.height)
        return track.velocity if fast else np.zeros(2)

    def _expected(self, track: _MeshTrack) -> np.ndarray:
        """Where a track's landmarks are expected on the current frame: its last ones moved on at its velocity for
        the frames since it was last seen (a face that moves fast is looked for where it is going)."""
        frames = self._index - track.last_seen
        if frames <= 0:
            return track.landmarks
        # one frame on, a still face's jitter is not motion; over a gap (a face hidden by a passer-by) it adds up
        return track.landmarks + (self._lead(track) if frames == 1 else frames * track.velocity)

    def _follow(self, track: _MeshTrack, result: MeshResult, measured: bool = False,
                rgb: np.ndarray | None = None) -> None:
        """The track's face on this frame is `result`; its velocity is updated where the mesh `measured` the move
        from the frame before (not where a detection or the last mesh carried it)."""
        if measured and track.age > 0 and self._index == track.last_seen + 1:
            moved = result.landmarks.mean(axis=0) - track.landmarks.mean(axis=0)
            track.velocity = VELOCITY_KEEP * track.velocity + (1.0 - VELOCITY_KEEP) * moved
        elif self._index > track.last_seen + 1:
            track.velocity = np.zeros(2)  # back after a gap: its old motion says little
        if rgb is not None and measured and result.score >= self.min_presence:  # seen clearly: how it looks
            look = _appearance(rgb, result.landmarks)
            track.look = look if track.look is None else track.look + LOOK_FOLLOW * (look - track.look)
        track.result = result
        track.age += 1
        track.last_seen = self._index
        ahead, lead = result.next_crop(), self._lead(track)  # the mesh looks next where the face is going
        track.crop = Crop(ahead.cx + lead[0], ahead.cy + lead[1], ahead.side, ahead.angle)

    def _confirm(self, rgb: np.ndarray, detection: Detection, floor: float | None = None) -> MeshResult | None:
        """The mesh on a detection, refined once from its own crop; None when it does not see a face there
        (presence under ``floor``, by default ``start_presence``)."""
        first = self.mesh.run(rgb, crop_from_detection(detection))
        refined = self.mesh.run(rgb, first.next_crop())
        self.stats.landmark_calls += 2
        result = refined if refined.score >= first.score else first  # a turned face can lead the 2nd astray
        if result.score < (self.start_presence if floor is None else floor):
            return None
        found = landmark_box(result.landmarks)
        if found.iou(detection.box) < 0.2 or max(found.width, found.height) < self.min_face:
            return None  # the mesh settled elsewhere, or on nothing face-sized
        return result

    def _detect(self, rgb: np.ndarray, suspects: list[_MeshTrack]) -> set[int]:
        """A detection round: the whole frame, and the tiles. Where every tracked face is large (over a sixth of
        the frame's longer side) the tiles, which look for small ones, join only every fourth round."""
        self.stats.detections += 1
        self._rounds += 1
        regions = self.detector.regions(rgb.shape[1], rgb.shape[0])
        longer = max(rgb.shape[:2])
        boxes = [landmark_box(t.landmarks) for t in self._tracks]
        large = bool(boxes) and all(max(b.width, b.height) > longer / 6 for b in boxes)
        if large and self._shot_age > max(EARLY_ROUNDS) and self._rounds % 4:
            regions = regions[:1]
        detections = sorted(self.detector.detect_rgb(rgb, regions), key=lambda d: -d.box.width * d.box.height)
        pairs = sorted(((_near(self._expected(t), d.box), ti, di) for ti, t in enumerate(self._tracks)
                        for di, d in enumerate(detections)), key=lambda p: p[0])
        matched_tracks: set[int] = set()
        matched: set[int] = set()
        detected: set[int] = set()
        for distance, ti, di in pairs:
            if distance > 0.5 or ti in matched_tracks or di in matched:
                continue
            track = self._tracks[ti]
            if track in suspects:
                result = self._confirm(rgb, detections[di])
                if result is None:
                    continue
                self._follow(track, result)
            matched_tracks.add(ti)
            matched.add(di)
            track.misses = 0
            track.confirmed = True
            detected.add(track.track_id)
        survivors = []
        for ti, track in enumerate(self._tracks):
            if ti not in matched_tracks and not track.confirmed:
                log.debug("frame %d: tentative track %d not seen again", self._index, track.track_id)
                continue  # a tentative track the detector did not see again
            if ti not in matched_tracks and track not in suspects:
                track.misses += 1
                if track.result.score < self.min_presence and track.misses > 1:
                    # the mesh doubts it and the detector does not see it: lost (it may come back under its id)
                    self._lost.append(track)
                    self.stats.lost += 1
                    log.debug("frame %d: track %d lost (undetected, presence %.2f)", self._index, track.track_id,
                              track.result.score)
                    continue
            survivors.append(track)
        self._tracks = survivors
        refused, self._refused = self._refused, []
        for di, detection in enumerate(detections):
            if di in matched or len(self._tracks) >= self.max_faces:
                continue
            if any(_near(self._expected(t), detection.box) < 0.5 for t in self._tracks):
                continue
            # where a face was lost moments ago, a detection is nearly proof: the mesh need only half agree
            # so is a detection the mesh refused at the same place in the last round (a turned face it doubts)
            lost_here = [t for t in self._lost if _near(self._expected(t), detection.box) < 0.5]
            seen_here = [b for b in refused if _box_distance(b, detection.box) < 0.5]
            result = self._confirm(rgb, detection, self.start_presence / 4 if lost_here or seen_here else None)
            if result is None:
                self._refused.append(detection.box)
                log.debug("frame %d: detection at %s (score %.2f) refused by the mesh", self._index,
                          detection.box, detection.score)
                continue
            landmarks = result.landmarks
            if any(landmark_box(t.landmarks).iou(landmark_box(landmarks)) > 0.3 for t in self._tracks):
                continue  # the mesh went to a face that is already tracked
            revived = self._revived(rgb, landmarks)
            if revived is not None:
                self._lost.remove(revived)
                track = revived
            else:
                track = _MeshTrack(next(self._ids), result, result.next_crop())
                track.confirmed = result.score >= self.sure_presence and detection.score >= self.sure_score
            self._follow(track, result)
            self._tracks.append(track)
            detected.add(track.track_id)
        self._tracks = drop_duplicates(self._tracks, lambda t: landmark_box(t.landmarks))
        return detected


def _near(landmarks: np.ndarray, box: Box) -> float:
    """Distance between a face's landmark box and a box, centre to centre, in units of the face's size."""
    return _box_distance(landmark_box(landmarks), box)


def _near_path(start: np.ndarray, end: np.ndarray, box: Box) -> float:
    """Distance between a box and the path of a face's landmark box from `start` to `end` (landmarks), centre to
    centre, in units of the face's size."""
    (x0, y0), (x1, y1) = landmark_box(start).center, landmark_box(end).center
    cx, cy = box.center
    step = np.array([x1 - x0, y1 - y0])
    t = float(np.clip(np.dot([cx - x0, cy - y0], step) / max(float(step @ step), 1e-9), 0.0, 1.0))
    return _near(start + t * step, box)


def _box_distance(a: Box, b: Box) -> float:
    """Distance between two boxes, centre to centre, in units of the first one's size."""
    (ax, ay), (bx, by) = a.center, b.center
    return float(np.hypot(ax - bx, ay - by) / max(a.width, a.height, 1.0))


def _appearance(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """How a face looks, coarsely: a histogram of hue (12 bins) by saturation (4) over the middle of its landmark
    box (a fifth in from each side, so no background), summing to 1. Cheap, and steady across pose and expression;
    it tells people apart by skin, hair and light, not by identity."""
    box = landmark_box(landmarks)
    dx, dy = 0.2 * box.width, 0.2 * box.height
    x0, y0 = int(max(0.0, box.x0 + dx)), int(max(0.0, box.y0 + dy))
    x1, y1 = int(min(rgb.shape[1], box.x1 - dx)), int(min(rgb.shape[0], box.y1 - dy))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.full(48, 1 / 48, np.float32)
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2HSV)
    counts = cv2.calcHist([hsv], [0, 1], None, [12, 4], [0, 180, 0, 256]).ravel()
    return (counts / max(float(counts.sum()), 1.0)).astype(np.float32)


def _alike(a: np.ndarray, b: np.ndarray) -> float:
    """Histogram intersection: 1 for the same colours, lower as they part."""
    return float(np.minimum(a, b).sum())
