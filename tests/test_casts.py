"""Casts an operator can trust: a cast portrait is checked when it is registered (`--cast`,
the service's start), never during playback, and each bad portrait gets an error naming the file and the
problem."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from stream.casts.cast import Cast, CastError, CastImageError, cast_from_file, default_casts, read_image
from stream.cli.main import main
from stream.perception.stills import still_faces
from stream.recasters.warp import WarpRecaster
from tests.conftest import media

S42 = media("images/liveportrait_s42.jpg")


def portrait() -> np.ndarray:
    return read_image(S42)


def saved(tmp_path: Path, name: str, image: Image.Image, **options: object) -> Path:
    path = tmp_path / name
    image.save(path, **options)
    return path


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Each kind of bad cast file, and the words its error must contain."""
    rgb = Image.fromarray(portrait())
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(np.arange(512)[None, :] < 100, 0, 255).astype(np.uint8).repeat(512, 0)))
    frames = [rgb.convert("P"), Image.fromarray(255 - portrait()).convert("P")]
    animated = tmp_path / "animated.gif"
    frames[0].save(animated, save_all=True, append_images=frames[1:], duration=100)
    return {
        "greyscale": (saved(tmp_path, "grey.png", rgb.convert("L")), "greyscale"),
        "greyscale as RGB": (saved(tmp_path, "grey.jpg", rgb.convert("L").convert("RGB")), "greyscale"),
        "CMYK": (saved(tmp_path, "cmyk.jpg", rgb.convert("CMYK")), "CMYK"),
        "alpha": (saved(tmp_path, "alpha.png", rgba), "transparent"),
        "animated": (animated, "animated"),
        "8000 px": (saved(tmp_path, "huge.png", Image.new("RGB", (8000, 64), (200, 150, 120))), "too large"),
        "not an image": (saved_bytes(tmp_path / "text.jpg", b"not a picture"), "not a readable image"),
    }


def saved_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_each_bad_file_is_refused_when_read_with_its_reason(tmp_path: Path) -> None:
    for kind, (path, words) in bad_files(tmp_path).items():
        with pytest.raises(CastImageError, match=words) as err:
            cast_from_file(path)
        assert str(path) in str(err.value), kind


def bad_portraits() -> dict[str, tuple[Cast, str]]:
    """Readable images that are not usable portraits, and the words each error must contain."""
    image = portrait()
    found = still_faces()(image)
    (_, landmarks), = found
    shades = image.copy()
    for eye in (landmarks[36:42], landmarks[42:48]):
        centre, size = eye.mean(axis=0), np.ptp(eye, axis=0)
        cv2.ellipse(shades, tuple(np.round(centre).astype(int)), tuple(np.round(size * (0.9, 1.6)).astype(int)), 0, 0,
                    360, (20, 22, 25), -1)
    # the one profile on the shared pictures: the face of liveportrait_insightface_t1 turned furthest
    group = read_image(media("images/liveportrait_insightface_t1.jpg"))

    def symmetry(face: tuple[object, np.ndarray]) -> float:
        left, right = abs(face[1][30, 0] - face[1][36, 0]), abs(face[1][45, 0] - face[1][30, 0])
        return float(min(left, right) / max(left, right))

    box, _ = min(still_faces()(group), key=symmetry)
    pad = box.width * 1.0  # with room around it, as a portrait has (closer crops lose the face)
    profile = group[int(max(box.y0 - pad, 0)):int(box.y1 + pad), int(max(box.x0 - pad, 0)):int(box.x1 + pad)]
    profile = cv2.resize(profile, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)

    def cast(name: str, pixels: np.ndarray) -> Cast:
        return Cast(name, "synthetic", f"{name}.png", np.ascontiguousarray(pixels))

    return {
        "no face": (cast("blank", np.full((300, 300, 3), (180, 140, 120), np.uint8)), "no face"),
        "two faces": (cast("two", read_image(media("images/face_recognition_two_people.jpg"))), "2 faces"),
        "32 px": (cast("tiny", cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA)), "face"),
        "a small face": (cast("small", cv2.resize(image, (160, 160), interpolation=cv2.INTER_AREA)), "px wide"),
        "blurred": (cast("blurred", cv2.GaussianBlur(image, (0, 0), 5)), "blurred"),
        "sunglasses": (cast("shades", shades), "eyes are hidden"),
        "profile": (cast("profile", profile), "turned"),
    }


def test_each_bad_portrait_is_refused_at_registration_with_its_reason() -> None:
    for kind, (cast, words) in bad_portraits().items():
        with pytest.raises(CastError, match=words) as err:
            WarpRecaster([cast])
        assert cast.source in str(err.value), kind


@pytest.mark.parametrize("name", ["liveportrait_s42.jpg", "liveportrait_s12.jpg", "face_recognition_obama-480p.jpg",
                                  "dlib_Tom_Cruise_avp_2014_4.jpg"])
def test_good_portraits_are_taken(name: str) -> None:
    assert WarpRecaster([cast_from_file(media(f"images/{name}"))]).cast_ids() == [Path(name).stem]


def test_the_built_in_casts_pass_their_own_checks() -> None:
    assert [c.cast_id for c in default_casts()] == ["collins", "hopper"]
    assert [c.cast_id for c in default_casts(demo=True)] == ["hopper", "collins"]
    assert sorted(WarpRecaster(default_casts()).cast_ids()) == ["collins", "hopper"]


def test_a_bad_cast_on_the_command_line_is_one_line_and_exit_2(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    grey = saved(tmp_path, "grey.png", Image.fromarray(portrait()).convert("L"))
    assert main(["render", "--demo", "-o", str(tmp_path / "out.mp4"), "--cast", str(grey)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(grey) in err[0] and "greyscale" in err[0]
    blurred = tmp_path / "blurred.png"
    Image.fromarray(cv2.GaussianBlur(portrait(), (0, 0), 5)).save(blurred)
    assert main(["render", "--demo", "-o", str(tmp_path / "out.mp4"), "--cast", str(blurred)]) == 2
    assert "blurred" in capsys.readouterr().err
    assert not (tmp_path / "out.mp4").exists()


def test_a_small_portraits_grain_is_taken_out_before_it_is_enlarged() -> None:
    """A face the cast texture enlarges (here 2.5x) loses its grain within the texture's region, so no blotches are
    enlarged onto the actor; the rest of the portrait, and a portrait used at about its own size, are untouched."""
    from stream.casts.preparation import _degrained

    rng = np.random.default_rng(1)
    portrait = np.clip(170 + rng.normal(0, 6, (200, 300, 3)), 0, 255).astype(np.uint8)
    region = np.array([[40.0, 30.0], [160.0, 30.0], [160.0, 150.0], [40.0, 150.0]])
    assert _degrained(portrait, 1.3, region) is portrait
    out = _degrained(portrait, 2.5, region)
    inside, outside = (slice(40, 140), slice(50, 150)), (slice(0, 200), slice(200, 300))
    assert out[inside].astype(np.float32).std() < 0.5 * portrait[inside].astype(np.float32).std()
    assert abs(float(out[inside].mean()) - float(portrait[inside].mean())) < 2  # the colour stays
    assert np.array_equal(out[outside], portrait[outside])


def test_a_smiling_casts_teeth_and_lip_glint_are_left_out_but_parted_lips_are_kept() -> None:
    """Collins smiles with her teeth: her mouth's opening gets alpha 0 (the actor's own mouth shows there, open or
    pressed shut) and the glint on her lower lip is brought down to her lips' own range. s42's lips are only
    parted: her opening is kept (leaving it out lets d20's actor's mouth through: mouth 0.67 against 0.92)."""
    from stream.casts.cast import collins_cast
    from stream.casts.preparation import prepare_cast
    from stream.look.masks import polygon_mask

    faces = still_faces("mediapipe")
    for cast, left_out in ((collins_cast(), True), (cast_from_file(S42), False)):
        prepared = prepare_cast(cast, 256, faces, "mediapipe")
        points, alpha = prepared.landmarks, prepared.rgba[..., 3].astype(np.float32) / 255
        opening = polygon_mask(points[60:68], 256) > 0.5
        assert (alpha[opening].mean() < 0.2) if left_out else (alpha[opening].mean() > 0.9), cast.cast_id
        lips = (polygon_mask(points[48:60], 256) > 0.5) & ~(cv2.dilate(opening.astype(np.uint8), np.ones((5, 5))) > 0)
        lightness = cv2.cvtColor(prepared.image, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)[lips]
        low, high = np.percentile(lightness, (25, 75))
        assert lightness.max() <= high + 1.5 * (high - low) + 8, cast.cast_id  # no glint over the lips' range
