"""Align, paste back, recasters and the render path on real clips: fidelity, provenance, failures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from stream.casts.cast import Cast, CastError, cast_from_file, hopper_cast, read_image
from stream.look.align import alignment, crop
from stream.look.masks import face_mask
from stream.look.paste import paste_back
from stream.media.provenance import draw_badge
from stream.media.sources import MediaSource, probe
from stream.media.watermark import Watermark, strength_map
from stream.perception.face_stage import LiveFaceStage
from stream.perception.geometry import to_gray
from stream.perception.hog import FaceDetector, LandmarkPredictor
from stream.perception.smoothing import quad_params
from stream.recasters.contract import FaceCrop, IdentityRecaster, Recaster
from stream.recasters.warp import WarpRecaster
from stream.render.options import RenderOptions
from stream.render.pipeline import make_tracker, render
from stream.render.renderer import FaceRenderer, mark_payload
from tests.conftest import HAMILTON, capture_rendered, decode_all, media, psnr, s42_warp, still_video, x264_settings

D20 = "videos/liveportrait_d20.mp4"


def test_paste_back_changes_nothing_outside_the_mask() -> None:
    img = read_image(media("images/face_recognition_obama-480p.jpg"))
    gray = to_gray(img)
    lm = LandmarkPredictor().predict(gray, FaceDetector().detect(gray)[0])
    align = alignment(quad_params(lm), 256)
    mask = face_mask(align.points_to_crop(lm.astype(np.float64)), 256)
    before = img.copy()
    region = paste_back(img, np.zeros((256, 256, 3), np.uint8), mask, align)
    assert region is not None
    weight = np.zeros(img.shape[:2], np.float32)
    region.add_to(weight)
    changed = np.any(img != before, axis=2)
    assert changed.sum() > 1000
    assert not changed[weight == 0].any(), "a pixel outside the mask changed"
    # the mask covers the face and nothing else: inside the jaw/brow hull, away from the frame corners
    assert weight[int(lm[30, 1]), int(lm[30, 0])] > 0.9  # nose tip
    assert weight[:50].max() == 0 and weight[:, :100].max() == 0


def test_identity_round_trip_fidelity(tmp_path: Path) -> None:
    out = tmp_path / "identity.mp4"
    report = render(media(D20), out, IdentityRecaster(), RenderOptions())
    assert report.faces_recast == report.frames == 175
    src, got = decode_all(media(D20)), decode_all(out)
    assert len(got) == len(src)
    scores = [psnr(a, b) for a, b in zip(src, got, strict=True)]
    # crop + paste back at the face's own resolution costs no more than the encoder does
    assert min(scores) > 36 and np.mean(scores) > 38
    assert probe(out)["metadata"]["recast_engine"] == "identity"
    assert "deadzone=21,11" in x264_settings(out)  # a clean source: x264's default tuning (stream/media/grain.py)


@pytest.mark.parametrize("mode", ["offline", "live"])
def test_warp_changes_faces_and_nothing_else(tmp_path: Path, mode: str) -> None:
    out = tmp_path / f"warp-{mode}.mp4"
    touched, on_touched = capture_rendered()
    strengths: dict[int, np.ndarray] = {}  # how strong the renderer made the mark: its picture's busyness, faces spared

    def on_rendered(frame: Any, image: np.ndarray, rendered: Any) -> None:
        on_touched(frame, image, rendered)
        strengths[frame.index] = strength_map(image, [(r.x0, r.y0, r.alpha) for r in rendered.regions])

    recaster = WarpRecaster([hopper_cast()])
    report = render(media(D20), out, recaster, RenderOptions(mode=mode), on_rendered=on_rendered)
    assert report.frames == 175 and report.faces_recast >= 170 and report.faces_failed == 0
    src, got = decode_all(media(D20)), decode_all(out)
    mark = Watermark(mark_payload(recaster, out.name))
    outside, inside, unmarked = [], [], []
    for index in range(0, 175, 5):
        weight = touched[index]
        # a margin of a few pixels for the encoder's block edges around the mask
        near = cv2.dilate((weight > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        expected = src[index].copy()
        mark.embed(expected, index, (), strengths[index])  # the invisible mark is on every recast frame
        outside.append(psnr(expected, got[index], ~near))
        unmarked.append(psnr(src[index], got[index], ~near))
        inside.append(psnr(src[index], got[index], weight > 0.9))
    assert np.mean(outside) > 40, "recast changes faces (and adds the mark), nothing else"
    assert np.mean(outside) > np.mean(unmarked) + 1.0, "the mark is the change outside the face"
    assert np.mean(inside) < 22, "the face is visibly different"
    meta = probe(out)["metadata"]
    assert meta["recast"] == "1" and meta["recast_engine"] == "warp" and "hopper" in meta["recast_casts"]
    assert probe(out)["audio_codec"] == "aac"


@pytest.mark.parametrize("rotation", [90, 270])
def test_rotated_clip_is_tracked_upright_and_keeps_its_rotation(tmp_path: Path, make_video: Callable[..., Path],
                                                               rotation: int) -> None:
    """A phone clip stores its pixels sideways and a display matrix that turns them upright. Faces are found on
    the upright picture (HOG finds no face lying on its side), and the output keeps the stored layout and the
    matrix, so players show it as they showed the source."""
    upright_photo = read_image(media("images/face_recognition_obama-480p.jpg"))[:, :480]
    stored = [np.ascontiguousarray(np.rot90(f, -rotation // 90)) for f in still_video(upright_photo, 8, 0.5)]
    clip = make_video(f"rot{rotation}.mp4", stored, rotation=rotation)
    out = tmp_path / f"rot{rotation}-out.mp4"
    touched, on_rendered = capture_rendered()
    report = render(clip, out, WarpRecaster([hopper_cast()]), RenderOptions(), on_rendered=on_rendered)
    assert report.faces_recast == 8 and report.tracks == 1
    facts = probe(out)
    assert facts["rotation"] == rotation
    assert (facts["width"], facts["height"]) == (stored[0].shape[1], stored[0].shape[0])
    got = decode_all(out)  # stored pixels, as the source stored them
    weight = np.rot90(touched[4], -rotation // 90)  # the face, in the stored layout
    assert psnr(stored[4], got[4], weight > 0.9) < 22, "the face is recast where it lies in the stored pixels"
    near = cv2.dilate((weight > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert psnr(stored[4], got[4], ~near) > 32, "and nothing else moved (through two lossy encodes)"


def test_badge_marks_recast_frames() -> None:
    img = np.full((360, 640, 3), 200, np.uint8)
    box = draw_badge(img)
    assert box.x1 <= 640 and box.y1 <= 360 and box.x0 > 320 and box.y0 > 180
    assert (img[box.y0:box.y1, box.x0:box.x1] != 200).mean() > 0.5
    assert (img[: box.y0] == 200).all()


def test_several_faces_get_different_casts(tmp_path: Path, make_video: Callable[..., Path]) -> None:
    photo = read_image(media("images/face_recognition_two_people.jpg"))[:660, :1126]
    clip = make_video("two.mp4", still_video(photo, 12, jitter_px=0.5))
    casts = [hopper_cast(), cast_from_file(media("images/liveportrait_s12.jpg"))]
    recaster = WarpRecaster(casts)
    report = render(clip, tmp_path / "two-out.mp4", recaster, RenderOptions(detect_width=0))
    assert report.tracks == 2 and report.faces_recast == 24
    assert {recaster.cast_for(1), recaster.cast_for(2)} == {"hopper", "liveportrait_s12"}


def test_cast_without_a_face_is_refused() -> None:
    blank = Cast("blank", "synthetic", "test", np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(CastError, match="no face"):
        WarpRecaster([blank])


class _Broken(Recaster):
    name = "broken"

    def recast(self, face: FaceCrop) -> tuple[np.ndarray, np.ndarray]:
        raise RuntimeError("boom")


def test_failing_recaster_passes_faces_through(tmp_path: Path) -> None:
    out = tmp_path / "broken.mp4"
    report = render(media("videos/liveportrait_d0.mp4"), out, _Broken(), RenderOptions(mode="live"))
    assert report.frames == 78 and report.faces_failed == 78 and report.faces_recast == 0
    src, got = decode_all(media("videos/liveportrait_d0.mp4")), decode_all(out)
    assert np.mean([psnr(a, b) for a, b in zip(src, got, strict=True)]) > 40


def test_warp_follows_the_mouth() -> None:
    """The cast's mouth opens with the actor's: the warped mouth region tracks the actor's lip gap."""
    img = read_image(media("images/liveportrait_s42.jpg"))
    gray = to_gray(img)
    lm = LandmarkPredictor().predict(gray, FaceDetector().detect(gray)[0]).astype(np.float64)
    align = alignment(quad_params(lm), 256)
    crop_lm = align.points_to_crop(lm)
    recaster = WarpRecaster([hopper_cast()], color=False)
    closed, _ = recaster.recast(FaceCrop(1, crop(img, align), crop_lm))
    opened_lm = crop_lm.copy()
    opened_lm[[55, 56, 57, 58, 59, 65, 66, 67]] += [0, 25]  # drop the lower lip
    opened, _ = recaster.recast(FaceCrop(1, crop(img, align), opened_lm))
    y0, y1 = int(crop_lm[51, 1]), int(crop_lm[57, 1] + 25)
    x0, x1 = int(crop_lm[48, 0]), int(crop_lm[54, 0])
    assert np.abs(opened[y0:y1, x0:x1].astype(int) - closed[y0:y1, x0:x1]).mean() > 10
    # far from the mouth, the face does not move
    assert np.abs(opened[:int(crop_lm[27, 1])].astype(int) - closed[:int(crop_lm[27, 1])]).mean() < 1


@pytest.fixture(scope="module")
def d20_opening() -> list[tuple[Any, list[Any]]]:
    """d20's first 30 frames with their faces, tracked live: the clip repeats a frame now and then (3, 7, 11, 16,
    24 and 28 change the face by under half a grey level on average, the frames around them by 2 and more)."""
    options = RenderOptions(mode="live")
    stage = LiveFaceStage(make_tracker(options), options.lookahead)
    out = []
    with MediaSource(media(D20), keep_audio=False) as source:
        for frame in source.frames():
            if frame.index >= 30:
                break
            out.extend((ready, faces) for ready, faces, _ in stage.push(frame))
        out.extend((ready, faces) for ready, faces, _ in stage.flush())
    return out


def _face_change(a: np.ndarray, b: np.ndarray, inside: np.ndarray, where: tuple[slice, slice]) -> float:
    return float(np.abs(a[where].astype(np.int16) - b[where])[inside].mean())


def test_a_repeated_frame_keeps_its_recast(d20_opening: list[tuple[Any, list[Any]]]) -> None:
    """On a frame that repeats the last one while the face moves, the recast is the one drawn on the frame before
    (not drawn again: the track's filters would still move it); every frame that moves is drawn."""
    cast = cast_from_file(media("images/liveportrait_s42.jpg"))
    rendered: dict[bool, list[np.ndarray]] = {}
    held_at: list[int] = []
    for hold in (True, False):
        renderer = FaceRenderer(WarpRecaster([cast]), badge=False, hold=hold)
        rendered[hold] = []
        for i, (frame, faces) in enumerate(d20_opening):
            image, before = frame.image.copy(), renderer.faces_held
            renderer.render(image, faces)
            rendered[hold].append(image)
            if renderer.faces_held > before:
                held_at.append(i)
        assert renderer.faces_recast == len(d20_opening)
    region = FaceRenderer(IdentityRecaster()).render(d20_opening[0][0].image.copy(), d20_opening[0][1]).regions[0]
    h, w = region.alpha.shape
    where, inside = (slice(region.y0, region.y0 + h), slice(region.x0, region.x0 + w)), region.alpha > 0.5
    source = [frame.image for frame, _ in d20_opening]
    step = [99.0] + [_face_change(source[i], source[i - 1], inside, where) for i in range(1, len(source))]
    repeats = [i for i, s in enumerate(step) if s < 0.5]
    assert 5 <= len(repeats) <= 7, repeats  # the clip's own; the test is about them
    # held: only repeats, and every repeat once three frames of motion are known
    assert set(held_at) <= set(repeats) and len(held_at) >= len(repeats) - 1, (held_at, repeats)
    for i in held_at:
        kept = _face_change(rendered[True][i], rendered[True][i - 1], inside, where)
        drawn = _face_change(rendered[False][i], rendered[False][i - 1], inside, where)
        assert kept < 0.2 and drawn > 1.0, (i, kept, drawn)  # drawn again it moved 1.5-3.5 levels here


def test_a_face_that_never_moves_and_a_new_choice_are_drawn(d20_opening: list[tuple[Any, list[Any]]]) -> None:
    """A face that has not been moving is drawn every frame (holding is for repeats amid motion), and after
    `drop_held` (a viewer's new cast or edit) a repeated frame is drawn too, with the new choice."""
    frame, faces = d20_opening[5]
    renderer = FaceRenderer(s42_warp(), badge=False)
    for _ in range(8):
        renderer.render(frame.image.copy(), faces)
    assert renderer.faces_held == 0 and renderer.faces_recast == 8
    first_repeat = 7
    for frame, faces in d20_opening[:first_repeat]:
        renderer.render(frame.image.copy(), faces)
    renderer.drop_held()
    renderer.render(d20_opening[first_repeat][0].image.copy(), d20_opening[first_repeat][1])
    assert renderer.faces_held == 0


@pytest.mark.parametrize("switch", [False, True])
def test_a_viewers_new_cast_is_drawn_on_a_repeated_frame(d20_opening: list[tuple[Any, list[Any]]],
                                                        switch: bool) -> None:
    """The service's frame worker forgets the held recasts when the viewer's choice changes: a repeated frame
    right after a new cast shows the new cast, not the old one held."""
    from stream.server.control import ControlState
    from stream.server.sessions import FrameProcessor

    one, other = cast_from_file(media("images/liveportrait_s42.jpg")), hopper_cast()
    state = ControlState(cast=one.cast_id)
    worker = FrameProcessor(WarpRecaster([one, other]), state, RenderOptions(mode="live"))
    for frame, faces in d20_opening[:7]:
        worker.render(frame, faces)
    if switch:
        state.cast = other.cast_id
    worker.render(*d20_opening[7])  # frame 7 repeats frame 6
    assert worker.painter.renderer.faces_held == (0 if switch else 1)


def test_the_faces_of_a_frame_are_drawn_side_by_side_as_they_would_be_one_by_one(
        hamilton_tracks: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hamilton audience (four faces and more a frame) drawn on the faces' threads gives the very picture it
    gives drawn on the renderer's own thread, one face after another: each face is drawn from the frame as it came
    and its track's state, then the faces are pasted in their order."""
    import threading

    from stream.render import renderer as module

    by_frame = hamilton_tracks.by_frame()
    frames = []
    with MediaSource(media(HAMILTON), keep_audio=False) as source:
        for frame in source.frames():
            if 230 <= frame.index < 236:
                frames.append((frame.image, by_frame.get(frame.index, [])))
    assert min(len(faces) for _, faces in frames) >= 3
    pictures = {}
    for cores in (1, 2):
        monkeypatch.setattr(module, "usable_cores", lambda cores=cores: cores)
        recaster = s42_warp()
        threads: set[str] = set()
        drawn = recaster.recast

        def recast(face: FaceCrop, drawn: Callable[..., Any] = drawn, threads: set[str] = threads) -> Any:
            threads.add(threading.current_thread().name)
            return drawn(face)

        monkeypatch.setattr(recaster, "recast", recast)
        renderer = FaceRenderer(recaster)
        pictures[cores] = [image.copy() for image, _ in frames]
        for picture, (_, faces) in zip(pictures[cores], frames, strict=True):
            renderer.render(picture, faces)
        assert all(name.startswith("recast-face") for name in threads) == (cores == 2), threads
    for one, other in zip(pictures[1], pictures[2], strict=True):
        assert np.array_equal(one, other)
    assert not np.array_equal(pictures[1][0], frames[0][0])  # the faces were recast


def test_a_face_prepared_ahead_is_drawn_as_one_cropped_when_drawn(d20_opening: list[tuple[Any, list[Any]]]) -> None:
    """The live pipeline prepares each face (its crop, what passes in front of it) in the tracking thread, ahead of
    the drawing: the picture is the one the renderer makes when it crops as it draws."""
    direct, ahead = FaceRenderer(s42_warp()), FaceRenderer(s42_warp())
    for frame, faces in d20_opening[:3]:  # no repeated frame among them
        one, other = frame.image.copy(), frame.image.copy()
        direct.render(one, faces)
        ahead.render(other, faces, prepared=ahead.prepare(other, faces))
        assert np.array_equal(one, other)
        assert not np.array_equal(one, frame.image)


def test_a_render_that_cannot_start_leaves_no_thread_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sink that cannot open (its folder is a file) and a live tracker whose models are missing: each is a
    clear error, and no decode or encode thread is left running."""
    import threading

    from engines.errors import InputError

    def ours() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("recast-")]

    before = ours()
    clip = media("videos/liveportrait_d20.mp4")
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(Exception):  # noqa: B017 (PyAV's own error for a path it cannot write)
        render(clip, tmp_path / "file" / "out.mp4", IdentityRecaster(), RenderOptions(mode="live", detector="hog"))
    assert ours() == before
    monkeypatch.setenv("RECAST_MEDIAPIPE", str(tmp_path / "no-models"))
    with pytest.raises(InputError, match="make install"):
        render(clip, tmp_path / "out.mp4", IdentityRecaster(), RenderOptions(mode="live"))
    assert ours() == before


def test_a_tracker_that_fails_mid_stream_fails_the_render_and_leaves_no_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Live tracking runs in its own thread: an error there reaches the caller as itself, and the tracking, decode
    and encode threads all end."""
    import threading

    from stream.perception.hog_tracker import FaceTracker

    def ours() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("recast-") and "face" not in t.name]

    before = ours()
    update = FaceTracker.update

    def failing(self: FaceTracker, index: int, *args: Any, **kwargs: Any) -> Any:
        if index == 5:
            raise RuntimeError("the tracker broke on frame 5")
        return update(self, index, *args, **kwargs)

    monkeypatch.setattr(FaceTracker, "update", failing)
    with pytest.raises(RuntimeError, match="frame 5"):
        render(media(D20), tmp_path / "out.mp4", IdentityRecaster(), RenderOptions(mode="live", detector="hog"))
    assert ours() == before
