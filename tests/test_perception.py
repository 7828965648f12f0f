"""MediaPipe perception on LiteRT (`--detector mediapipe`): the models the set-up installs, BlazeFace over the frame
and tiles, the face mesh in the track file's 68-point layout, and the mesh tracker's goals on the shared clips."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import zipfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.casts.cast import read_image
from stream.media.sources import Frame, MediaSource
from stream.perception.blazeface import BlazeFace
from stream.perception.face_stage import LiveFaceStage, track_frames
from stream.perception.geometry import to_gray
from stream.perception.hog import FaceDetector, LandmarkPredictor
from stream.perception.mesh import FaceMesh, MeshLandmarker, crop_from_detection, head_pose
from stream.perception.model_files import MEDIAPIPE_FILES, ModelMissing, install_from_wheel, mediapipe_model
from stream.perception.track_set import FaceState, TrackSet, contiguous_runs
from stream.recasters.contract import IdentityRecaster
from stream.recasters.warp import WarpRecaster
from stream.render.options import RenderOptions
from stream.render.pipeline import make_tracker, run_tracking
from stream.render.renderer import FaceRenderer, pose_weight
from tests.conftest import HAMILTON, capture_rendered, decode_all, media, psnr


def _frames(name: str, wanted: set[int]) -> dict[int, np.ndarray]:
    with MediaSource(media(name), keep_audio=False) as source:
        return {f.index: f.image for f in source.frames() if f.index in wanted}


def _faces_per_frame(tracks: TrackSet) -> dict[int, list[int]]:
    per: dict[int, list[int]] = collections.defaultdict(list)
    for track in tracks.tracks:
        for face in track.faces:
            per[face.index].append(track.track_id)
    return per


def test_models_are_installed_where_the_set_up_puts_them_and_match_their_pins() -> None:
    for name, (_, digest) in MEDIAPIPE_FILES.items():
        assert hashlib.sha256(mediapipe_model(name).read_bytes()).hexdigest() == digest


def test_a_missing_or_altered_model_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECAST_MEDIAPIPE", str(tmp_path / "empty"))
    with pytest.raises(ModelMissing, match=r"empty/face_landmark.tflite: missing; `make install`"):
        mediapipe_model("face_landmark")
    fake = tmp_path / "mediapipe-0.10.21-fake.whl"
    with zipfile.ZipFile(fake, "w") as archive:
        for member, _ in MEDIAPIPE_FILES.values():
            archive.writestr(member, b"not the model")
    with pytest.raises(ModelMissing, match="expected"):
        install_from_wheel(fake, tmp_path / "out")


def test_blazeface_finds_the_faces_hog_misses() -> None:
    """The hamilton wide shot (performer and seated guest, 28-48 px) and the audience (four faces, turned):
    BlazeFace with two tile columns finds them, HOG at 640 px finds at most one."""
    frames = _frames(HAMILTON, {10, 250, 274})
    detector, hog = BlazeFace(tiles=2), FaceDetector()
    found = {i: detector.detect_rgb(img) for i, img in frames.items()}
    assert len(found[10]) >= 2 and min(d.box.width for d in found[10]) < 35
    assert len(found[250]) >= 4 or len(found[274]) >= 4
    assert all(0.6 <= d.score <= 1.0 for ds in found.values() for d in ds)
    assert sum(len(hog.detect(to_gray(img))) for img in frames.values()) <= 2
    # the whole frame alone finds the large faces only
    assert len(BlazeFace(tiles=0).detect_rgb(frames[10])) < len(found[10])


def test_mesh_gives_the_68_point_layout() -> None:
    """On frontal frames of d0 (neutral and smiling), the mesh's 68 points sit on dlib's within 8 % of the
    distance between the eyes on average (measured 5 %), and the head faces the camera."""
    frames = _frames("videos/liveportrait_d0.mp4", {0, 60})
    detector, mesh, dlib68 = BlazeFace(), FaceMesh(), LandmarkPredictor()
    for image in frames.values():
        (found,) = detector.detect_rgb(image)
        result = mesh.run(image, crop_from_detection(found))
        result = mesh.run(image, result.next_crop())
        ours, reference = result.landmarks, dlib68.predict(to_gray(image), found.box)
        assert ours.shape == (68, 2) and result.score > 0.9
        eyes = np.linalg.norm(reference[36:42].mean(0) - reference[42:48].mean(0))
        assert float(np.linalg.norm(ours - reference, axis=1).mean()) / eyes < 0.08
        yaw, pitch = head_pose(result.mesh)
        assert abs(yaw) < 20 and abs(pitch) < 25


def test_hamilton_wide_shot_and_audience(hamilton_tracks: TrackSet) -> None:
    """Goals: the wide shot (frames 0-19) with performer and guest both tracked in >= 80 % of frames; the audience
    (211-274) with >= 4 faces in >= 80 % of frames and stable ids (measured: 100 % and 91 %, 4 ids)."""
    _assert_hamilton_goals(hamilton_tracks)


@pytest.mark.parametrize("seed", [1, 2])
def test_hamilton_goals_hold_with_one_bit_of_noise(seed: int) -> None:
    """The same goals with every pixel moved by -1, 0 or +1 at random: LiteRT's kernels differ by CPU by about
    that much, and a face whose scores sit at a threshold must not come and go with them (the tracker's hysteresis:
    a fitting mesh kept through a dip, a lost face looked for where it was, a face confirmed at a lower floor than
    it is born at). Measured on 12 seeds: 57-63 of 64 audience frames with 4 faces (30-39 without the
    hysteresis)."""
    tracks = _tracked_with_noise(HAMILTON, seed)
    _assert_hamilton_goals(tracks)


def _tracked_with_noise(name: str, seed: int | None) -> TrackSet:
    """The clip tracked with the default options, every pixel moved by -1, 0 or +1 at random (none for no seed)."""
    rng = np.random.default_rng(seed)
    options = RenderOptions()

    def noisy(frames: Iterator[Frame]) -> Iterator[Frame]:
        for frame in frames:
            if seed is None:
                yield frame
                continue
            noise = rng.integers(-1, 2, frame.image.shape, dtype=np.int16)
            yield dataclasses.replace(frame, image=np.clip(frame.image + noise, 0, 255).astype(np.uint8))

    with MediaSource(media(name), keep_audio=False) as source:
        return track_frames(noisy(source.frames()), source.info, make_tracker(options), mode=options.mode,
                            lookahead=options.lookahead)


def _assert_hamilton_goals(hamilton_tracks: TrackSet) -> None:
    per = _faces_per_frame(hamilton_tracks)
    assert hamilton_tracks.cuts == [20, 82, 211]
    wide = [len(per[i]) for i in range(0, 20)]
    assert sum(n >= 2 for n in wide) >= 0.8 * len(wide)
    audience = [len(per[i]) for i in range(211, 275)]
    assert sum(n >= 4 for n in audience) >= 0.8 * len(audience), collections.Counter(audience)
    ids = {tid for i in range(211, 275) for tid in per[i]}
    assert len(ids) <= 5, ids  # four people, at most one id lost and not revived
    # the medium shot (82-210): the performer, turning up to about 30 degrees and back, is one id in every frame
    performer = [per[i] for i in range(82, 211)]
    assert all(len(faces) == 1 for faces in performer) and len({f[0] for f in performer}) == 1
    # faces turned past 45 degrees (two of the audience sit at 40-60) keep their ids through the shot
    turned = [t for t in hamilton_tracks.tracks if t.faces[0].index >= 211
              and max(abs(f.yaw or 0.0) for f in t.faces) > 45]
    assert turned and all(len(t.faces) >= 0.9 * 63 for t in turned), [(t.track_id, len(t.faces)) for t in turned]


@pytest.mark.parametrize("seed", [None, 1])
@pytest.mark.parametrize("clip", ["liveportrait_d0", "liveportrait_d20", "liveportrait_s18"])
def test_a_talking_head_is_one_track(clip: str, seed: int | None) -> None:
    """One id, never a second face (a ghost), a face in >= 99 % of frames; the same with one bit of noise on every
    pixel (measured on 3 seeds: one track, a face in every frame, on each clip)."""
    tracks = _tracked_with_noise(f"videos/{clip}.mp4", seed)
    per = _faces_per_frame(tracks)
    assert len(tracks.tracks) == 1
    assert max(len(v) for v in per.values()) == 1
    assert len(per) >= 0.99 * tracks.frame_count


def test_nothing_is_tracked_where_there_is_no_face(make_video: object) -> None:
    """Black frames, noise and flat colour: no track, no crash."""
    rng = np.random.default_rng(0)
    frames = [np.zeros((360, 640, 3), np.uint8)] * 5 + [rng.integers(0, 256, (360, 640, 3), np.uint8)
                                                         for _ in range(5)]
    frames += [np.full((360, 640, 3), 128, np.uint8)] * 5
    clip = make_video("empty.mp4", frames)  # type: ignore[operator]
    assert run_tracking(clip, RenderOptions(detector="mediapipe")).tracks == []


def test_every_face_carries_its_head_pose_through_the_track_file(tmp_path: Path,
                                                                  hamilton_tracks: TrackSet) -> None:
    """Yaw, pitch and presence per face, in the track file (JSON) and the cache's arrays, read back as written.
    d0 faces the camera (measured yaw 1-5 degrees); the hamilton audience looks at the stage (up to about 55)."""
    tracks = run_tracking(media("videos/liveportrait_d0.mp4"), RenderOptions(detector="mediapipe"))
    faces = tracks.tracks[0].faces
    yaws = np.array([f.yaw for f in faces], np.float64)
    assert np.isfinite(yaws).all() and np.abs(yaws).max() < 15
    audience = [abs(f.yaw or 0.0) for t in hamilton_tracks.tracks for f in t.faces if f.index >= 211]
    assert max(audience) > 30
    assert all(f.presence is not None and 0 <= f.presence <= 1 for f in faces)
    path = tmp_path / "d0.json"
    tracks.save(path)
    back = TrackSet.load(path).tracks[0].faces
    np.testing.assert_allclose([f.yaw for f in back], yaws, atol=1e-3)
    arrays = TrackSet.from_arrays(tracks.to_arrays()).tracks[0].faces
    np.testing.assert_allclose([f.pitch for f in arrays], [f.pitch for f in faces], atol=1e-9)
    hog = run_tracking(media("videos/liveportrait_d0.mp4"), RenderOptions(detector="hog"))
    assert hog.tracks[0].faces[0].yaw is None  # dlib's 68 points carry no pose; the file leaves it out
    assert "yaw" not in hog.to_json()["tracks"][0]["frames"][0]


def test_pose_weight_fades_smoothly_between_the_usable_angles() -> None:
    usable = (30.0, 50.0)
    assert pose_weight(None, usable) == 1.0 and pose_weight(0.0, usable) == 1.0 and pose_weight(-30.0, usable) == 1.0
    assert pose_weight(50.0, usable) == 0.0 and pose_weight(-75.0, usable) == 0.0
    steps = [pose_weight(y, usable) for y in np.linspace(30, 50, 201)]
    assert all(a >= b for a, b in itertools.pairwise(steps))  # monotonic
    assert max(abs(a - b) for a, b in itertools.pairwise(steps)) < 0.02  # no jump anywhere


def test_a_face_its_mesh_doubts_fades_out(hamilton_tracks: TrackSet) -> None:
    """In the hamilton audience the mesh doubts two faces (a woman at about 60 degrees whose yaw it reads as 18 to
    59, and a frontal face whose presence dips for a dozen frames): their landmarks are guesses and the recast drawn
    on them smeared. The renderer fades a face by its track's averaged presence, never by more than 0.15 a frame;
    faces the mesh is sure of keep the whole recast."""
    wanted = {f.index for t in hamilton_tracks.tracks if t.first >= 211 for f in t.faces}
    images = {}
    with MediaSource(media(HAMILTON), keep_audio=False) as source:
        for frame in source.frames():
            if frame.index in wanted:
                images[frame.index] = frame.image
    renderer = FaceRenderer(IdentityRecaster(), badge=False, occlusion=False, hold=False)
    renderer.recaster.usable_yaw = (90.0, 91.0)  # no fade by pose: the presence alone
    weights: dict[int, list[float]] = collections.defaultdict(list)
    presence: dict[int, list[float]] = collections.defaultdict(list)
    for track in hamilton_tracks.tracks:
        if track.first < 211:
            continue
        for face in track.faces:
            regions = renderer.render(images[face.index].copy(), [face]).regions
            weights[track.track_id].append(float(regions[0].alpha.max()) if regions else 0.0)
            presence[track.track_id].append(float(face.presence or 0.0))
    doubted = [t for t in weights if np.median(presence[t]) < 0.1]
    sure = [t for t in weights if np.percentile(presence[t], 5) > 0.9]
    assert doubted and sure, {t: np.median(p) for t, p in presence.items()}
    for t in doubted:  # the woman at 60 degrees: passed through in most of the shot
        assert np.mean(np.array(weights[t]) < 0.01) > 0.7, weights[t]
    for t in sure:
        assert min(weights[t]) > 0.99, weights[t]
    for series in weights.values():
        assert max(abs(a - b) for a, b in itertools.pairwise(series)) < 0.16


def test_turned_faces_fade_out_without_flicker(hamilton_tracks: TrackSet) -> None:
    """The hamilton audience looks at the stage at 25-55 degrees: the warp recast fades on those faces, by a weight
    that follows the steadied yaw and so moves little from one frame to the next (no flicker between recast
    and original); a face past 50 degrees passes through untouched."""
    usable = WarpRecaster.usable_yaw
    weights: dict[int, list[float]] = collections.defaultdict(list)
    for track in hamilton_tracks.tracks:
        for run in contiguous_runs(track.faces):
            series = [pose_weight(f.steady_yaw, usable) for f in run]
            weights[track.track_id] += series
            assert max((abs(a - b) for a, b in itertools.pairwise(series)), default=0.0) < 0.2
    audience = [w for t in hamilton_tracks.tracks if t.first >= 211 for w in weights[t.track_id]]
    assert min(audience) < 0.9 and max(audience) == 1.0
    # the renderer: a face at 70 degrees passes through, one at 40 is pasted at part strength
    image = read_image(media("images/face_recognition_obama-480p.jpg"))
    faces = MeshLandmarker().faces(image)
    assert faces
    box, landmarks = faces[0]
    from stream.perception.smoothing import quad_params

    renderer = FaceRenderer(IdentityRecaster())
    renderer.recaster.usable_yaw = usable  # the identity recaster is never faded otherwise
    turned = FaceState(1, 0, 0.0, box, landmarks, quad_params(landmarks), steady_yaw=70.0)
    assert renderer.render(image.copy(), [turned]).regions == [] and renderer.faces_faded == 1
    half = FaceState(1, 0, 0.0, box, landmarks, quad_params(landmarks), steady_yaw=40.0)
    weight = np.zeros(image.shape[:2], np.float32)
    (region,) = renderer.render(image.copy(), [half]).regions
    region.add_to(weight)
    assert 0.4 < weight.max() < 0.6  # the smoothstep's middle


def _scene(kind: str, face: np.ndarray) -> np.ndarray:
    """A 640x360 frame built around a real face photo in one of the awkward ways a film can show one."""
    import cv2

    canvas = np.full((360, 640, 3), 40, np.uint8)
    if kind == "half out of frame":
        small = cv2.resize(face, (240, 240))
        canvas[60:300, 520:640] = small[:, :120]
    elif kind == "huge":
        canvas = cv2.resize(face[40:440, 40:440], (640, 360))
    elif kind == "tiny":
        small = cv2.resize(face, (24, 24), interpolation=cv2.INTER_AREA)  # the face itself is about 10 px
        canvas[100:124, 300:324] = small
    elif kind == "fifty":
        small = cv2.resize(face, (64, 64), interpolation=cv2.INTER_AREA)
        for i in range(50):
            y, x = divmod(i, 10)
            canvas[y * 72:y * 72 + 64, x * 64:x * 64 + 64] = small
    elif kind == "rotated":
        canvas[60:300, 200:440] = np.rot90(cv2.resize(face, (240, 240)))
    elif kind == "statue":  # the face in pale stone: no colour, flattened contrast, a sandstone tint
        grey = cv2.cvtColor(cv2.resize(face, (240, 240)), cv2.COLOR_RGB2GRAY).astype(np.float32)
        stone = (grey - grey.mean()) * 0.6 + 150
        canvas[60:300, 200:440] = np.clip(stone[..., None] * np.array([1.0, 0.95, 0.85]), 0, 255).astype(np.uint8)
    elif kind == "cartoon":  # a drawn face: a disc, two eyes, a nose, a smile
        cv2.circle(canvas, (320, 180), 110, (250, 205, 160), -1)
        for x in (280, 360):
            cv2.ellipse(canvas, (x, 155), (16, 22), 0, 0, 360, (255, 255, 255), -1)
            cv2.circle(canvas, (x, 160), 9, (30, 30, 30), -1)
        cv2.line(canvas, (320, 175), (312, 205), (150, 100, 80), 3)
        cv2.ellipse(canvas, (320, 215), (45, 25), 0, 10, 170, (140, 40, 40), 5)
    return canvas


@pytest.mark.parametrize("kind", ["half out of frame", "huge", "tiny", "fifty", "rotated", "statue", "cartoon"])
def test_awkward_faces_never_crash_or_make_ghosts(make_video: object, tmp_path: Path, kind: str) -> None:
    """A face half out of the frame, one filling it, a 10 px one, fifty at once (capped: the largest first), one
    lying on its side, a stone statue's, a cartoon's (each may be tracked as one face, never as more): tracking
    and a warp render run through, no frame holds more faces than are there (or than the cap), and the picture
    outside the faces is left as it was."""
    from stream.casts.cast import hopper_cast
    from stream.render.pipeline import render

    photo = read_image(media("images/face_recognition_obama-480p.jpg"))
    (found,) = BlazeFace().detect_rgb(photo)
    cx, cy = (int(v) for v in found.box.center)
    half = int(found.box.width)  # a square of twice the face box: the face and some hair and neck
    portrait = photo[max(cy - half, 0):cy + half, max(cx - half, 0):cx + half]
    frame = _scene(kind, portrait)
    clip = make_video(f"{kind.replace(' ', '_')}.mp4", [frame] * 6)  # type: ignore[operator]
    options = RenderOptions(detector="mediapipe", max_faces=8)
    tracks = run_tracking(clip, options)
    most = {"half out of frame": 1, "huge": 1, "tiny": 1, "fifty": 8, "rotated": 1, "statue": 1, "cartoon": 1}[kind]
    per = _faces_per_frame(tracks)
    assert max((len(v) for v in per.values()), default=0) <= most
    if kind == "fifty":
        assert max(len(v) for v in per.values()) == 8  # the cap, not fewer: the faces are all there
    touched, keep = capture_rendered()
    report = render(clip, tmp_path / "out.mp4", WarpRecaster([hopper_cast()]), options, on_rendered=keep)
    assert report.frames == 6 and report.faces_failed == 0
    # the picture outside the recast faces and the badge is the source's, up to the encoder's noise and the invisible
    # mark (up to 5 levels where the picture is busy: fifty faces, 33.8 dB)
    for index, (before, after) in enumerate(zip(decode_all(clip), decode_all(tmp_path / "out.mp4"), strict=True)):
        outside = touched[index] == 0
        assert outside.mean() > 0.3 and psnr(after, before, outside) > 31, (kind, index)


def _sliding_face(speed: int, frames: int = 14, hidden: range = range(0)) -> list[Frame]:
    """d20's talking head at 0.45 of its size (a face about 88 px wide) sliding across a blurred hamilton frame at
    `speed` px a frame; on the `hidden` frames a passer-by's dark coat covers it (180 px wide, the frame's height)."""
    with MediaSource(media("videos/liveportrait_d20.mp4"), keep_audio=False) as source:
        faces = [f.image for f in itertools.islice(source.frames(), frames)]
    background = cv2.GaussianBlur(_frames(HAMILTON, {230})[230], (0, 0), 3)
    out = []
    for i, face in enumerate(faces):
        small = cv2.resize(face, None, fx=0.45, fy=0.45, interpolation=cv2.INTER_AREA)
        y, x = (background.shape[0] - small.shape[0]) // 2, 10 + i * speed
        if x + small.shape[1] > background.shape[1]:
            break
        image = background.copy()
        image[y:y + small.shape[0], x:x + small.shape[1]] = small
        if i in hidden:
            middle = x + small.shape[1] // 2
            image[:, max(0, middle - 90):middle + 90] = (40, 45, 60)
        out.append(Frame(i, i * 3000, Fraction(1, 90000), image))
    return out


def _live_faces(frames: list[Frame]) -> list[FaceState]:
    stage = LiveFaceStage(make_tracker(RenderOptions()), 2)
    ready = [*itertools.chain.from_iterable(stage.push(frame) for frame in frames), *stage.flush()]
    return [face for _, faces, _ in ready for face in faces]


def test_a_face_that_moves_a_third_of_its_width_a_frame_keeps_its_id() -> None:
    """The mesh tracker looks for a moving face where it is going (its velocity, averaged, beyond a dead zone of
    0.05 of its size a frame, so a still face is looked for exactly where it was). Goal: a face moving a third of
    its width a frame keeps one id. Measured: one id up to 40 px a frame (0.46 of its 87 px), 3-4 ids at 30 px
    without the prediction."""
    frames = _sliding_face(36)
    found = _live_faces(frames)
    width = float(np.median([f.box.width for f in found]))
    assert width / 3 <= 36, width  # the face moves at least a third of its width a frame
    assert len(found) >= len(frames) - 1 and {f.track_id for f in found} == {found[0].track_id}, \
        [(f.index, f.track_id) for f in found]


def test_a_face_hidden_by_a_passer_by_for_most_of_a_second_comes_back_with_its_id() -> None:
    """A walking face (4 px a frame) covered for 25 frames (0.83 s at 30 fps): a lost face keeps its id for 30
    frames and is looked for where its velocity has taken it, so it comes back as itself (measured: one id with 8,
    15 and 25 frames hidden at 4, 8 and 12 px a frame; a second id after 10 hidden frames before)."""
    frames = _sliding_face(4, frames=60, hidden=range(10, 35))
    found = _live_faces(frames)
    seen = {f.index for f in found}
    # hidden: kept 3 frames at most while its mesh still fits (the renderer fades it by its presence), then lost
    assert not seen & set(range(13, 35))
    # found again at the next detection round after it comes out (measured: from frame 43 on)
    assert len(seen & set(range(35, 60))) >= 15
    assert {f.track_id for f in found} == {found[0].track_id}, [(f.index, f.track_id) for f in found]


def _crossing(speed: int, frames: int = 60) -> list[Frame]:
    """d20's head (0.45 of its size, in front) walking right and d0's (0.4, behind) walking left, crossing."""
    def heads(name: str, scale: float) -> list[np.ndarray]:
        with MediaSource(media(f"videos/{name}.mp4"), keep_audio=False) as source:
            return [cv2.resize(f.image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                    for f in itertools.islice(source.frames(), frames)]

    background = cv2.GaussianBlur(_frames(HAMILTON, {230})[230], (0, 0), 3)
    width = background.shape[1]
    out = []
    for i, (front, back) in enumerate(zip(heads("liveportrait_d20", 0.45), heads("liveportrait_d0", 0.4),
                                          strict=False)):
        x_front, x_back = 20 + i * speed, width - back.shape[1] - 20 - i * speed
        if x_front + front.shape[1] > width or x_back < 0:
            break
        image = background.copy()
        image[90:90 + back.shape[0], x_back:x_back + back.shape[1]] = back
        image[60:60 + front.shape[0], x_front:x_front + front.shape[1]] = front
        out.append(Frame(i, i * 3000, Fraction(1, 90000), image))
    return out


def test_two_faces_that_cross_never_swap_ids() -> None:
    """Two heads crossing at 8 px a frame, one passing in front of the other: the tracks converge on the face in
    front, and it stays with the track whose motion foresaw it, so no id ever moves from one person to the other;
    the one behind is lost while covered and revived when it comes out, off its course but alike in its colours.
    Measured: two ids, one a person (keeping the older id handed the one in front the other's id; without the
    colours the one behind came out under a third id)."""
    frames = _crossing(8)
    found = _live_faces(frames)
    paths: dict[int, list[tuple[int, float]]] = collections.defaultdict(list)
    for face in sorted(found, key=lambda f: f.index):
        paths[face.track_id].append((face.index, face.box.center[0]))
    for track_id, path in paths.items():  # each id moves one way only: it never jumps to the other person
        steps = np.diff([x for _, x in path])
        assert (steps > -3).all() or (steps < 3).all(), (track_id, path)
    assert len(paths) == 2, {t: (p[0], p[-1]) for t, p in paths.items()}
    front = [t for t, path in paths.items() if path[-1][1] > path[0][1] + 100]
    assert len(front) == 1 and len(paths[front[0]]) >= 0.95 * len(frames)


@pytest.mark.parametrize("seed", [None, 3])
def test_a_crowd_of_walkers_keeps_about_one_id_a_person(seed: int | None) -> None:
    """benchmarks/crowd_ids.py: five talking heads walk across a blurred hamilton frame at 2-25 px a frame, in both
    directions, crossing, one crossed by the fastest and then hidden by a passer-by for 25 frames. Measured: 1.20
    ids per person (the walker behind the passer-by back under its own id; 1.40 when only its motion read before
    the loss, 8.5-12 px a frame against its 6, could revive it), one id on a second person for one frame where two
    cross, each walker found in 90 % of its visible frames and more; the same with every pixel moved by one level
    (13 seeds). The bounds: 1.2 ids per person, one swap, 85 % found."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import crowd_ids

    frames, truth = crowd_ids.crowd(90)
    if seed is not None:
        rng = np.random.default_rng(seed)
        for frame in frames:
            noise = rng.integers(-1, 2, frame.image.shape, dtype=np.int16)
            frame.image[...] = np.clip(frame.image + noise, 0, 255).astype(np.uint8)
    result = crowd_ids.score(frames, truth)
    assert result["people"] == 5 and result["ids_per_person"] <= 1.2 + 1e-9, result
    assert result["swaps"] <= 1, result
    for walker in result["walkers"]:
        assert walker["found"] >= 0.85 * walker["visible"], walker
