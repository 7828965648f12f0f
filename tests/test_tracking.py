"""Faces, tracks and cuts on the real clips and stills."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from stream.casts.cast import read_image
from stream.media.cuts import CutDetector
from stream.media.sources import MediaSource
from stream.perception.geometry import to_gray
from stream.perception.hog import FaceDetector, LandmarkPredictor, find_landmark_model
from stream.perception.track_set import TrackSet, contiguous_runs
from stream.render.options import RenderOptions
from stream.render.pipeline import run_tracking
from tests.conftest import media, still_video


def test_landmark_model_is_found_by_path() -> None:
    path = find_landmark_model()
    assert path.name == "shape_predictor_68_face_landmarks.dat" and path.stat().st_size > 90_000_000


def test_hamilton_cuts_exact(hamilton_tracks: TrackSet) -> None:
    # the three cuts, and nothing in the fast motion of frames 21-26
    assert hamilton_tracks.cuts == [20, 82, 211]
    assert hamilton_tracks.frame_count == 275


@pytest.mark.parametrize("clip", ["liveportrait_d20.mp4", "liveportrait_s18.mp4", "liveportrait_d0.mp4"])
def test_single_shot_clips_have_no_cuts(clip: str) -> None:
    detector = CutDetector()
    with MediaSource(media(f"videos/{clip}"), keep_audio=False) as source:
        cuts = [f.index for f in source.frames() if detector.update(to_gray(f.image))]
    assert cuts == []  # d20 frame 0->1 exposure jump is not a cut either


def test_no_track_crosses_a_cut(hamilton_tracks: TrackSet) -> None:
    """A track may have gaps (a face lost for a few frames takes its id back) but never spans a cut, and its
    offline smoothing never bridges a gap (each run of frames is smoothed on its own)."""
    assert hamilton_tracks.tracks
    for track in hamilton_tracks.tracks:
        indices = [f.index for f in track.faces]
        assert indices == sorted(set(indices)), "one face per track and frame, in order"
        assert not any(track.first < cut <= track.last for cut in hamilton_tracks.cuts)
        for run in contiguous_runs(track.faces):
            assert [f.index for f in run] == list(range(run[0].index, run[-1].index + 1))


def test_track_file_round_trip(tmp_path: Path, hamilton_tracks: TrackSet) -> None:
    path = tmp_path / "tracks.json"
    hamilton_tracks.save(path)
    loaded = TrackSet.load(path)
    data = loaded.to_json()
    assert data["version"] == 1 and data["cuts"] == [20, 82, 211]
    first = data["tracks"][0]["frames"][0]
    # DESIGN.md 3.2's fields, and the head pose the default (MediaPipe) tracker adds
    assert set(first) == {"index", "time", "box", "landmarks", "raw_quad", "quad", "yaw", "pitch", "presence"}
    assert len(first["landmarks"]) == 68 and len(first["quad"]) == 4
    # times are presentation times (the video starts at 0.852 s)
    assert first["time"] == pytest.approx(0.852 + first["index"] / 29.97, abs=2 / 29.97)
    np.testing.assert_allclose(loaded.tracks[0].quad_params(), hamilton_tracks.tracks[0].quad_params(), atol=1e-2)


def test_bad_track_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"version": 7}')
    with pytest.raises(ValueError, match=r"bad\.json"):
        TrackSet.load(path)


@pytest.mark.parametrize("clip", [pytest.param("liveportrait_s18.mp4", marks=pytest.mark.slow), "liveportrait_d20.mp4",
                                  "liveportrait_d0.mp4"])
def test_coverage_against_full_frame_upsampled_dlib(clip: str) -> None:
    """Coverage (DESIGN.md 3.3): of the faces dlib finds with upsampling on the full frame (every 7th
    frame; s18's 720p frames every 14th), the share that a track covers (IoU >= 0.3). Must be >= 0.95 on these
    single-face clips."""
    tracks = run_tracking(media(f"videos/{clip}"), RenderOptions())
    by_frame = tracks.by_frame()
    reference = FaceDetector(detect_width=0, upsample=1)
    found = covered = 0
    with MediaSource(media(f"videos/{clip}"), keep_audio=False) as source:
        for frame in source.frames():
            if frame.index % (14 if frame.image.shape[0] >= 720 else 7):
                continue
            for box in reference.detect(to_gray(frame.image)):
                found += 1
                covered += any(f.box.iou(box) >= 0.3 for f in by_frame.get(frame.index, []))
    assert found > 5
    assert covered / found >= 0.95


@pytest.mark.parametrize(("image", "expected"), [("face_recognition_two_people.jpg", 2),
                                                 ("liveportrait_insightface_t1.jpg", 6)])
def test_stable_ids_on_group_stills(image: str, expected: int, make_video: Callable[..., Path]) -> None:
    photo = read_image(media(f"images/{image}"))
    h, w = photo.shape[:2]
    photo = photo[: h - h % 2, : w - w % 2]
    clip = make_video("still.mp4", still_video(photo, 40, jitter_px=1.5))
    tracks = run_tracking(clip, RenderOptions(detect_interval=5, detect_width=0, upsample=1 if expected > 2 else 0))
    full = [t for t in tracks.tracks if len(t.faces) == 40]
    assert len(full) >= expected - 1, f"faces tracked through all 40 frames: {len(full)}"
    assert len(tracks.tracks) <= expected, "no face was lost and re-found under a new id"
    # each id stays on the same face: its box centre moves no more than the camera shake
    for track in full:
        centres = np.array([f.box.center for f in track.faces])
        assert np.ptp(centres, axis=0).max() < 0.25 * track.faces[0].box.width


def test_detector_and_landmarks_on_a_portrait() -> None:
    img = read_image(media("images/face_recognition_obama-480p.jpg"))
    gray = to_gray(img)
    boxes = FaceDetector().detect(gray)
    assert len(boxes) == 1
    lm = LandmarkPredictor().predict(gray, boxes[0])
    assert lm.shape == (68, 2)
    # eyes above the mouth, inside the detection box
    assert lm[36:48, 1].mean() < lm[48:68, 1].mean()
    b = boxes[0]
    assert b.x0 - 10 < lm[:, 0].mean() < b.x1 + 10


def test_no_faces_clip_gives_empty_tracks(make_video: Callable[..., Path]) -> None:
    frames = [np.full((120, 160, 3), 90, np.uint8) for _ in range(10)]
    tracks = run_tracking(make_video("blank.mp4", frames), RenderOptions())
    assert tracks.tracks == [] and tracks.frame_count == 10
