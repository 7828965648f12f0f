"""The cast registry: `recast casts add IMAGE --kind --source` checks a portrait and prepares it
once; `recast serve` plays every registered cast (with its thumbnail on the page, and animated by FOMM when it was
registered with a FOMM checkpoint); `render --cast ID` takes one by its id. Bad portraits, arguments and damaged
entries get one line naming the file and the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
from PIL import Image

from stream.casts.cast import cast_from_file, hopper_cast, read_image
from stream.casts.preparation import prepare_cast
from stream.casts.registry import TEXTURE_VERSION, CastRegistry, RegistryError
from stream.cli.main import main
from stream.perception.stills import DEFAULT_DETECTOR, still_faces
from stream.recasters.contract import FaceCrop
from stream.recasters.warp import WarpRecaster
from stream.server.service import ServerConfig
from tests.conftest import media, s42_warp
from tests.demo_title import DemoTitle
from tests.session_harness import SessionHarness
from tests.webrtc_client import run_async, running_server

S42 = media("images/liveportrait_s42.jpg")
NOTE = "LivePortrait's sample portrait s42 (generated)"


def add(registry: Path, image: Path, *extra: str) -> int:
    return main(["casts", "add", str(image), "--kind", "synthetic", "--source", NOTE, "--casts", str(registry),
                 *extra])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("casts")
    assert add(folder, S42) == 0
    return folder


def test_add_checks_prepares_once_and_lists(registry: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    entry = json.loads((registry / "liveportrait_s42" / "cast.json").read_text())
    assert entry["kind"] == "synthetic" and entry["source"] == NOTE and entry["detector"] == DEFAULT_DETECTOR
    assert len(entry["landmarks"]) == 68 and len(entry["mesh"]) == 468 and entry["fomm"] is None
    texture = np.array(Image.open(registry / "liveportrait_s42" / "texture.png"))
    assert texture.shape == (512, 512, 4) and 0 < (texture[..., 3] == 255).mean() < 1  # its hair left out
    assert np.array_equal(np.array(Image.open(registry / "liveportrait_s42" / "portrait.png")), read_image(S42))
    capsys.readouterr()
    assert main(["casts", "list", "--json", "--casts", str(registry)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(e["id"], e["kind"], e["source"]) for e in listed] == [("liveportrait_s42", "synthetic", NOTE)]
    # the same id again is refused unless replaced; a copy under another id is a second cast; removal
    other = tmp_path / "reg"
    assert add(other, S42) == 0 and add(other, S42) == 2
    assert "registered already" in capsys.readouterr().err
    assert add(other, S42, "--replace") == 0 and add(other, S42, "--id", "second") == 0
    assert CastRegistry(other).ids() == ["liveportrait_s42", "second"]
    assert main(["casts", "remove", "second", "--casts", str(other)]) == 0
    assert CastRegistry(other).ids() == ["liveportrait_s42"]
    assert not [p for p in other.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_bad_portraits_and_arguments_are_one_line_exit_2_and_write_nothing(tmp_path: Path, models: dict[str, Path],
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    grey = tmp_path / "grey.png"
    Image.fromarray(read_image(S42)).convert("L").save(grey)
    two = media("images/face_recognition_two_people.jpg")
    cases: list[tuple[list[str], str]] = [
        ([str(two)], "2 faces"),
        ([str(grey)], "greyscale"),
        ([str(tmp_path / "missing.jpg")], "no such image file"),
        ([str(S42), "--id", "../escape"], "cast id"),
        ([str(S42), "--id", "actor"], "cast id"),
        ([str(S42), "--id", "hopper"], "built-in"),  # `recast serve` would refuse to start with two
        ([str(S42), "--fomm", str(tmp_path / "gone.pth.tar")], "no such FOMM checkpoint"),
        ([str(S42), "--fomm", str(models["generator"])], str(models["generator"])),
    ]
    folder = tmp_path / "reg"
    for args, words in cases:
        assert main(["casts", "add", *args, "--kind", "consented", "--source", "a note", "--casts", str(folder)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], (args, err)
    for note in ("", "two\nlines", "x" * 501):
        assert main(["casts", "add", str(S42), "--kind", "consented", "--source", note, "--casts", str(folder)]) == 2
        assert "--source" in capsys.readouterr().err
    assert CastRegistry(folder).ids() == []
    assert main(["casts", "remove", "nobody", "--casts", str(folder)]) == 2
    # a registry where a file stands: one line naming it, exit 2 (not an internal error)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    capsys.readouterr()
    assert add(blocked, S42) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(blocked) in err[0] and "cannot write" in err[0]


def test_a_registered_cast_is_read_not_prepared_again(registry: Path) -> None:
    cast = CastRegistry(registry).load("liveportrait_s42")
    assert cast.kind == "synthetic" and cast.source == NOTE and cast.prepared is not None

    def no_detection(image: np.ndarray) -> list[Any]:
        raise AssertionError("a registered cast was detected again")

    ready = prepare_cast(cast, 512, no_detection, DEFAULT_DETECTOR)
    assert np.array_equal(ready.rgba, cast.prepared.rgba) and ready.dense is not None  # the mesh read too
    # its warps draw the eyes beneath their lids, as a freshly prepared cast's do (the 68 points' two lid points an
    # eye, the mesh's seven)
    assert len(ready.warp.under_ids) == 4 and len(ready.dense[0].under_ids) == 14
    smaller = prepare_cast(cast, 256, no_detection, DEFAULT_DETECTOR)  # another size: aligned again, not detected
    assert smaller.rgba.shape == (256, 256, 4)
    # another detector's landmark model: detected again (the warp maps one model's points onto the same model's)
    seen = []
    hog = still_faces("hog")
    prepare_cast(cast, 512, lambda image: seen.append(1) or hog(image), "hog")
    assert seen == [1]
    # the registered cast recasts a face as the same portrait given as a file does
    fresh = prepare_cast(cast_from_file(S42), 512, still_faces(), DEFAULT_DETECTOR)
    assert np.abs(fresh.rgba.astype(int) - cast.prepared.rgba).mean() < 0.5
    face = FaceCrop(1, fresh.image, fresh.landmarks)
    a, _ = WarpRecaster([cast]).recast(face)
    b, _ = s42_warp().recast(face)
    assert np.abs(a.astype(int) - b).mean() < 1.0


def test_a_texture_of_an_older_preparation_is_made_again(registry: Path, tmp_path: Path) -> None:
    """An entry stores which version of the preparation made its texture: one made by an older version (here a
    blank texture with its sha256 written, and no version) is made again from the portrait
    and its checked landmarks, never detected again; a current one is used as stored."""
    import shutil

    from engines.cache import sha256_path

    folder = tmp_path / "reg"
    shutil.copytree(registry, folder)
    entry_path = folder / "liveportrait_s42" / "cast.json"
    entry = json.loads(entry_path.read_text())
    assert entry["texture"] == TEXTURE_VERSION
    texture = folder / "liveportrait_s42" / "texture.png"
    Image.fromarray(np.zeros((512, 512, 4), np.uint8)).save(texture)
    entry["files"]["texture.png"] = sha256_path(texture)
    entry_path.write_text(json.dumps(entry))

    def no_detection(image: np.ndarray) -> list[Any]:
        raise AssertionError("a registered cast was detected again")

    cast = CastRegistry(folder).load("liveportrait_s42")
    assert cast.prepared is not None and cast.prepared.current
    assert not prepare_cast(cast, 512, no_detection, DEFAULT_DETECTOR).rgba.any()  # as stored
    del entry["texture"]
    entry_path.write_text(json.dumps(entry))
    cast = CastRegistry(folder).load("liveportrait_s42")
    assert cast.prepared is not None and not cast.prepared.current
    again = prepare_cast(cast, 512, no_detection, DEFAULT_DETECTOR)
    stored = np.array(Image.open(registry / "liveportrait_s42" / "texture.png"))
    assert np.abs(again.rgba.astype(int) - stored).mean() < 0.5  # the face, as this version prepares it


def test_a_damaged_entry_is_named_and_skipped(registry: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    folder = tmp_path / "reg"
    shutil.copytree(registry, folder)
    reg = CastRegistry(folder)
    texture = folder / "liveportrait_s42" / "texture.png"
    Image.fromarray(np.zeros((512, 512, 4), np.uint8)).save(texture)
    with pytest.raises(RegistryError, match=r"texture\.png.*sha256"):
        reg.load("liveportrait_s42")
    problems: list[str] = []
    assert reg.load_all(problems) == [] and "texture.png" in problems[0]
    assert main(["casts", "list", "--json", "--casts", str(folder)]) == 0  # listed from cast.json, still readable
    (folder / "liveportrait_s42" / "cast.json").write_text("{not json")
    with pytest.raises(RegistryError, match=r"cast\.json"):
        reg.load("liveportrait_s42")
    capsys.readouterr()
    assert main(["casts", "list", "--json", "--casts", str(folder)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["id"] == "liveportrait_s42" and "cast.json" in listed[0]["problem"]


@pytest.mark.parametrize("damage", ["nested", "files_list", "files_outside", "link_to_device", "link_out",
                                    "fomm_string", "huge"])
def test_a_damaged_entry_never_stops_the_registry(registry: Path, tmp_path: Path, damage: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A cast.json nested too deep to parse, with `files` of the wrong shape or naming a path out of the cast's
    folder, a cast file that is a link to a device or out of the folder, a `fomm` that is not an object, an
    entry of gigabytes: each is that cast's problem, named with its file; `casts list` and the service's loading
    go on with the other casts, exit 0, no traceback, and nothing outside the folder is read."""
    import shutil

    folder = tmp_path / "reg"
    shutil.copytree(registry, folder)
    shutil.copytree(folder / "liveportrait_s42", folder / "bad")
    entry_path = folder / "bad" / "cast.json"
    entry = json.loads(entry_path.read_text())
    entry["id"] = "bad"
    if damage == "nested":
        entry_path.write_text('{"version": 1, "id": "bad", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    elif damage == "huge":
        entry_path.write_text(json.dumps(entry) + " " * (2 << 20))
    else:
        if damage == "files_list":
            entry["files"] = []
        elif damage == "files_outside":
            entry["files"] = {"../../etc/hostname": "0" * 64, "texture.png": entry["files"]["texture.png"]}
        elif damage == "link_to_device":
            (folder / "bad" / "portrait.png").unlink()
            (folder / "bad" / "portrait.png").symlink_to("/dev/zero")
        elif damage == "link_out":
            (folder / "bad" / "portrait.png").unlink()
            (folder / "bad" / "portrait.png").symlink_to(folder / "liveportrait_s42" / "portrait.png")
        elif damage == "fomm_string":
            entry["fomm"] = "vox.pth.tar"
        entry_path.write_text(json.dumps(entry))
    problems: list[str] = []
    loaded = CastRegistry(folder).load_all(problems)
    assert [c.cast_id for c in loaded] == ["liveportrait_s42"]
    assert len(problems) == 1 and str(folder / "bad") in problems[0], problems
    capsys.readouterr()
    assert main(["casts", "list", "--casts", str(folder)]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "liveportrait_s42  synthetic" in out.out
    if damage not in ("link_to_device", "link_out"):  # those entries are whole; their files are checked at load
        assert "bad: " in out.out, out.out


def test_render_takes_a_registered_cast_by_its_id(registry: Path, tmp_path: Path) -> None:
    import av

    out = tmp_path / "out.mp4"
    assert main(["render", "--demo", "-o", str(out), "--cast", "liveportrait_s42", "--casts", str(registry)]) == 0
    with av.open(str(out)) as container:
        casts = json.loads(container.metadata["recast_casts"])
    assert casts[0]["id"] == "liveportrait_s42" and casts[0]["source"] == NOTE and casts[0]["kind"] == "synthetic"


def test_the_service_plays_registered_casts_with_thumbnails_and_fomm(registry: Path, tmp_path: Path,
                                                                     models: dict[str, Path], demo: DemoTitle) -> None:
    folder = tmp_path / "reg"
    assert add(folder, S42, "--fomm", str(models["fomm"]), "--id", "animated") == 0
    casts = [hopper_cast(), *CastRegistry(registry).load_all([]), *CastRegistry(folder).load_all([])]
    harness = SessionHarness(casts, demo.titles["demo"])
    assert harness.session.control.cast_ids == {"hopper", "liveportrait_s42", "animated"}
    assert list(harness.casting.animated) == ["animated"]
    warp = SessionHarness(casts, demo.titles["demo"])
    warp.send({"type": "cast", "cast": "liveportrait_s42"})
    harness.send({"type": "cast", "cast": "animated"})
    animated, warped = harness.play(demo.frames[:6]), warp.play(demo.frames[:6])
    fomm = harness.session.recaster.engines["animated"]  # type: ignore[attr-defined]
    assert fomm.name == "fomm" and list(fomm._initial) == [1]  # the FOMM recaster drove track 1
    assert not harness.casting.animated["animated"]._initial  # ... in the session's own copy
    for index in animated:
        face, _ = demo.face_and_rest(animated[index], index)
        assert face < 30, index  # recast
        assert np.abs(animated[index].astype(int) - warped[index]).mean() > 0.05, index  # not by the warp

    async def scenario() -> None:
        async with running_server(ServerConfig(), demo.titles, casts) as (base, _app), \
                aiohttp.ClientSession() as http:
            async with http.get(base + "/api/casts") as r:
                listed = {c["id"]: c for c in await r.json()}
            assert listed["animated"]["engine"] == "fomm" and listed["hopper"]["engine"] == "warp"
            for cast in listed.values():
                async with http.get(base + cast["thumbnail"]) as r:
                    assert r.status == 200 and r.content_type == "image/jpeg"
                    image = cv2.imdecode(np.frombuffer(await r.read(), np.uint8), cv2.IMREAD_COLOR)
                assert image.shape == (96, 96, 3) and image.std() > 10
            async with http.get(base + "/api/casts/nobody/thumbnail.jpg") as r:
                assert r.status == 404 and (await r.json())["error"] == "not_found"

    run_async(scenario)
