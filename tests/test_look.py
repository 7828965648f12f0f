"""The look of a warp recast (docs/look.md): the pieces of stream/look/ and stream/casts/texture.py on their own,
the project's scorer against the team's (shared/tools/recast_score.py), and the scorer's figures on the shared
clips."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stream.casts.cast import cast_from_file
from stream.casts.preparation import prepare_cast
from stream.casts.texture import _lift_hair_shadow, clean_texture
from stream.cli.quality import Scorer, shimmer
from stream.look.blinks import EYES_READ_EVERY, eyes_to_read
from stream.look.colour import COLOR_REDRAW, apply_color, color_stats, colour_texture, lab_stats
from stream.look.detail import match_detail
from stream.look.features import features_mask
from stream.look.filters import OneEuro
from stream.look.finish import Finish
from stream.look.gaze import GAZE_FIND, _iris, cast_gaze
from stream.look.lids import EyeLids, TrackLids, close_lids
from stream.look.light import transfer_light
from stream.look.masks import polygon_mask
from stream.look.paste import crispness as grey_crispness
from stream.perception.stills import still_faces
from stream.recasters.contract import IdentityRecaster
from stream.recasters.warp import WarpRecaster
from stream.render.options import RenderOptions
from stream.render.pipeline import render
from tests.conftest import SHARED, media, s42_warp

CAST = media("images/liveportrait_s42.jpg")
SCORER = SHARED / "tools" / "recast_score.py"


def eye_landmarks(cx: float, cy: float, width: float) -> np.ndarray:
    """Six eye points in dlib's order (corner, two upper, corner, two lower) around (cx, cy)."""
    h = width * 0.35
    return np.array([[cx - width / 2, cy], [cx - width / 6, cy - h / 2], [cx + width / 6, cy - h / 2],
                     [cx + width / 2, cy], [cx + width / 6, cy + h / 2], [cx - width / 6, cy + h / 2]])


def eye_picture(size: int, landmarks: np.ndarray, iris_at: list[tuple[float, float]]) -> np.ndarray:
    """Skin, the white of each eye inside its opening, and a dark iris disc at each given place."""
    image = np.full((size, size, 3), (200, 160, 140), np.uint8)
    for eye, (x, y) in zip((landmarks[36:42], landmarks[42:48]), iris_at, strict=True):
        opening = polygon_mask(eye, size) > 0.5
        disc = np.zeros((size, size), np.uint8)
        cv2.circle(disc, (round(x), round(y)), round(0.2 * np.linalg.norm(eye[3] - eye[0])), 1, -1)
        image[opening] = (235, 235, 230)
        image[opening & (disc > 0)] = (60, 40, 30)
    return image


def test_the_cast_iris_moves_to_where_the_actor_looks() -> None:
    size, width = 200, 40.0
    landmarks = np.zeros((68, 2))
    landmarks[36:42], landmarks[42:48] = eye_landmarks(70, 100, width), eye_landmarks(130, 100, width)
    cast = eye_picture(size, landmarks, [(70, 100), (130, 100)])  # looks ahead
    actor = eye_picture(size, landmarks, [(80, 100), (140, 100)])  # looks to one side by a quarter eye width
    out = cast_gaze(cast, actor, landmarks)
    gray = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY).astype(np.float32)
    for eye, wanted in ((landmarks[36:42], 80.0), (landmarks[42:48], 140.0)):
        found = _iris(gray, polygon_mask(eye, size))
        assert found is not None and abs(found[0][0] - wanted) < 0.08 * width, (found, wanted)
    # an actor with closed eyes (a blink) leaves the cast's eyes alone
    closed = landmarks.copy()
    for eye in (slice(36, 42), slice(42, 48)):
        centre = closed[eye].mean(axis=0)
        closed[eye, 1] = centre[1] + (closed[eye, 1] - centre[1]) * 0.1
    assert np.array_equal(cast_gaze(cast, actor, closed), cast)
    # an iris found a pixel or two aside (within what each eye's lashes and glints move the measure) moves nothing
    ahead = eye_picture(size, landmarks, [(71.5, 100), (128.5, 100)])
    assert np.array_equal(cast_gaze(cast, ahead, landmarks), cast)


def test_where_the_iris_was_lifted_from_is_white_with_no_grey_crescent() -> None:
    """Once the cast's iris moves far, its old place is filled with the eye's white. The median of the white's
    brighter half was a dull grey against the shaded white of a real eye (d0 looking aside), and the iris's dark
    rim, just outside the disc lifted, stayed as a grey crescent along the lower lid. Measured here: the filled
    place's darkest pixel 167 and mean 208 against the white's median 200 (127 and 187 before)."""
    size, width = 200, 40.0
    landmarks = np.zeros((68, 2))
    landmarks[36:42], landmarks[42:48] = eye_landmarks(70, 100, width), eye_landmarks(130, 100, width)
    cast = eye_picture(size, landmarks, [(70, 100), (130, 100)])
    yy, xx = np.mgrid[0:size, 0:size]
    for eye, cx in ((landmarks[36:42], 70), (landmarks[42:48], 130)):
        opening = polygon_mask(eye, size) > 0.5
        top, bottom = eye[:, 1].min(), eye[:, 1].max()
        shade = 185 + 55 * np.clip((yy - top) / (bottom - top), 0, 1)  # the upper lid's shade on the white
        r = np.hypot(xx - cx, yy - 100)
        white = opening & (r > 0.28 * width)
        cast[white] = np.stack([shade, shade, shade - 5], -1)[white].astype(np.uint8)
        cast[opening & (r > 0.2 * width) & (r <= 0.28 * width)] = (110, 95, 90)  # the iris's dark rim
    actor = eye_picture(size, landmarks, [(82, 100), (142, 100)])  # looks aside by 0.3 of the eye's width
    gray = cv2.cvtColor(cast_gaze(cast, actor, landmarks), cv2.COLOR_RGB2GRAY).astype(np.float32)
    opening = polygon_mask(landmarks[36:42], size) > 0.7
    old_place = opening & (np.hypot(xx - 70, yy - 100) < 0.28 * width) & (xx < 66)
    visible = opening & (np.hypot(xx - 70, yy - 100) > 0.3 * width)
    assert gray[old_place].min() > 150, gray[old_place].min()
    assert gray[old_place].mean() > np.median(gray[visible]), (gray[old_place].mean(), np.median(gray[visible]))


def test_the_cast_iris_sits_as_far_along_its_eye_as_the_actors_along_his_visible_one() -> None:
    """The actor's visible eye is narrower than the corners the cast's eye is drawn between (the mesh's lie outside
    it on some faces): his iris 0.15 of the corners' width aside, in an eye that is 0.8 of them wide and centred
    0.05 of them to the other side, lies (0.15 + 0.05) / 0.8 = 0.25 of his eye aside, and the cast's goes as far
    along its own (0.15 without the spans), as far as the cast's eye is drawn from corner to corner."""
    size, width = 200, 40.0
    landmarks = np.zeros((68, 2))
    landmarks[36:42], landmarks[42:48] = eye_landmarks(70, 100, width), eye_landmarks(130, 100, width)
    cast = eye_picture(size, landmarks, [(70, 100), (130, 100)])
    actor = eye_picture(size, landmarks, [(64, 100), (124, 100)])
    spans = np.array([[0.05, 0.8], [0.05, 0.8]])
    whole = np.array([[0.0, 1.0], [0.0, 1.0]])  # the cast's eyes drawn from corner to corner
    gray = cv2.cvtColor(cast_gaze(cast, actor, landmarks, spans=spans, cast_spans=whole),
                        cv2.COLOR_RGB2GRAY).astype(np.float32)
    for eye, middle in ((landmarks[36:42], 70.0), (landmarks[42:48], 130.0)):
        found = _iris(gray, polygon_mask(eye, size), GAZE_FIND * width)
        wanted = middle - 0.25 * width
        assert found is not None and abs(found[0][0] - wanted) < 0.05 * width, (found, wanted)
    # the same bias in the cast's eyes (its mesh's corners as far outside them) cancels: the iris goes where his is
    gray = cv2.cvtColor(cast_gaze(cast, actor, landmarks, spans=spans, cast_spans=spans),
                        cv2.COLOR_RGB2GRAY).astype(np.float32)
    found = _iris(gray, polygon_mask(landmarks[36:42], size), GAZE_FIND * width)
    assert found is not None and abs(found[0][0] - 64.0) < 0.05 * width, found
    # an eye whose span is unread (nan) is placed as before, where the actor's iris is
    unread = np.full((2, 2), np.nan)
    assert np.array_equal(cast_gaze(cast, actor, landmarks, spans=unread, cast_spans=whole),
                          cast_gaze(cast, actor, landmarks))


def test_an_iris_in_the_eyes_corner_is_found_there_past_its_lashes() -> None:
    """An actor looking hard to one side: the iris sits in the eye's corner, half under the lids, and a dark line of
    lashes runs along the upper lid. The darkest disc of the opening is the iris; the darkness of the whole
    opening put it a third of the way back to the middle, and the cast's iris followed only that far."""
    size, width = 200, 40.0
    landmarks = np.zeros((68, 2))
    landmarks[36:42], landmarks[42:48] = eye_landmarks(70, 100, width), eye_landmarks(130, 100, width)
    image = eye_picture(size, landmarks, [(70 + 0.3 * width, 100), (130 - 0.3 * width, 100)])
    for eye in (landmarks[36:42], landmarks[42:48]):
        cv2.polylines(image, [np.round(eye[0:4]).astype(np.int32)], False, (50, 35, 30), 2)  # the lashes
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    for eye, wanted in ((landmarks[36:42], 70 + 0.3 * width), (landmarks[42:48], 130 - 0.3 * width)):
        found = _iris(gray, polygon_mask(eye, size), GAZE_FIND * width)
        assert found is not None and abs(found[0][0] - wanted) < 0.06 * width, (found, wanted)
        whole = _iris(gray, polygon_mask(eye, size))  # the weighted centre of all the opening's darkness
        assert whole is not None and abs(whole[0][0] - wanted) > 0.1 * width


def face_layout() -> np.ndarray:
    """The 68 points of a 256 px face: the jaw from ear to ear, eyes, brows, nose and lips."""
    landmarks = np.zeros((68, 2))
    arc = np.linspace(np.pi, 0, 17)
    landmarks[0:17] = np.column_stack([128 + 72 * np.cos(arc), 105 + 120 * np.sin(arc)])
    landmarks[36:42], landmarks[42:48] = eye_landmarks(96, 110, 36), eye_landmarks(160, 110, 36)
    landmarks[17:27] = np.column_stack([np.linspace(70, 186, 10), np.full(10, 92)])
    landmarks[27:36] = np.column_stack([np.full(9, 128), np.linspace(110, 150, 9)])
    turn = np.linspace(0, 6.2, 20)
    landmarks[48:68] = np.column_stack([128 + 24 * np.cos(turn), 180 + 8 * np.sin(turn)])
    return landmarks


def iris_across(image: np.ndarray, eye: np.ndarray) -> float | None:
    """Where an eye's iris is across its opening: its centre's distance from the opening's middle in eye widths."""
    width = float(np.linalg.norm(eye[3] - eye[0]))
    x0, y0 = np.maximum(np.floor(eye.min(axis=0) - width / 2).astype(int), 0)
    x1, y1 = np.ceil(eye.max(axis=0) + width / 2).astype(int) + 1
    gray = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY).astype(np.float32)
    found = _iris(gray, polygon_mask(eye - (x0, y0), (y1 - y0, x1 - x0)), GAZE_FIND * width)
    return None if found is None else float((found[0][0] + x0 - (eye[0][0] + eye[3][0]) / 2) / width)


@pytest.mark.slow
def test_the_recast_looks_where_the_actor_looks(tmp_path: Path) -> None:
    """d0's actor looks hard to each side: the cast's irises follow into the corners of the eyes. Measured on the
    rendered frames: the actor's iris across his visible eye (dlib's points on the source, the
    judge's), and the recast's across the cast's visible eye, which lies where the cast's portrait has it between
    the corners it is drawn at (the actor's mesh's; the recaster's `_cast_spans`, read once on the portrait)."""
    from stream.cli.quality import Scorer
    from stream.perception.mesh import MeshLandmarker

    source = media("videos/liveportrait_d0.mp4")
    out = tmp_path / "d0.mp4"
    recaster = s42_warp()
    render(source, out, recaster, RenderOptions())
    (cast_spans,) = recaster._cast_spans.values()
    assert cast_spans is not None
    faces, dlib = MeshLandmarker(), Scorer()
    apart, disagree = [], []
    with av.open(str(source)) as a, av.open(str(out)) as b:
        for i, (theirs, ours) in enumerate(zip(a.decode(video=0), b.decode(video=0), strict=False)):
            if i % 3:
                continue
            actor, recast = theirs.to_ndarray(format="rgb24"), ours.to_ndarray(format="rgb24")
            found, boxes = faces.faces(actor), dlib.hog(actor, 1)
            if len(found) != 1 or len(boxes) != 1:
                continue
            visible = np.array([[p.x, p.y] for p in dlib.shapes(actor, boxes[0]).parts()], dtype=np.float64)
            follows = []
            for side, e in enumerate((36, 42)):
                looks, drawn = iris_across(actor, visible[e:e + 6]), iris_across(recast, found[0][1][e:e + 6])
                if looks is None or drawn is None:
                    continue
                follow = (drawn - cast_spans[side][0]) / cast_spans[side][1]
                follows.append(follow)
                if abs(looks) > 0.15:
                    apart.append(abs(looks - follow))
            if len(follows) == 2:
                disagree.append(abs(follows[0] - follows[1]))
    assert len(apart) >= 10, len(apart)
    # measured 0.037 of the eye's width (0.063 with the irises placed where the actor's are in his mesh's eye,
    # whose corners lie outside his visible ones, unevenly); the two eyes' irises 0.056 apart (0.045)
    assert float(np.median(apart)) < 0.05, np.round(apart, 3)
    assert float(np.median(disagree)) < 0.1, np.round(disagree, 3)


def frames_of(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    with av.open(str(path)) as clip:
        out = {}
        for i, frame in enumerate(clip.decode(video=0)):
            if i in wanted:
                out[i] = frame.to_ndarray(format="rgb24")
            if i >= max(wanted):
                return out
    return out


def test_the_iris_model_reads_a_blink_the_mesh_barely_follows() -> None:
    """s18's actor lowers her lids at frames 7-12 (to 0.44 of their opening, as dlib reads them). MediaPipe's iris
    model reads each eye at a third of its opening there (measured 0.31-0.38); the mesh's lids close only to about
    0.8 of theirs."""
    from stream.perception.mesh import EyeOpenings, MeshLandmarker

    frames = frames_of(media("videos/liveportrait_s18.mp4"), {0, 10})
    faces, eyes = MeshLandmarker(), EyeOpenings()
    opening, spans = {}, {}
    for i, image in frames.items():
        (_, landmarks), = faces.faces(image)
        reading = eyes(image, landmarks)
        opening[i], spans[i] = reading.openings, reading.spans
    assert np.all((opening[0] > 0.15) & (opening[0] < 0.5)), opening
    assert np.all(opening[10] < 0.5 * opening[0]), opening
    # each eye's visible span lies within a tenth of the mesh's corners' width of their middle, 0.75-1.05 as wide
    assert np.all(np.abs(spans[0][:, 0]) < 0.1) and np.all((spans[0][:, 1] > 0.75) & (spans[0][:, 1] < 1.05)), spans
    unread = eyes(frames[0], np.zeros((68, 2)))  # an eye without width is not read
    assert np.isnan(unread.openings).all() and np.isnan(unread.spans).all()


def test_the_lids_close_as_far_as_the_actors_eye_and_stay_still_when_it_is_open() -> None:
    """The warp's upper lid goes the share of its open height that the actor's eye is open, each measured against
    the track's own open eye; within the measure's noise near the open eye it does not move at all."""
    lower = np.array([[10.0, 20.0], [20.0, 20.0]])
    upper = np.array([[10.0, 12.0], [20.0, 12.0]])  # 8 px open over a width of 20: 0.4
    eye = EyeLids()
    for _ in range(10):  # the actor's eye open (0.3 as the iris model reads it), with its measuring noise
        assert np.array_equal(close_lids(upper, lower, 20.0, 0.3, eye), upper)
        assert np.array_equal(close_lids(upper, lower, 20.0, 0.28, eye), upper)
    half = close_lids(upper, lower, 20.0, 0.15, eye)
    assert np.allclose(half[:, 1], 16.0, atol=0.5), half  # half the open height, from the lower lid
    assert np.allclose(half[:, 0], upper[:, 0])  # straight down onto the lower lid's points
    shut = close_lids(upper, lower, 20.0, 0.0, eye)
    assert np.allclose(shut, lower, atol=1e-6)
    # lids the mesh already holds lower than the actor's eye are left there; an unread eye moves nothing
    low = np.array([[10.0, 18.0], [20.0, 18.0]])
    assert np.array_equal(close_lids(low, lower, 20.0, 0.28, eye), low)
    assert np.array_equal(close_lids(upper, lower, 20.0, float("nan"), eye), upper)


@pytest.mark.parametrize("size", [200, 384])
def test_a_lowered_lid_covers_the_eye_instead_of_pressing_it_flat(size: int) -> None:
    """A region beneath a moving edge (the eye beneath its upper lid): with the edge lowered half way, the region's
    lower half shows unpressed and the lid covers the rest; lowered all the way, none of it shows, also where the
    maps are made at every other pixel and scaled up (a 384 px crop), along the jump at the lid's edge."""
    from stream.look.piecewise import PiecewiseAffine

    n = 384
    ring = np.array([[120, 200], [160, 180], [200, 180], [240, 200], [200, 220], [160, 220]], dtype=np.float64)
    above = np.array([[120, 150], [160, 140], [200, 140], [240, 150]], dtype=np.float64)
    below = np.array([[160, 260], [200, 260]], dtype=np.float64)
    points = np.concatenate([ring, above, below])
    texture = np.full((n, n, 3), (200, 160, 140), np.uint8)
    eye = polygon_mask(ring, n) > 0.5
    texture[eye] = (255, 0, 0)
    for y in range(200, 221):  # the eye's lower half a different colour: pressed flat it would not stay so
        texture[y][eye[y]] = (0, 0, 255)
    warp = PiecewiseAffine(points, n, under=[(range(6), [1, 2])])
    scale = size / n
    dst = points * scale
    for share in (0.5, 0.0):
        moved = dst.copy()
        moved[[1, 2]] = dst[[5, 4]] + (dst[[1, 2]] - dst[[5, 4]]) * share
        out = warp.warp(texture, moved, size, under_points=dst[[1, 2]]).astype(int)
        red = (out[..., 0] > 200) & (out[..., 1] < 60) & (out[..., 2] < 60)
        blue = (out[..., 2] > 200) & (out[..., 0] < 60) & (out[..., 1] < 60)
        eye_area, line = float(eye.sum()) * scale ** 2, 2.5 * 120 * scale  # a line 2.5 px thick along the lid
        assert red.sum() < line, (share, red.sum(), line)  # the eye's upper half lies under the lid
        if share == 0.5:
            assert abs(blue.sum() - eye_area / 2) < 0.12 * eye_area, (blue.sum(), eye_area)
        else:
            assert blue.sum() < line, (blue.sum(), line)


def test_the_eyes_are_read_where_they_may_blink_and_now_and_then_besides() -> None:
    """The iris model costs 3 ms a face. It reads a track's eyes every EYES_READ_EVERY frames while the 68 points'
    eyes stay open, and on every frame where either closes under EYES_READ_UNDER of its open state (the mesh's lids
    follow a blink part of the way): on s18 it read 145 of 268 faces, on d0 52 of 77. Read every 4th frame, d0's
    gaze (the slow test above) drifted over its bound."""
    landmarks = np.zeros((68, 2))
    landmarks[36:42], landmarks[42:48] = eye_landmarks(70, 100, 40.0), eye_landmarks(130, 100, 40.0)
    lids = TrackLids()
    reads = [eyes_to_read(landmarks, lids) for _ in range(3 * EYES_READ_EVERY)]
    assert sum(reads) == 3 and reads[0]
    squint = landmarks.copy()
    centre = squint[42:48].mean(axis=0)
    squint[42:48, 1] = centre[1] + (squint[42:48, 1] - centre[1]) * 0.85  # one eye 0.85 as open: maybe a blink
    assert all(eyes_to_read(squint, lids) for _ in range(EYES_READ_EVERY))
    assert sum(eyes_to_read(landmarks, lids) for _ in range(EYES_READ_EVERY)) == 1  # open again


@pytest.mark.slow
def test_the_recast_blinks_with_the_actor(tmp_path: Path) -> None:
    """s18's actor lowers her lids at frames 7-12 to 0.5 of their opening (dlib's points on the source). Read the
    same way on the recast, the cast's eyes close to 0.76 of theirs (0.99 when the mesh's lids alone draw them; dlib
    reads the cast's long lashes as part open)."""
    from stream.cli.quality import Scorer

    clip = first_frames(media("videos/liveportrait_s18.mp4"), tmp_path / "s18.mp4", 16)
    out = tmp_path / "out.mp4"
    render(clip, out, s42_warp(), RenderOptions())
    dlib = Scorer()

    def openings(path: Path) -> np.ndarray:
        rows = []
        for image in frames_of(path, set(range(13))).values():
            box = max(dlib.hog(image, 1), key=lambda r: r.width())
            p = np.array([[q.x, q.y] for q in dlib.shapes(image, box).parts()], dtype=np.float64)
            rows.append([(np.linalg.norm(p[e + 1] - p[e + 5]) + np.linalg.norm(p[e + 2] - p[e + 4]))
                         / 2 / np.linalg.norm(p[e] - p[e + 3]) for e in (36, 42)])
        return np.array(rows)

    actor, recast = openings(clip), openings(out)
    closes = recast[7:13].mean() / recast[:5].mean()
    assert actor[7:13].mean() / actor[:5].mean() < 0.6
    assert closes < 0.85, (closes, recast.round(3))


def test_the_cast_takes_the_actors_light_and_keeps_its_features() -> None:
    """Light from the actor's right: the cast's skin darkens and brightens as the actor's does, its dark eyes and
    lips stay as dark against the skin around them, and nothing outside the face changes."""
    size, landmarks = 256, face_layout()
    face = np.full((size, size, 3), (200, 160, 140), np.uint8)
    features = features_mask(landmarks, size) > 0.5
    face[features] = (60, 40, 40)
    light = np.linspace(0.6, 1.2, size, dtype=np.float32)[None, :, None]  # left to right
    actor = np.clip(np.full((size, size, 3), (190, 150, 130), np.float32) * light, 0, 255).astype(np.uint8)
    mask = np.zeros((size, size), np.float32)
    mask[40:230, 50:206] = 1.0
    out = transfer_light(face, actor, landmarks, mask).astype(np.float32)
    left, right = (slice(125, 140), slice(80, 90)), (slice(125, 140), slice(166, 176))  # the two cheeks
    actor_ratio = actor[right].mean() / actor[left].mean()
    ratio = out[right].mean() / out[left].mean()
    assert abs(ratio / actor_ratio - 1) < 0.15, (ratio, actor_ratio)
    eye, beside = (slice(108, 112), slice(92, 100)), (slice(108, 112), slice(70, 76))
    before = face[eye].astype(np.float32).mean() / face[beside].astype(np.float32).mean()
    after = out[eye].mean() / out[beside].mean()
    assert abs(after / before - 1) < 0.2, (before, after)
    outside = cv2.dilate((mask > 0).astype(np.uint8), np.ones((17, 17), np.uint8)) == 0  # 8 px off the face
    assert np.array_equal(out[outside], face[outside])
    # an actor lit as evenly as the cast, with the same skin: the face is left within a few levels
    even = np.full((size, size, 3), (200, 160, 140), np.uint8)
    assert np.abs(transfer_light(face, even, landmarks, mask).astype(int) - face).max() <= 3


def test_a_flat_lit_actor_takes_the_casts_colour_but_not_its_features_contrast() -> None:
    """The actor's colour statistics move the cast's mean colour all the way, but its spread (mostly the contrast
    of eyes and brows against skin) by at most 1.25x either way: a flat-lit actor no longer washes the eyes out."""
    size, landmarks = 256, face_layout()
    cast = np.full((size, size, 3), (215, 175, 160), np.uint8)
    features = features_mask(landmarks, size) > 0.5
    cast[features] = (50, 35, 30)  # dark eyes, brows and lips
    actor = np.full((size, size, 3), (170, 140, 120), np.uint8)
    actor[features] = (140, 115, 100)  # the same face, lit flat: its features hardly stand out
    mask = np.zeros((size, size), np.float32)
    mask[40:230, 50:206] = 1.0
    stats = color_stats(cast, actor, mask)
    assert stats is not None
    out = apply_color(cast, stats)

    def lightness(image: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)

    inside = mask > 0
    assert abs(lightness(out)[inside].mean() - lightness(actor)[inside].mean()) < 3  # the actor's brightness
    contrast = lightness(out)[~features & inside].mean() - lightness(out)[features].mean()
    was = lightness(cast)[~features & inside].mean() - lightness(cast)[features].mean()
    assert contrast > 0.75 * was, (contrast, was)


def test_a_texture_coloured_before_the_warp_draws_the_warped_face_coloured() -> None:
    """The warp colours its cast's texture once per change of a track's colour instead of each warped face: colour
    is a per-pixel map, so the two pictures differ by the rounding of its 8-bit Lab round trip (a level or two,
    taken before or after the warp's interpolation) and where the warp mixes neighbouring pixels of different
    colours (the lashes' and lips' edges)."""
    recaster = s42_warp()
    texture = recaster._casts[recaster.cast_ids()[0]].rgba
    warp = recaster._casts[recaster.cast_ids()[0]].warp
    points = recaster._casts[recaster.cast_ids()[0]].landmarks
    moved = points + np.array([6.0, -4.0]) + 0.03 * (points - points.mean(axis=0))  # larger, shifted
    actor = np.zeros_like(texture[..., :3])
    actor[...] = (190, 125, 100)  # a warm skin
    actor[::7] = (120, 70, 60)  # with some spread
    hull = np.zeros(texture.shape[:2], np.float32)
    hull[100:420, 120:400] = 1.0
    ours, theirs = lab_stats(np.ascontiguousarray(texture[..., :3]), hull), lab_stats(actor, hull)
    assert ours is not None and theirs is not None
    stats = np.concatenate([ours, theirs])
    coloured = colour_texture(texture, stats, None, (0, 0, texture.shape[1], texture.shape[0]))
    before = warp.warp(coloured.rgba, moved)[..., :3]
    after = apply_color(np.ascontiguousarray(warp.warp(texture, moved)[..., :3]), stats)
    diff = np.abs(before.astype(np.int16) - after).max(axis=2)  # the largest of the three channels' differences
    assert diff.mean() < 1.2 and np.percentile(diff, 99.5) <= 6, (diff.mean(), np.percentile(diff, 99.5))
    assert np.abs(after.astype(np.int16) - warp.warp(texture, moved)[..., :3]).mean() > 10  # it was coloured
    # a track's colour that moves by less than COLOR_REDRAW keeps the texture; more, or another cast's, draws anew
    assert colour_texture(texture, stats + COLOR_REDRAW * 0.8, coloured, (0, 0, 512, 512)) is coloured
    assert colour_texture(texture, stats + COLOR_REDRAW * 1.2, coloured, (0, 0, 512, 512)) is not coloured
    assert colour_texture(texture.copy(), stats, coloured, (0, 0, 512, 512)) is not coloured


@pytest.mark.parametrize("shift", [0.0, 70.0])  # a mouth inside the crop, and one cut by its lower edge
def test_the_mouth_interior_made_in_its_box_is_the_one_made_over_the_whole_crop(shift: float) -> None:
    """The actor's mouth interior is blended into the face in the inner lips' box alone (Finish.blend_mouth): the
    same picture as the mask made and blended over the whole crop, to a level of rounding."""
    rng = np.random.default_rng(3)
    face, actor = (rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(2))
    points = face_layout() + np.array([0.0, shift])
    points[60:68] = np.column_stack([128 + 18 * np.cos(np.linspace(0, 6.0, 8)), 180 + shift + 9 * np.sin(
        np.linspace(0, 6.0, 8))])  # an open mouth
    finish = Finish(color=False, mouth=True)
    boxed = finish.blend_mouth(face, actor, points, finish.look(1))
    inner = polygon_mask(points[60:68], 256, blur=1.5)
    whole = cv2.blendLinear(face, actor, 1.0 - inner, inner)
    assert inner.max() > 0.99 and np.abs(boxed.astype(np.int16) - whole).max() <= 1
    assert (boxed != face).any(axis=2).sum() > 400  # the interior was blended in


def test_a_pale_casts_dark_moustache_keeps_its_colour_on_a_warm_actor() -> None:
    """A skin tone moves a dark pixel's colour little: a pale cast's dark moustache and brows on a warm-skinned
    actor stay a dark, near-neutral brown while its skin takes the actor's tone. Shifted whole in Lab, they took
    the skin's whole shift and turned a saturated red-brown (here chroma 4 -> 26; young Einstein's,
    liveportrait_s12, on the hamilton clip)."""
    size, landmarks = 256, face_layout()
    cast = np.full((size, size, 3), (225, 205, 195), np.uint8)  # pale, nearly grey skin
    hair = polygon_mask(landmarks[[48, 49, 50, 51, 52, 53, 54, 35, 33, 31]], size) > 0.5  # over the upper lip
    cast[hair] = (45, 38, 35)
    actor = np.full((size, size, 3), (190, 120, 95), np.uint8)  # warm skin
    mask = np.zeros((size, size), np.float32)
    mask[40:230, 50:206] = 1.0
    stats = color_stats(cast, actor, mask)
    assert stats is not None and hair.sum() > 300
    out = apply_color(cast, stats)

    def chroma(image: np.ndarray, where: np.ndarray) -> float:
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[where].astype(np.float32)
        return float(np.hypot(lab[:, 1] - 128, lab[:, 2] - 128).mean())

    skin = (mask > 0) & ~cv2.dilate(hair.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert abs(chroma(out, skin) - chroma(actor, skin)) < 4  # the skin is the actor's tone
    assert chroma(out, hair) < chroma(cast, hair) + 8, (chroma(cast, hair), chroma(out, hair))
    assert cv2.cvtColor(out, cv2.COLOR_RGB2LAB)[hair][:, 0].mean() < 70  # and stays dark


def test_a_casts_hair_over_its_forehead_and_cheeks_is_left_out() -> None:
    """Strands of a portrait's hair across its forehead and down the side of a cheek are painted over with skin
    and get alpha 0 (the actor's own skin shows there); a portrait without hair over its face is left (nearly)
    whole."""
    size, landmarks = 256, face_layout()
    clean = np.full((size, size, 3), (200, 160, 140), np.uint8)
    clean[features_mask(landmarks, size) > 0.5] = (90, 60, 50)
    image, alpha, share = clean_texture(clean, landmarks)
    assert share < 0.005 and (alpha < 0.5).mean() < 0.002  # at most a speck at a feature's edge
    hairy = clean.copy()
    strands = np.zeros((size, size), np.uint8)
    cv2.line(strands, (90, 70), (170, 84), 1, 3)  # across the forehead, above the brows
    cv2.line(strands, (62, 110), (70, 160), 1, 4)  # down the left cheek's side
    hairy[strands > 0] = (70, 45, 30)
    image, alpha, share = clean_texture(hairy, landmarks)
    assert share > 0 and (alpha[strands > 0] < 0.5).mean() > 0.8
    assert np.abs(image[strands > 0].astype(int) - (200, 160, 140)).mean() < 25  # painted with skin
    middle = (slice(125, 140), slice(80, 90))  # the cheek's middle: kept
    assert alpha[middle].min() > 0.9
    # the skin right beside a strand (its fringe, its shadow, the inpaint's smear; here 3-4 px away, the eye
    # distance being 64 px) goes with it, half of it: grown by 0.02 of the eye distance it stayed (alpha 0.70)
    beside = (cv2.dilate(strands, np.ones((9, 9), np.uint8)) > 0) & ~(cv2.dilate(strands, np.ones((5, 5))) > 0)
    assert alpha[beside].mean() < 0.6
    # a faint strand over the forehead of a portrait lit from one side (its skin's lightness spread wide) is found
    shaded = clean.astype(np.float32) * np.linspace(0.6, 1.15, size)[None, :, None]
    shaded = np.clip(shaded, 0, 255).astype(np.uint8)
    faint = np.zeros((size, size), np.uint8)
    cv2.line(faint, (100, 72), (160, 80), 1, 2)
    shaded[faint > 0] = np.clip(shaded[faint > 0].astype(int) - 35, 0, 255).astype(np.uint8)
    image, alpha, share = clean_texture(shaded, landmarks)
    assert (alpha[faint > 0] < 0.5).mean() > 0.8
    # hair or background just outside the jaw line (where a warp along the mesh's oval reaches) is left out too
    outline = polygon_mask(np.concatenate([landmarks[0:17], landmarks[17:27][::-1] - (0, 30)]), size) > 0.5
    ring = (cv2.dilate(outline.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0) & ~outline
    framed = clean.copy()
    framed[~outline] = (40, 90, 40)  # foliage around the face
    image, alpha, share = clean_texture(framed, landmarks)
    assert (alpha[ring] < 0.5).mean() > 0.8 and alpha[middle].min() > 0.9
    # a broad, faint wisp (6 % darker than the skin) hanging from a strand goes with the strand (0.24 of it did
    # before the hysteresis); the same wisp on the other cheek, touching no hair, is skin shading and stays
    wisps = clean.copy()
    strand, hanging, lone = (np.zeros((size, size), np.uint8) for _ in range(3))
    cv2.line(strand, (62, 110), (70, 160), 1, 6)
    cv2.line(hanging, (70, 125), (84, 150), 1, 12)
    cv2.line(lone, (186, 125), (172, 150), 1, 12)
    wisps[(hanging > 0) | (lone > 0)] = (188, 150, 131)
    wisps[strand > 0] = (70, 45, 30)
    image, alpha, share = clean_texture(wisps, landmarks)
    assert (alpha[(hanging > 0) & (strand == 0)] < 0.5).mean() > 0.7
    assert (alpha[lone > 0] > 0.9).mean() > 0.95


def test_the_shade_a_portraits_hair_casts_beside_it_is_lifted() -> None:
    """Hair shades the skin beside it. Stretched over an actor's bright temple, that shade read as a grey wedge
    beside the eye (s42 on s18). The skin beside the hair left out is lightened to the cheeks' lightness: added
    to the lightness, so its grain keeps its contrast and a brow stays dark; skin far from any hair is left as it
    is."""
    size, landmarks = 256, face_layout()  # the eyes 64 px apart
    rng = np.random.default_rng(4)
    face = np.full((size, size, 3), (200, 160, 140), np.float32)
    face += rng.normal(0, 4, (size, size, 1))  # the skin's grain
    yy, xx = np.mgrid[0:size, 0:size]
    hair = (xx >= 20) & (xx < 40) & (yy >= 60) & (yy < 200)
    shade = np.clip(1.0 - (xx - 40) / 20.0, 0.0, 1.0) * (xx >= 40) * ((yy >= 70) & (yy < 190))
    face *= (1.0 - 0.45 * shade)[..., None]  # up to 45 % darker right beside the hair, fading out 20 px away
    brows = np.zeros((size, size), np.uint8)
    cv2.line(brows, (40, 80), (60, 80), 1, 6)  # a brow's end in the shade
    face[brows > 0] = (90, 60, 50)
    face[hair] = (60, 40, 30)
    face = np.clip(face, 0, 255).astype(np.uint8)
    lab = cv2.cvtColor(face, cv2.COLOR_RGB2LAB).astype(np.float32)
    far = (xx > 140) & (yy > 60) & (yy < 200)
    skin = np.median(lab[far], axis=0)
    spread = np.maximum(1.4826 * np.median(np.abs(lab[far] - skin), axis=0), (4.0, 2.0, 2.0))
    hull = np.ones((size, size), bool)
    image = _lift_hair_shadow(face, lab, hair.astype(np.uint8), hull, landmarks, brows, 64.0, skin, spread)

    def lightness(x: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(x, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)

    beside = (shade > 0.4) & (brows == 0)
    before, after = lightness(face)[beside], lightness(image)[beside]
    # more than half of the shade taken off (measured: 121 -> 154, the skin 175): the shade is measured smoothly,
    # so the darkest skin right beside the hair keeps some
    assert skin[0] - before.mean() > 40 and skin[0] - after.mean() < 0.5 * (skin[0] - before.mean()), \
        (skin[0], before.mean(), after.mean())
    inner = (xx >= 44) & (xx < 54) & (yy >= 100) & (yy < 180)  # in the shade, away from its edges

    def grain(x: np.ndarray) -> float:
        light = lightness(x)
        return float((light - cv2.GaussianBlur(light, (0, 0), 2.0))[inner].std())

    assert 0.8 < grain(image) / grain(face) < 1.25, (grain(face), grain(image))  # lifted, not painted over
    assert np.abs(image[far].astype(int) - face[far]).max() <= 1
    assert lightness(image)[brows > 0].mean() < skin[0] - 50  # a brow's end in the shade stays a dark brow
    # the real portrait: the skin beside s42's eyes lies in her hair's shade (0.59 and 0.66 of her cheeks'
    # lightness; 0.93 and 0.77 lightened)
    prepared = prepare_cast(cast_from_file(media("images/liveportrait_s42.jpg")), 384, still_faces("mediapipe"),
                            "mediapipe")
    points, texture = prepared.landmarks, np.ascontiguousarray(prepared.rgba[..., :3])
    kept, light = prepared.rgba[..., 3] > 230, lightness(texture)
    iod = float(np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0)))
    cheeks = polygon_mask(np.stack([points[41], points[31], points[48], (points[3] + points[31]) / 2,
                                    (points[1] + points[41]) / 2]), 384) > 0.5
    shares = []
    for corner, outward in ((points[36], -1), (points[45], 1)):
        x0, x1 = sorted((corner[0], corner[0] + outward * 0.35 * iod))
        box = (xx384 := np.mgrid[0:384, 0:384])[1] >= x0
        box &= (xx384[1] < x1) & (xx384[0] >= corner[1] - 0.2 * iod) & (xx384[0] < corner[1] + 0.15 * iod)
        shares.append(float(light[box & kept].mean()) / float(np.median(light[cheeks])))
    assert np.mean(shares) > 0.75, shares


def test_a_portraits_thick_brows_are_kept() -> None:
    """The brows' points lie on their top edge (the mesh's), so thick brows reach well below them, and between
    arched brows the skin lies below the line joining their outer ends: none of that is forehead. The forehead's
    band was the convex hull of the brows and the line above them, which took it all in, and s12's thick, dark
    brows were left out as hair (the actor's own brows showed through, framed by the portrait's dark edges)."""
    prepared = prepare_cast(cast_from_file(media("images/liveportrait_s12.jpg")), 384, still_faces("mediapipe"),
                            "mediapipe")
    points, alpha = prepared.landmarks, prepared.rgba[..., 3].astype(np.float32) / 255.0
    iod = float(np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0)))
    for brow in (points[17:22], points[22:27]):  # from the top edge down a fifth of the eye distance
        body = polygon_mask(np.concatenate([brow, brow[::-1] + np.array([0.0, 0.2 * iod])]), 384) > 0.5
        # 0.92 and 1.00 (the left brow's tail meets the shaded temple, left out); 0.24 of the first with the hull
        assert (alpha[body] > 0.9).mean() > 0.85, (alpha[body] > 0.9).mean()


def test_a_smooth_face_gets_the_shots_detail_but_its_features_stay_its_own() -> None:
    rng = np.random.default_rng(0)
    size, landmarks = 256, face_layout()
    face = np.full((size, size, 3), 150, np.uint8)
    actor = np.clip(150 + rng.normal(0, 12, (size, size, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)
    mask = np.zeros((size, size), np.float32)
    mask[40:230, 50:206] = 1.0
    out = match_detail(face, actor, landmarks, mask)
    lap = np.abs(cv2.Laplacian(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F))
    lap_actor = np.abs(cv2.Laplacian(cv2.cvtColor(actor, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F))
    skin = (mask > 0.5) & (features_mask(landmarks, size) < 0.01)
    ratio = lap[skin].mean() / lap_actor[skin].mean()
    assert 0.7 < ratio < 1.3, ratio  # the plain skin has the shot's grain
    features = features_mask(landmarks, size) > 0.99
    assert np.abs(out[features].astype(int) - 150).max() <= 1  # the eyes, nose and lips are not the actor's
    assert np.array_equal(out[mask == 0], face[mask == 0])  # nothing outside the face
    # a face already as detailed as the shot is left as it is
    assert np.array_equal(match_detail(actor, actor, landmarks, mask), actor)
    # a face whose features' edges are soft at the pixel scale (a portrait resampled twice) is raised towards the
    # crispness of the actor's: 0.82 of its 3x3 Laplacian (0.77 when the sharpening was read on the wider band)
    crisp_actor = np.where((features_mask(landmarks, size) > 0.5)[..., None], 70, 170)
    crisp_actor = crisp_actor.repeat(3, axis=2).astype(np.uint8)
    soft = cv2.GaussianBlur(crisp_actor, (0, 0), 0.6)
    out = match_detail(soft, crisp_actor, landmarks, mask)
    ratio = crispness(out, mask) / crispness(crisp_actor, mask)
    assert ratio > 0.8, ratio


def test_a_portrait_crisper_than_the_shot_is_softened_to_it() -> None:
    """A sharp portrait's grain and creases on a soft shot read as pasted on: the face is blurred down to the
    shot's crispness at the pixel scale (it was left as it was: 12 times the shot's here)."""
    rng = np.random.default_rng(1)
    size, landmarks = 256, face_layout()
    face = np.where((features_mask(landmarks, size) > 0.5)[..., None], 70.0, 170.0) + rng.normal(0, 8, (size, size, 1))
    face = np.clip(face, 0, 255).repeat(3, axis=2).astype(np.uint8)
    actor = cv2.GaussianBlur(face, (0, 0), 1.2)  # the same face, out of focus
    mask = np.zeros((size, size), np.float32)
    mask[40:230, 50:206] = 1.0
    assert crispness(face, mask) / crispness(actor, mask) > 2.0
    out = match_detail(face, actor, landmarks, mask)
    ratio = crispness(out, mask) / crispness(actor, mask)
    assert 0.85 < ratio < 1.2, ratio
    # blurred, not repainted: the features stay where and how dark they were
    assert np.abs(cv2.GaussianBlur(out, (0, 0), 3).astype(int) - cv2.GaussianBlur(face, (0, 0), 3)).mean() < 1.5


def test_a_portrait_slightly_crisper_than_its_aim_is_softened_too() -> None:
    """A portrait under a fifth crisper than the shot's crispness over what the paste keeps (`kept`) is softened
    towards it by a blur finer than a Gaussian kernel draws and a grey level holds: it had been left as it was (the
    blur, about 0.1 px, fell under the least that was drawn, and a slight blur of an 8-bit picture rounds back to
    it). The actor's grain, added back to the plain skin, keeps it a little above the aim (1.06 here)."""
    rng = np.random.default_rng(2)
    size, landmarks = 256, face_layout()
    face = np.where((features_mask(landmarks, size) > 0.5)[..., None], 70.0, 170.0) + rng.normal(0, 6, (size, size, 1))
    face = np.clip(cv2.GaussianBlur(face, (0, 0), 0.7)[..., None], 0, 255).repeat(3, axis=2).astype(np.uint8)
    mask = np.zeros((size, size), np.float32)
    mask[40:230, 50:206] = 1.0
    actor = cv2.addWeighted(face, 0.7, cv2.GaussianBlur(face, (0, 0), 1.0), 0.3, 0)  # the shot a little softer
    kept = 0.95
    aim = crispness(actor, mask) / kept
    assert 1.12 < crispness(face, mask) / aim < 1.25, crispness(face, mask) / aim
    ratio = crispness(match_detail(face, actor, landmarks, mask, kept=kept), mask) / aim
    assert 0.95 < ratio < 1.12, ratio


def test_a_smooth_portrait_is_softened_to_its_aim_as_drawn_in_levels() -> None:
    """On a smooth face (d20's) rounding to levels adds fine noise that reads as crispness: the blur is chosen by the
    crispness of the face as it is drawn, rounded, so that the drawn face reaches its aim (0.99-1.02 on four smooth
    faces); chosen in floats, it stayed 13-19 % above."""
    rng = np.random.default_rng(3)
    size, landmarks = 256, face_layout()
    face = np.where((features_mask(landmarks, size) > 0.5)[..., None], 90.0, 150.0) + rng.normal(0, 2, (size, size, 1))
    face = cv2.GaussianBlur(face, (0, 0), 1.2)
    drawn = np.clip(np.rint(face)[..., None], 0, 255).repeat(3, axis=2).astype(np.uint8)
    actor = np.clip(np.rint(cv2.GaussianBlur(face, (0, 0), 0.6))[..., None], 0, 255).repeat(3, axis=2).astype(np.uint8)
    mask = np.zeros((size, size), np.float32)
    mask[40:230, 50:206] = 1.0
    aim = crispness(actor, mask)
    assert 1.12 < crispness(drawn, mask) / aim < 1.25, crispness(drawn, mask) / aim
    ratio = crispness(match_detail(drawn, actor, landmarks, mask), mask) / aim
    assert 0.93 < ratio < 1.07, ratio


def test_the_crispness_lost_to_the_crop_and_the_paste_is_measured_and_made_up() -> None:
    """`crispness_kept` measures what a face's crop, pasted back and converted as the encoder converts it, keeps of
    the frame's crispness (d0's textured skin about 0.8); the detail step aims that much higher, so the pasted recast
    comes out nearly as crisp as the shot and not a fifth softer (d0 on the scorer: sharp 0.85, against 0.77
    without). On a smooth face (d20's, 1.07 measured) or a soft frame (1.25) the conversion's rounding adds more
    crispness than the resampling takes, and the step aims that much lower."""
    from stream.look.align import alignment, crop
    from stream.look.paste import crispness_kept
    from stream.perception.smoothing import quad_params

    with av.open(str(media("videos/liveportrait_d0.mp4"))) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    (_, landmarks), = still_faces("mediapipe")(frame)
    align = alignment(quad_params(landmarks), 384)
    kept = crispness_kept(frame, crop(frame, align, cv2.INTER_CUBIC), align, landmarks)
    assert 0.7 < kept < 0.9, kept
    soft = cv2.GaussianBlur(frame, (0, 0), 2.0)  # nothing left at the pixel scale for a resample to lose
    assert crispness_kept(soft, crop(soft, align, cv2.INTER_CUBIC), align, landmarks) > 1.1
    with av.open(str(media("videos/liveportrait_d20.mp4"))) as container:
        smooth = next(container.decode(video=0)).to_ndarray(format="rgb24")
    (_, landmarks), = still_faces("mediapipe")(smooth)
    align = alignment(quad_params(landmarks), 384)
    assert 1.0 < crispness_kept(smooth, crop(smooth, align, cv2.INTER_CUBIC), align, landmarks) < 1.15
    # the detail step: a soft face raised towards the actor's crispness over what the paste will keep
    size, points = 256, face_layout()
    crisp_actor = np.where((features_mask(points, size) > 0.5)[..., None], 70, 170).repeat(3, axis=2).astype(np.uint8)
    soft_face = cv2.GaussianBlur(crisp_actor, (0, 0), 0.8)
    mask = np.zeros((size, size), np.float32)
    mask[40:230, 50:206] = 1.0
    aimed = crispness(match_detail(soft_face, crisp_actor, points, mask, kept=0.8), mask)
    plain = crispness(match_detail(soft_face, crisp_actor, points, mask), mask)
    assert 1.1 < aimed / plain < 1.4, aimed / plain


def test_landmarks_are_steady_when_still_and_follow_when_moving() -> None:
    rng = np.random.default_rng(1)
    base = np.zeros((68, 2))
    base[36:42], base[42:48] = eye_landmarks(100, 120, 40), eye_landmarks(160, 120, 40)
    base[:36] = rng.uniform(60, 200, (36, 2))
    base[48:] = rng.uniform(60, 200, (20, 2))
    steady = OneEuro()
    jitter_in, jitter_out, previous = [], [], None
    for _ in range(60):  # a still face, landmarks jittering by half a pixel
        noisy = base + rng.normal(0, 0.5, base.shape)
        out = steady(noisy, 256)
        if previous is not None:
            jitter_in.append(np.abs(noisy - previous[0]).mean())
            jitter_out.append(np.abs(out - previous[1]).mean())
        previous = (noisy, out)
    assert np.mean(jitter_out[10:]) < 0.5 * np.mean(jitter_in[10:])
    moved = base + np.array([30.0, 0.0])  # then a quick turn: 30 px in one frame (three quarters of an eye width)
    steady(moved, 256)
    second = steady(moved, 256)
    assert np.abs(second - moved).mean() < 3.0  # within a tenth of the move two frames later


def first_frames(source: Path, out: Path, count: int) -> Path:
    """The first `count` frames of a clip, re-encoded (tests score a short piece)."""
    with av.open(str(source)) as inp, av.open(str(out), "w") as dst:
        stream = inp.streams.video[0]
        enc = dst.add_stream("libx264", rate=stream.average_rate)
        enc.width, enc.height, enc.pix_fmt = stream.width, stream.height, "yuv420p"
        enc.options = {"crf": "12"}
        for i, frame in enumerate(inp.decode(video=0)):
            if i >= count:
                break
            for packet in enc.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")):
                dst.mux(packet)
        for packet in enc.encode():
            dst.mux(packet)
    return out


def test_every_recaster_pastes_through_the_same_finish(models: dict[str, Path]) -> None:
    """Warp and FOMM faces both take the actor's colour and the shot's detail (stream.look.finish.Finish): on an actor
    tinted blue, each recast face moves towards the actor's colour, and it carries more fine detail than drawn."""
    from engines.checkpoints import open_checkpoint
    from stream.casts.preparation import prepare_cast
    from stream.perception.stills import DEFAULT_DETECTOR, still_faces
    from stream.recasters.contract import FaceCrop
    from stream.recasters.learned import FOMMRecaster

    cast = cast_from_file(CAST)
    warp = WarpRecaster([cast], color=True)
    fomm = FOMMRecaster(open_checkpoint(models["fomm"], "fomm"), [cast])
    for recaster, size in ((warp, 256), (fomm, fomm.crop_size)):
        ready = prepare_cast(cast, size, still_faces(), DEFAULT_DETECTOR)
        actor = np.clip(ready.image.astype(int) + np.array([-40, 0, 50]), 0, 255).astype(np.uint8)
        rng = np.random.default_rng(0)
        actor = np.clip(actor + rng.normal(0, 6, actor.shape[:2])[..., None], 0, 255).astype(np.uint8)  # grain
        face = FaceCrop(1, actor, ready.landmarks)
        plain = recaster.session_copy()
        plain.finish = Finish(color=False, detail=False)  # the face as drawn
        if isinstance(plain, WarpRecaster):
            plain.color = False  # the warp colours its cast's texture itself
        finished, mask = recaster.session_copy().recast(face)
        drawn, _ = plain.recast(face)
        inside = mask > 0.9
        gap = [np.abs(img[inside].mean(0) - actor[inside].mean(0)).sum() for img in (finished, drawn)]
        assert gap[0] < 0.5 * gap[1], (recaster.name, gap)
        assert fine_detail(finished, inside) > fine_detail(drawn, inside), recaster.name


def crispness(image: np.ndarray, mask: np.ndarray) -> float:
    """stream.look.paste.crispness of an RGB picture inside a float mask (over 0.5): detail at the pixel scale."""
    return grey_crispness(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32), mask > 0.5)


def fine_detail(image: np.ndarray, where: np.ndarray) -> float:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(grey - cv2.GaussianBlur(grey, (0, 0), 1.0))[where].mean())


def test_the_quality_bench_judges_flicker_and_sharpness_against_the_goals_and_the_floor() -> None:
    """Flicker is met at 1.05, or 0.02 above the clip passed through unchanged where the encoder alone adds more;
    sharpness within 0.9-1.1, the floor's given beside it."""
    from stream.cli.quality import UNCHANGED, format_quality

    results = {"calm": {"frames": 30, "sharp": 1.157, "flicker": 1.04, "shimmer": 0.95},
               "calm" + UNCHANGED: {"frames": 30, "sharp": 1.106, "flicker": 0.99},
               "grainy": {"frames": 30, "sharp": 0.95, "flicker": 1.11},
               "grainy" + UNCHANGED: {"frames": 30, "sharp": 1.0, "flicker": 1.10},
               "moving": {"frames": 30, "sharp": 0.85, "flicker": 1.06}, "empty": {"frames": 0}}
    lines = format_quality(results).splitlines()
    goals = lines[lines.index("goals (docs/look.md):") + 1:]
    assert goals == [
        "  calm: flicker 1.04 (<= 1.05: met, shimmer 0.95), sharp 1.16 (0.9-1.1: over; unchanged 1.11)",
        "  grainy: flicker 1.11 (<= 1.12: met), sharp 0.95 (0.9-1.1: met; unchanged 1.00)",
        "  moving: flicker 1.06 (<= 1.05: over), sharp 0.85 (0.9-1.1: under)"], goals


def test_shimmer_counts_a_faces_noise_and_not_its_motion() -> None:
    """The bench's `shimmer`: a face with more contrast than the source's, moving as it moves with no noise of its
    own, changes more from frame to frame (flicker 1.11 here) but shimmers less than the source with its grain
    (0.45); the same face with grain four times the source's shimmers three times as much (3.1)."""
    rng = np.random.default_rng(4)
    size = 200
    texture = cv2.GaussianBlur(rng.normal(128, 40, (size + 40, size + 40)), (0, 0), 3)

    def moved(t: int, gain: float = 1.0, grain: float = 0.0) -> np.ndarray:
        shift = np.float32([[1, 0, 1.5 * t], [0, 1, 0.7 * t]])
        picture = cv2.warpAffine(texture, shift, texture.shape[::-1], flags=cv2.INTER_CUBIC,
                                 borderMode=cv2.BORDER_REFLECT)[20:-20, 20:-20]
        picture = 128 + gain * (picture - 128) + rng.normal(0, grain, picture.shape) * (grain > 0)
        return np.clip(np.rint(picture), 0, 255).astype(np.uint8)[..., None].repeat(3, axis=2)

    inside = np.zeros((size, size), np.uint8)
    cv2.circle(inside, (size // 2, size // 2), 70, 1, -1)
    flicker, steady, grainy = [], [], []
    for t in range(6):
        source = moved(t, grain=1.0), moved(t + 1, grain=1.0)
        contrast, noisy = (moved(t, 1.6), moved(t + 1, 1.6)), (moved(t, grain=4.0), moved(t + 1, grain=4.0))
        change = [np.abs(pair[1].astype(np.float32) - pair[0])[inside > 0].mean() for pair in (source, contrast)]
        flicker.append(change[1] / change[0])
        steady.append(shimmer(source[1], source[0], contrast[1], contrast[0], inside))
        grainy.append(shimmer(source[1], source[0], noisy[1], noisy[0], inside))
    assert np.median(flicker) > 1.05 and np.median(steady) < 0.8 and np.median(grainy) > 2.0, (flicker, steady,
                                                                                              grainy)


@pytest.mark.slow
def test_our_scorer_agrees_with_the_teams(tmp_path: Path) -> None:
    """stream/cli/quality.py computes what shared/tools/recast_score.py computes, to the third decimal."""
    clip = first_frames(media("videos/liveportrait_d20.mp4"), tmp_path / "d20.mp4", 36)
    out = tmp_path / "out.mp4"
    render(clip, out, s42_warp(), RenderOptions())
    ours = Scorer().score(clip, out, cast_from_file(CAST).image)
    run = subprocess.run([sys.executable, str(SCORER), str(clip), str(out), str(CAST)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    theirs = json.loads(run.stdout)
    # dlib finds the one face in 11 or 12 of the 12 frames scored (seen once at 11: a frame near its threshold)
    assert ours["frames"] == theirs["frames"] >= 11
    for key in ("found", "cast_closer", "d_cast", "d_actor", "nme", "mouth", "seam", "sharp", "flicker"):
        assert abs(ours[key] - theirs[key]) <= 2e-3, (key, ours[key], theirs[key])


# Guards, not the goals: the scorer's figures on the shared clips with the s42 cast must not fall back. Each bound
# sits a margin away from what the current code measures (docs/look.md has those figures, and the goals, some of
# which are not met), so that other machines' x264 and dlib pass and a change that worsens the look fails.
# Measured: d20 d_cast 0.47, nme 0.033, mouth 0.91, sharp 1.11, flicker 0.79; d0 0.47/0.035/0.99/0.85/0.97;
# s18 0.36/0.038/-/1.01/1.02 (on every ninth frame, as here: nme 0.039, sharp 1.01, flicker 1.01).
GUARDS = {
    "liveportrait_d20": {"found": (">=", 0.99), "cast_closer": (">=", 0.95), "d_cast": ("<=", 0.5),
                         "nme": ("<=", 0.037), "mouth": (">=", 0.85), "sharp": (">=", 0.9), "flicker": ("<=", 0.9)},
    "liveportrait_d0": {"found": (">=", 0.99), "cast_closer": (">=", 0.95), "d_cast": ("<=", 0.47),
                        "nme": ("<=", 0.043), "mouth": (">=", 0.97), "sharp": (">=", 0.8), "flicker": ("<=", 1.02)},
    "liveportrait_s18": {"found": (">=", 0.99), "cast_closer": (">=", 0.95), "d_cast": ("<=", 0.4),
                         "nme": ("<=", 0.048), "sharp": (">=", 0.9), "flicker": ("<=", 1.08)},
}


@pytest.mark.slow
def test_the_recast_look_on_the_shared_clips(tmp_path: Path) -> None:
    from stream.cli.quality import run_quality

    cast = cast_from_file(CAST).image
    results = run_quality([media(f"videos/{name}.mp4") for name in GUARDS if name != "liveportrait_s18"],
                          s42_warp(), cast, RenderOptions(), tmp_path)
    # s18 is scored on every ninth frame (32 of its 282): dlib's detector on its 720p frames, upsampled, is most of
    # this test's time; its guards sit further from its figures than that changes them
    results |= run_quality([media("videos/liveportrait_s18.mp4")], s42_warp(), cast, RenderOptions(), tmp_path,
                           every=9)
    misses = []
    for name, guards in GUARDS.items():
        for key, (how, bound) in guards.items():
            value = results[name][key]
            if not (value >= bound if how == ">=" else value <= bound):
                misses.append(f"{name} {key} {value} (bound {how} {bound})")
    print({name: {key: results[name][key] for key in guards} for name, guards in GUARDS.items()})
    assert not misses, (misses, results)


@pytest.mark.slow
def test_the_look_holds_with_one_bit_of_noise(tmp_path: Path) -> None:
    """LiteRT's kernels differ by CPU, and a score near a threshold flips: d0 with every pixel moved by -1, 0 or +1
    at random (kept exactly: FFV1, lossless) is recast within the guards of the clean clip. Measured: found 1.00,
    cast_closer 1.00, d_cast 0.46, nme 0.034, mouth 0.99, as clean. Sharpness and flicker are left out: they are
    ratios to the source's own, and the noise is the source's now (0.80 and 0.80 against 0.85 and 0.96 clean)."""
    from stream.cli.quality import run_quality

    rng = np.random.default_rng(1)
    noisy = tmp_path / "liveportrait_d0.mkv"
    with av.open(str(media("videos/liveportrait_d0.mp4"))) as source, av.open(str(noisy), "w") as out:
        video = source.streams.video[0]
        stream = out.add_stream("ffv1", rate=video.average_rate)
        stream.width, stream.height, stream.pix_fmt = video.codec_context.width, video.codec_context.height, "bgr0"
        for frame in source.decode(video=0):
            image = frame.to_ndarray(format="rgb24")
            moved = np.clip(image + rng.integers(-1, 2, image.shape, dtype=np.int16), 0, 255).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(moved, format="rgb24")))
        out.mux(stream.encode(None))
    result = run_quality([noisy], s42_warp(), cast_from_file(CAST).image, RenderOptions(), tmp_path)[noisy.stem]
    misses = []
    for key, (how, bound) in GUARDS["liveportrait_d0"].items():
        if key not in ("sharp", "flicker") and not (result[key] >= bound if how == ">=" else result[key] <= bound):
            misses.append(f"{key} {result[key]} (bound {how} {bound})")
    assert result["frames"] >= 20 and not misses, (misses, result)


@pytest.mark.slow
def test_the_quality_floor_is_the_clip_passed_through_unchanged(tmp_path: Path) -> None:
    """`recast bench --only quality --floor`: each clip is also scored passed through the pipeline unchanged (the
    identity recaster), the floor under every recast's nme and flicker. Measured on d20 (its first 54 frames):
    nme 0.007, mouth 0.99, flicker about 1, cast_closer 0 (the actor stays the actor)."""
    from stream.cli.quality import UNCHANGED, run_quality

    cast = cast_from_file(CAST).image
    clip = first_frames(media("videos/liveportrait_d20.mp4"), tmp_path / "liveportrait_d20.mp4", 54)
    out = tmp_path / "out"
    out.mkdir()
    results = run_quality([clip], IdentityRecaster(), cast, RenderOptions(), out, floor=True)
    floor = results["liveportrait_d20" + UNCHANGED]
    assert set(results) == {"liveportrait_d20", "liveportrait_d20" + UNCHANGED}
    assert floor["frames"] >= 15 and floor["found"] >= 0.99 and floor["cast_closer"] < 0.05
    assert floor["nme"] < 0.015 and floor["mouth"] > 0.95  # the landmarks and the mouth kept, within dlib's noise
    assert 0.9 < floor["flicker"] < 1.15  # the encoder's own change, no more
    assert sorted(out.glob("*.mp4")) == [out / "liveportrait_d20.recast.mp4", out / "liveportrait_d20.unchanged.mp4"]


def test_a_folded_warp_shows_the_nearest_surface() -> None:
    """Where the destination folds over itself (a turned face's far cheek behind its nose), the triangles nearest
    the camera (smaller depth) are drawn last and show; without depth the order is the triangulation's."""
    from stream.look.piecewise import PiecewiseAffine

    size = 64
    texture = np.zeros((size, size, 3), np.uint8)
    texture[:, :32] = (255, 0, 0)  # the left half red, the right half blue
    texture[:, 32:] = (0, 0, 255)
    src = np.array([[16.0, 16], [16, 48], [32, 16], [32, 48], [48, 16], [48, 48]])
    warp = PiecewiseAffine(src, size)
    # the right column of points folded back over the left half: the blue strip lands on the red one
    dst = np.array([[16.0, 16], [16, 48], [32, 16], [32, 48], [20, 16], [20, 48]])
    near_right = np.array([5.0, 5, 0, 0, -5, -5])  # the right half nearer
    overlap = (slice(24, 40), slice(24, 30))
    blue = warp.warp(texture, dst, size, depth=near_right)[overlap]
    red = warp.warp(texture, dst, size, depth=-near_right)[overlap]
    assert blue[..., 2].mean() > 200 and blue[..., 0].mean() < 50
    assert red[..., 0].mean() > 200 and red[..., 2].mean() < 50


def test_a_warp_pressed_to_slivers_leaves_no_specks() -> None:
    """A triangle pressed flat (the underside of a nose as the head tips or the mouth smiles) is drawn as a line of
    pixels whose map is ill-conditioned: they sampled the texture far away, a bright speck under d0's nose with
    the Collins cast. Over a smooth texture, 15 slivers drawn in front of their neighbours leave (nearly) no pixel
    off its 3x3 median by over 40 levels: measured 19 pixels, 686 when slivers were drawn like any triangle."""
    from stream.look.piecewise import PiecewiseAffine

    size = 384  # a crop over 256 px: its maps are made at half size, where a sliver still covers whole pixels
    ys, xs = np.mgrid[0:size, 0:size]
    texture = np.dstack([xs * 255 // size, ys * 255 // size, np.full_like(xs, 128)]).astype(np.uint8)
    src = np.random.default_rng(0).uniform(80, 300, (30, 2))
    warp = PiecewiseAffine(src, size)
    specks = 0
    for a, b, c in [t for t in warp.triangles if (t < len(src)).all()][:15]:
        along = (src[b] - src[a]) / np.linalg.norm(src[b] - src[a])
        dst = src.copy()
        dst[c] = src[a] + along * np.dot(src[c] - src[a], along) + np.array([-along[1], along[0]]) * 0.05
        depth = np.zeros(len(src))
        depth[[a, b, c]] = -1.0  # the sliver nearest: drawn after its neighbours
        out = warp.warp(texture, dst, size, depth=depth)
        off = np.abs(out.astype(int) - cv2.medianBlur(out, 3).astype(int))[8:-8, 8:-8].max(axis=2)
        specks += int((off > 40).sum())
    assert specks < 80, specks


def test_the_dense_warp_follows_the_mesh_and_its_own_mesh_changes_nothing() -> None:
    from stream.casts.cast import cast_from_file
    from stream.casts.preparation import prepare_cast
    from stream.perception.mesh import portrait_mesh, to_68
    from stream.perception.stills import DEFAULT_DETECTOR, still_faces
    from stream.recasters.contract import FaceCrop

    cast = cast_from_file(CAST)
    ready = prepare_cast(cast, 256, still_faces(), DEFAULT_DETECTOR)
    assert ready.dense is not None
    dense, ids = ready.dense
    assert 150 <= len(ids) <= 250
    # the portrait's mesh, found from its 68 points, agrees with them
    landmarks = still_faces()(cast.image)[0][1]
    iod = np.linalg.norm(landmarks[36:42].mean(0) - landmarks[42:48].mean(0))
    assert np.linalg.norm(to_68(portrait_mesh(cast.image, landmarks)) - landmarks, axis=1).mean() / iod < 0.03
    # warped onto its own mesh, the texture is itself
    own = dense.src[: len(ids)]
    same = dense.warp(ready.rgba, own, 256)
    inside = face_mask_of(ready.landmarks, 256)
    assert np.abs(same[inside].astype(int) - ready.rgba[inside]).mean() < 1.0
    # a recaster given the actor's mesh draws with it: moving the mesh's mouth moves the recast's mouth
    recaster = WarpRecaster([cast])
    mesh = np.column_stack([np.zeros((468, 2)), np.zeros(468)])
    mesh[ids, :2] = own
    face = FaceCrop(1, ready.image, ready.landmarks, -1, mesh)
    plain, _ = recaster.session_copy().recast(face)
    opened = mesh.copy()
    lips = np.isin(np.arange(468), [14, 17, 84, 181, 91, 314, 405, 321, 87, 178, 88, 317, 402, 318])
    opened[lips, 1] += 12  # the lower lip drops
    moved, _ = recaster.session_copy().recast(FaceCrop(1, ready.image, ready.landmarks, -1, opened))
    mouth = (slice(int(ready.landmarks[57, 1]) - 4, int(ready.landmarks[57, 1]) + 16),
             slice(int(ready.landmarks[48, 0]), int(ready.landmarks[54, 0])))
    assert np.abs(moved[mouth].astype(int) - plain[mouth]).mean() > 5


def face_mask_of(landmarks: np.ndarray, size: int) -> np.ndarray:
    from stream.look.masks import face_mask

    return face_mask(landmarks, size) > 0.99


def test_the_bench_prints_the_cost_of_each_step_of_the_look() -> None:
    from stream.cli.bench import bench_look_steps, format_bench

    recaster = s42_warp()
    steps = bench_look_steps(media("videos/liveportrait_d20.mp4"), recaster, RenderOptions(), frames=8, repeats=1)
    assert steps is not None and steps["faces"] >= 3
    wanted = {"crispness kept", "repeat test", "warp 68 points", "warp dense mesh", "warp dense mesh, lids lowered",
              "eye openings, a call", "eye openings, a face on average", "mask", "mouth interior",
              "colour (into the texture, on average)", "light", "gaze", "detail", "the whole recast"}
    assert set(steps["ms_per_face"]) == wanted and all(v > 0 for v in steps["ms_per_face"].values())
    line = format_bench({"input": "x", "width": 1, "height": 1, "fps": 1.0, "engine": "warp", "cpu_count": 1,
                         "live_path": {"fps": 1.0, "realtime_factor": 1.0, "wall_ms_per_frame": 1.0,
                                       "cpu_ms_per_frame": 2.0, "frames": 1, "ms_per_frame": {}},
                         "tracking": {"detector": "mediapipe", "span": None, "tracked_ms_per_frame": 1.0,
                                      "tracked_faces_per_frame": 1.0, "landmarks_ms_per_face": 1.0, "detections": 1,
                                      "landmark_calls": 1, "naive_ms_per_frame": 1.0, "speedup_vs_naive": 1.0},
                         "look_steps": steps}).splitlines()[-1]
    assert line.startswith("the warp's steps") and "light" in line and "warp dense mesh" in line
    # the iris model reads some faces only (every other one at least, and wherever the eyes may blink)
    ms = steps["ms_per_face"]
    each, average = ms["eye openings, a call"], ms["eye openings, a face on average"]
    assert 0.45 * each <= average <= each
    assert bench_look_steps(media("videos/liveportrait_d20.mp4"), IdentityRecaster(), RenderOptions()) is None
