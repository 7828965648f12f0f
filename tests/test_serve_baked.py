"""`recast serve --cache`: baked titles play from their cached tracks (no detection), with the `actor` cast (the
title's tuned generator on each frame's pivot) and the edits of the directions that fit the bake, through real
aiortc clients on 127.0.0.1. The bake is d20's first 75 frames with the small models of conftest."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest

from engines.cache import TitleCache
from engines.directions import list_directions
from stream.cli.main import main
from stream.cli.serve_process import recast_serve_demo
from stream.perception.face_stage import BakedFaceStage
from stream.server.clients import Viewer
from stream.server.service import SERVICE
from stream.server.titles import scan_titles
from tests.browser import chromium_page
from tests.conftest import REFERENCE, decode_all, media, psnr
from tests.webrtc_client import serving

CLIP = media("videos/liveportrait_d20.mp4")
BAKED = 75  # frames baked; the title goes on past them
DIRECTIONS = REFERENCE / "directions" / "e4e_interfacegan"  # age, smile (1,512); pose (1,18,512) fits no 10-style bake


@pytest.fixture(scope="module")
def cache(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("serve-cache")
    assert main(["bake", str(CLIP), "--title", "d20", "--cache", str(folder), "--generator", str(models["generator"]),
                 "--encoder", str(models["encoder"]), "--encoder-size", "64", "--max-frames", str(BAKED),
                 "--pti-steps", "40"]) == 0
    return folder


@pytest.fixture(scope="module")
def source() -> list[np.ndarray]:
    return decode_all(CLIP)


def face_box(cache: Path) -> dict[int, np.ndarray]:
    with np.load(TitleCache(cache).entry("d20").verified("tracks.npz")) as tracks:
        return {int(i): box.astype(int) for i, box in zip(tracks["frame"], tracks["box"], strict=True)}


def regions(shape: tuple[int, ...], box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The middle of the face, and the picture well away from it."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    face = np.zeros(shape[:2], bool)
    face[y0 + h // 4 : y1 - h // 4, x0 + w // 4 : x1 - w // 4] = True
    rest = np.ones(shape[:2], bool)
    rest[max(0, y0 - h // 2) : y1 + h // 2, max(0, x0 - w // 2) : x1 + w // 2] = False
    return face, rest


async def session_frames(base: str, http: aiohttp.ClientSession, messages: list[dict[str, Any]],
                         until: int) -> tuple[dict[int, np.ndarray], Viewer]:
    """One session: send the control messages, then keep the frames sent after they took effect, by index."""
    viewer = Viewer(base, http)
    await viewer.connect({"title": "d20"})
    start = 0
    for message in messages:
        reply = await viewer.control(message)
        assert reply["type"] == "state", reply
        start = reply["frame"] + 3  # frames already handed to the encoder before the message
    frames: dict[int, np.ndarray] = {}
    while True:
        frame: av.VideoFrame = (await viewer.frames(1))[0]
        index = round(float(frame.pts * frame.time_base) * 25)
        if index >= start:
            frames[index] = frame.to_ndarray(format="rgb24")
        if index >= until:
            return frames, viewer


@pytest.mark.slow
def test_baked_title_plays_from_the_cache_with_the_actor_and_edits(cache: Path, source: list[np.ndarray]) -> None:
    titles = scan_titles(None, None, TitleCache(cache), list_directions(DIRECTIONS))
    boxes = face_box(cache)

    async def scenario() -> None:
        async with serving(titles) as (base, app, http):
            status, listed = await Viewer(base, http).call("GET", "/api/titles")
            assert status == 200 and listed == [{"id": "d20", "live": False, "duration": listed[0]["duration"],
                                                 "fps": 25.0, "prebaked": True, "loop": False,
                                                 "casts": ["actor", "hopper"], "edits": ["age", "smile"],
                                                 "renditions": []}]
            runs: dict[str, dict[int, np.ndarray]] = {}
            for name, messages, until in [
                ("actor", [{"type": "cast", "track": "all", "cast": "actor"}], BAKED + 12),
                ("aged", [{"type": "cast", "track": "all", "cast": "actor"},
                          {"type": "edit", "direction": "age", "factor": 6.0}], BAKED - 5),
                ("hopper", [], BAKED - 5),
            ]:
                frames, viewer = await session_frames(base, http, messages, until)
                session = app[SERVICE].sessions[viewer.session]
                assert isinstance(session.tracks[0].processor.stage, BakedFaceStage)  # no detection, no look-ahead
                if name == "aged":
                    reply = await viewer.control({"type": "edit", "direction": "pose", "factor": 1.0})
                    assert reply["error"] == "unknown_direction"  # (1,18,512): does not fit a 10-style bake
                    reply = await viewer.control({"type": "edit", "direction": "age", "factor": float("nan")})
                    assert reply["error"] == "bad_message"
                    reply = await viewer.control({"type": "state"})
                    assert reply["edits"] == {"age": 6.0} and reply["cast"] == "actor"
                runs[name] = frames
                assert (await viewer.call("DELETE", f"/api/sessions/{viewer.session}"))[0] == 204
                await viewer.close()
            common = sorted(set(runs["actor"]) & set(runs["aged"]) & set(runs["hopper"]) & set(range(BAKED)))
            assert len(common) >= 20, common
            stats: dict[str, list[float]] = {"actor": [], "aged_vs_actor": [], "aged_rest": [], "hopper_vs_actor": []}
            for i in common:
                face, rest = regions(source[i].shape, boxes[i])
                stats["actor"].append(psnr(runs["actor"][i], source[i], face))
                stats["aged_vs_actor"].append(psnr(runs["aged"][i], runs["actor"][i], face))
                stats["aged_rest"].append(psnr(runs["aged"][i], runs["actor"][i], rest))
                stats["hopper_vs_actor"].append(psnr(runs["hopper"][i], runs["actor"][i], face))
            past = [psnr(runs["actor"][i], source[i]) for i in runs["actor"] if BAKED + 3 <= i < len(source)]
            means = {k: round(float(np.mean(v)), 1) for k, v in stats.items()}
            print(json.dumps({**means, "past_the_bake": round(float(np.mean(past)), 1), "frames": len(common)}))
            # the actor is the 64 px generator's rendering of the face: close to the actor's, far from a copy
            assert 10 < means["actor"] < 30
            # the edit changes the face and nothing else; the warp cast is another face again
            assert means["aged_vs_actor"] < 30 and means["aged_rest"] > 30
            assert means["hopper_vs_actor"] < 25
            # past the baked frames there are no faces: the picture passes through (no live detection)
            assert len(past) >= 5 and min(past) > 28
            assert app[SERVICE].sessions == {}

    asyncio.run(asyncio.wait_for(scenario(), 180))


def test_broken_or_foreign_bakes_are_skipped_or_played_live(cache: Path, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A bake whose source is another file is not used for it, a corrupted track file is skipped with a warning,
    and `recast serve --cache` on a folder that is not there exits 2."""
    import shutil

    broken = tmp_path / "cache"
    shutil.copytree(cache, broken)
    folder = tmp_path / "titles"
    folder.mkdir()
    (folder / "d20.mp4").write_bytes(media("videos/liveportrait_s18.mp4").read_bytes())
    titles = scan_titles(folder, None, TitleCache(broken))
    assert titles["d20"].prebaked is False and titles["d20"].faces is None  # another file: live tracking
    assert "sha256 differs" in caplog.text and "played live" in caplog.text
    tracks = broken / "titles" / "d20" / "tracks.npz"
    tracks.write_bytes(tracks.read_bytes()[:-100] + b"\0" * 100)
    caplog.clear()
    assert scan_titles(None, None, TitleCache(broken)) == {}
    assert "tracks.npz" in caplog.text and "skipped" in caplog.text
    assert main(["serve", "--demo", "--cache", str(tmp_path / "nope")]) == 2


def test_preview_page_offers_the_actor_and_edit_sliders_for_a_baked_title(cache: Path) -> None:
    """`recast serve --cache --directions` in its own process, the page in Chromium: the baked title's cast picker
    starts with `actor`, its sliders are the directions that fit the bake, and moving one switches the cast to the
    actor and sets the edit (the server echoes both back)."""
    with recast_serve_demo("--cache", str(cache), "--directions", str(DIRECTIONS)) as server, \
            chromium_page() as (page, errors):
        page.goto(server.base + "/")
        page.wait_for_function("document.getElementById('source').options.length >= 3")
        assert page.locator("#edits").is_hidden()  # the demo title is not baked: no sliders
        page.select_option("#source", "title:d20")
        casts = page.locator("#cast option").evaluate_all("options => options.map(o => o.value)")
        assert casts == ["actor", "hopper", "collins"]
        assert page.locator("#edits input").evaluate_all("s => s.map(e => e.dataset.direction)") == ["age", "smile"]
        page.select_option("#cast", "hopper")
        page.click("#play")
        page.wait_for_function("window.recastState.connected && document.getElementById('video').videoWidth > 0",
                               timeout=30_000)
        page.wait_for_function("window.recastState.state && window.recastState.state.cast === 'hopper'")
        page.locator("#edits input[data-direction=age]").fill("3")
        page.wait_for_function("window.recastState.state && window.recastState.state.edits.age === 3")
        state = page.evaluate("window.recastState")
        page.click("#stop")
        page.wait_for_function("!window.recastState.connected")
    assert not errors, errors
    assert state["state"]["cast"] == "actor" and state["state"]["edits"] == {"age": 3.0} and state["errors"] == []
