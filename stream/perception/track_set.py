"""A clip's face tracks as data: each face's box, landmarks, crop quads and pose per frame, and the
track file of DESIGN.md 3.2 (JSON) and the title cache's arrays that hold them."""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stream.perception.geometry import Box, mask_outline
from stream.perception.smoothing import quad_corners
from stream.perception.tracker import TrackerStats

Mode = Literal["offline", "live"]
TRACK_FILE_VERSION = 1


@dataclass
class FaceState:
    """A face in one frame with its raw and smoothed crop quads (parameters ``[cx, cy, xx, xy]``)."""

    track_id: int
    index: int
    time: float
    box: Box
    landmarks: np.ndarray  # [68,2]
    raw: np.ndarray  # [4]
    quad: np.ndarray | None = None  # [4], smoothed; None until the smoother has seen enough frames
    yaw: float | None = None  # head pose in degrees (MediaPipe's mesh; None with --detector hog)
    pitch: float | None = None
    presence: float | None = None  # the mesh's confidence that this is a face
    steady_yaw: float | None = None  # the yaw smoothed over the track (what the recast's fade follows; not saved)
    mesh: np.ndarray | None = None  # [468,3] the mesh tracker's dense points and depth (in memory only, not saved)

    @property
    def crop_params(self) -> np.ndarray:
        """The quad the face is cropped on: the smoothed one once there is one, the raw one before."""
        return self.quad if self.quad is not None else self.raw


@dataclass
class FaceTrack:
    track_id: int
    faces: list[FaceState] = field(default_factory=list)

    @property
    def first(self) -> int:
        return self.faces[0].index

    @property
    def last(self) -> int:
        return self.faces[-1].index

    def raw_params(self) -> np.ndarray:
        return np.stack([f.raw for f in self.faces])

    def quad_params(self) -> np.ndarray:
        return np.stack([f.crop_params for f in self.faces])


@dataclass
class TrackSet:
    source: str
    width: int
    height: int
    fps: float
    frame_count: int
    mode: Mode
    cuts: list[int]
    tracks: list[FaceTrack]
    stats: TrackerStats | None = None

    def by_frame(self) -> dict[int, list[FaceState]]:
        out: dict[int, list[FaceState]] = collections.defaultdict(list)
        for track in self.tracks:
            for face in track.faces:
                out[face.index].append(face)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "version": TRACK_FILE_VERSION,
            "source": self.source,
            "width": self.width,
            "height": self.height,
            "fps": round(self.fps, 6),
            "frame_count": self.frame_count,
            "mode": self.mode,
            "cuts": self.cuts,
            "tracks": [
                {
                    "id": t.track_id,
                    "first": t.first,
                    "last": t.last,
                    "frames": [
                        {
                            "index": f.index,
                            "time": round(f.time, 6),
                            "box": f.box.as_list(),
                            "landmarks": np.round(f.landmarks, 2).tolist(),
                            "raw_quad": np.round(quad_corners(f.raw), 3).tolist(),
                            "quad": np.round(quad_corners(f.crop_params), 3).tolist(),
                            **_pose(f),
                        }
                        for f in t.faces
                    ],
                }
                for t in self.tracks
            ],
        }

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json()))
        tmp.replace(path)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat arrays for the title cache's tracks.npz, one row per face per frame: `raw_quad` and `quad` are the
        corners of DESIGN.md 3.6 (as in the track file); `raw_params`/`quad_params` keep the quads' parameters at
        full precision so that a reloaded track set crops exactly as the one that was baked."""
        faces = [f for t in self.tracks for f in t.faces]
        raw = np.asarray([f.raw for f in faces], np.float64).reshape(-1, 4)
        quad = np.asarray([f.crop_params for f in faces], np.float64).reshape(-1, 4)
        header = {"source": self.source, "width": self.width, "height": self.height, "fps": self.fps,
                  "frame_count": self.frame_count, "mode": self.mode, "version": TRACK_FILE_VERSION}
        return {
            "header": np.array(json.dumps(header)),
            "cuts": np.asarray(self.cuts, np.int64),
            "track": np.asarray([f.track_id for f in faces], np.int64),
            "frame": np.asarray([f.index for f in faces], np.int64),
            "time": np.asarray([f.time for f in faces], np.float64),
            "box": np.asarray([(f.box.x0, f.box.y0, f.box.x1, f.box.y1) for f in faces], np.float64).reshape(-1, 4),
            "landmarks": np.asarray([f.landmarks for f in faces], np.float32).reshape(-1, 68, 2),
            "raw_quad": np.asarray([quad_corners(p) for p in raw], np.float64).reshape(-1, 4, 2),
            "quad": np.asarray([quad_corners(p) for p in quad], np.float64).reshape(-1, 4, 2),
            "raw_params": raw,
            "quad_params": quad,
            # head pose and presence (NaN where the tracker gives none): an extension of DESIGN.md 3.6's arrays
            "pose": np.asarray([[np.nan if v is None else v for v in (f.yaw, f.pitch, f.presence)] for f in faces],
                               np.float64).reshape(-1, 3),
            # the mask: the feathered fill (6 % of the crop) of this outline's hull, aligned like the landmarks
            "mask_outline": np.asarray([mask_outline(f.landmarks) for f in faces], np.float32).reshape(-1, 27, 2),
        }

    @classmethod
    def from_arrays(cls, arrays: Any) -> TrackSet:
        header = json.loads(str(arrays["header"]))
        if header.get("version") != TRACK_FILE_VERSION:
            raise ValueError(f"unsupported track arrays version {header.get('version')!r}")
        tracks: dict[int, FaceTrack] = {}
        pose = arrays["pose"] if "pose" in getattr(arrays, "files", arrays) else None  # older caches have none
        for i, track_id in enumerate(arrays["track"].tolist()):
            face = FaceState(track_id, int(arrays["frame"][i]), float(arrays["time"][i]), Box(*arrays["box"][i]),
                             arrays["landmarks"][i].copy(), arrays["raw_params"][i].copy(),
                             arrays["quad_params"][i].copy(), *_pose_values(pose[i] if pose is not None else None))
            tracks.setdefault(track_id, FaceTrack(track_id)).faces.append(face)
        steady_pose(tracks.values())
        return cls(header["source"], int(header["width"]), int(header["height"]), float(header["fps"]),
                   int(header["frame_count"]), header["mode"], [int(c) for c in arrays["cuts"]], list(tracks.values()))

    @classmethod
    def load(cls, path: str | Path) -> TrackSet:
        """Read a track file; raises ValueError naming the file when it is not one."""
        try:
            data = json.loads(Path(path).read_text())
            if data.get("version") != TRACK_FILE_VERSION:
                raise ValueError(f"unsupported track file version {data.get('version')!r}")
            tracks = []
            for t in data["tracks"]:
                faces = [
                    FaceState(
                        track_id=int(t["id"]), index=int(f["index"]), time=float(f["time"]), box=Box(*f["box"]),
                        landmarks=np.asarray(f["landmarks"], dtype=np.float32).reshape(68, 2),
                        raw=_params_from_corners(np.asarray(f["raw_quad"], dtype=np.float64)),
                        quad=_params_from_corners(np.asarray(f["quad"], dtype=np.float64)),
                        yaw=_optional_float(f.get("yaw")), pitch=_optional_float(f.get("pitch")),
                        presence=_optional_float(f.get("presence")),
                    )
                    for f in t["frames"]
                ]
                tracks.append(FaceTrack(int(t["id"]), faces))
            steady_pose(tracks)
            return cls(str(data["source"]), int(data["width"]), int(data["height"]), float(data["fps"]),
                       int(data["frame_count"]), data["mode"], [int(c) for c in data["cuts"]], tracks)
        except (OSError, KeyError, TypeError, ValueError, RecursionError) as exc:  # RecursionError: deep JSON
            raise ValueError(f"{path}: not a Recast track file ({str(exc)[:200]})") from None


def _pose(face: FaceState) -> dict[str, float]:
    """The optional per-face fields of the track file: head yaw and pitch (degrees) and presence, when known."""
    values = {"yaw": face.yaw, "pitch": face.pitch, "presence": face.presence}
    return {k: round(float(v), 3) for k, v in values.items() if v is not None}


def _optional_float(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _pose_values(row: np.ndarray | None) -> tuple[float | None, float | None, float | None]:
    if row is None:
        return None, None, None
    yaw, pitch, presence = (None if not np.isfinite(v) else float(v) for v in row)
    return yaw, pitch, presence


def _params_from_corners(corners: np.ndarray) -> np.ndarray:
    c = corners.mean(axis=0)
    # corners: c-x-y, c-x+y, c+x+y, c+x-y  ->  x = ((c+x+y) + (c+x-y))/2 - c
    x = (corners[2] + corners[3]) / 2 - c
    return np.array([c[0], c[1], x[0], x[1]])


def contiguous_runs(faces: list[FaceState]) -> list[list[FaceState]]:
    """A track's faces split where frames are missing: smoothing never bridges a gap."""
    runs: list[list[FaceState]] = []
    for face in faces:
        if runs and face.index == runs[-1][-1].index + 1:
            runs[-1].append(face)
        else:
            runs.append([face])
    return runs


YAW_SIGMA = 3.0  # frames: the offline smoothing of the yaw the fade follows
YAW_SLEW = 2.0  # degrees per frame at most: the fade takes a third of a second or more, never a jump


def _slew(values: np.ndarray, step: float) -> np.ndarray:
    """Limit the change between neighbours to ``step``, in a forward and a backward pass (no lag either way)."""
    out = values.copy()
    for i in range(1, len(out)):
        out[i] = np.clip(out[i], out[i - 1] - step, out[i - 1] + step)
    for i in range(len(out) - 2, -1, -1):
        out[i] = np.clip(out[i], out[i + 1] - step, out[i + 1] + step)
    return out


def steady_pose(tracks: Iterable[FaceTrack], sigma: float = YAW_SIGMA) -> None:
    """Offline: each face's steady yaw is its track's yaw smoothed by a Gaussian over each run of frames and
    slew-limited, so that the recast's fade (stream.render.renderer.pose_weight) never jumps between frames even when
    the mesh's estimate does (a strongly turned face's yaw can swing 20 degrees in two frames)."""
    from scipy.ndimage import gaussian_filter1d

    for track in tracks:
        for run in contiguous_runs(track.faces):
            if any(f.yaw is None for f in run):
                continue
            smooth = gaussian_filter1d(np.array([f.yaw for f in run], np.float64), sigma, mode="nearest")
            for face, value in zip(run, _slew(smooth, YAW_SLEW), strict=True):
                face.steady_yaw = float(value)
