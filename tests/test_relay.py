"""The relay (stream/server/relay.py) with real aiortc viewers on 127.0.0.1: a baked title with renditions is sent
as its packets, the toggle switches renditions at the next keyframe, a choice no rendition covers hands the
session to the live path and back, and the viewer receives exactly the baked stream while relayed."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from engines.cache import TitleCache
from stream.casts.cast import collins_cast, hopper_cast
from stream.cli.main import main
from stream.media.sinks import first_seconds
from stream.server.clients import Viewer
from stream.server.service import SERVICE, ServerConfig
from stream.server.titles import scan_titles
from tests.conftest import decoded_h264, media, psnr
from tests.webrtc_client import run_async, serving

CLIP = media("videos/liveportrait_d20.mp4")  # 25 fps, with audio
FRAMES = 50  # its first 2 s: keyframes on frames 0, 12, 24, 36, 48


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """d20's first 2 s, baked whole with a rendition for hopper (a bake of part of a title is not relayed)."""
    folder, registry = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("casts")
    clip = first_seconds(CLIP, folder / "d20.mp4", FRAMES / 25)
    assert main(["bake", str(clip), "--title", "d20", "--cache", str(folder), "--casts", str(registry),
                 "--renditions", "hopper"]) == 0
    return folder


def _index(frame: object) -> int:
    return round(float(frame.pts * frame.time_base) * 25) % FRAMES  # type: ignore[attr-defined]


def _matches(frames: list[object], rendition: list[np.ndarray]) -> list[float]:
    return [psnr(f.to_ndarray(format="rgb24"), rendition[_index(f)]) for f in frames]  # type: ignore[attr-defined]


def test_a_covered_title_is_relayed_and_the_toggle_switches_at_a_keyframe(cache: Path) -> None:
    titles = scan_titles(None, None, TitleCache(cache), loop=True)
    assert titles["d20"].renditions is not None
    recast = decoded_h264(cache / "titles" / "d20" / "renditions" / "cast-hopper.h264")
    original = decoded_h264(cache / "titles" / "d20" / "renditions" / "original.h264")

    async def scenario() -> None:
        async with serving(titles, ServerConfig(demo=True)) as (base, app, http):
            viewer = Viewer(base, http)
            await viewer.connect({"title": "d20"})
            state = await viewer.control({"type": "state"})
            assert state["path"] == "relay" and state["enabled"] is True and state["cast"] == "hopper"
            on = await viewer.frames(30)
            scores = _matches(on[5:], recast)
            print(f"relayed frames against the cast rendition: {min(scores):.1f} dB at least")
            assert min(scores) > 45  # the baked stream itself (decoded by the viewer: the same decoder)
            assert viewer.audio is not None  # the baked Opus packets, decoded by the viewer
            sound = [await asyncio.wait_for(viewer.audio.recv(), 5) for _ in range(10)]
            assert all(s.sample_rate == 48000 and s.samples > 0 for s in sound)
            session = app[SERVICE].sessions[viewer.session]
            video = next(t for t in session.tracks if t.kind == "video")
            await viewer.control({"type": "recast", "enabled": False})
            off = await viewer.frames(40)
            switched = next(n for n, s in enumerate(_matches(off, original)) if s > 45)
            assert all(s > 45 for s in _matches(off[switched:], original))  # and stays there, unbroken
            assert video.switches == 1 and video.switch_delays_ms[0] <= 520, video.switch_delays_ms
            print(f"toggle: {switched} frames until the original; the switch waited "
                  f"{video.switch_delays_ms[0]:.0f} ms for a keyframe")
            status, _ = await viewer.call("DELETE", f"/api/sessions/{viewer.session}")
            assert status == 204
            await viewer.close()

    run_async(scenario)


def test_a_bake_of_part_of_a_title_plays_live(tmp_path: Path) -> None:
    """Renditions of the first 20 frames of a 7 s title do not stand for the title (a bake with --max-frames)."""
    registry = tmp_path / "casts"
    assert main(["bake", str(CLIP), "--title", "d20", "--cache", str(tmp_path), "--casts", str(registry),
                 "--renditions", "hopper", "--max-frames", "20"]) == 0
    titles = scan_titles(None, None, TitleCache(tmp_path))
    assert titles["d20"].prebaked and titles["d20"].renditions is None


def test_a_cast_without_a_rendition_is_played_live(cache: Path) -> None:
    """The service offers collins first, and the bake has no rendition of collins: the viewer starts on the live
    path, goes to the relay when it picks hopper, and back to the live path when it picks collins again."""
    titles = scan_titles(None, None, TitleCache(cache), loop=True)

    async def scenario() -> None:
        async with serving(titles, ServerConfig(demo=True), casts=[collins_cast(), hopper_cast()]) as (base, _, http):
            viewer = Viewer(base, http)
            await viewer.connect({"title": "d20"})  # collins is this service's first cast
            assert (await viewer.control({"type": "state"}))["path"] == "live"
            assert len(await viewer.frames(5)) == 5
            await viewer.control({"type": "cast", "track": "all", "cast": "hopper"})
            assert len(await viewer.frames(25)) == 25
            assert (await viewer.control({"type": "state"}))["path"] == "relay"
            await viewer.control({"type": "cast", "track": "all", "cast": "collins"})
            began = time.monotonic()
            assert len(await viewer.frames(40)) == 40  # a second handover: the session's encoder again
            assert (await viewer.control({"type": "state"}))["path"] == "live"
            assert time.monotonic() - began < 2.5  # 40 frames at 25 fps, no wait for a keyframe
            await viewer.close()

    run_async(scenario, timeout=60)


def test_a_hundred_toggles_switch_only_at_keyframes_and_never_break_the_picture(cache: Path) -> None:
    """100 toggles 80 ms apart on one viewer: every frame it decodes is exactly a frame of one rendition or the
    other (no corruption: a switch lands on a keyframe), frames keep coming (no freeze), and the audio keeps up."""
    titles = scan_titles(None, None, TitleCache(cache), loop=True)
    folder = cache / "titles" / "d20" / "renditions"
    recast, original = decoded_h264(folder / "cast-hopper.h264"), decoded_h264(folder / "original.h264")

    async def scenario() -> None:
        async with serving(titles, ServerConfig(demo=True)) as (base, app, http):
            viewer = Viewer(base, http)
            await viewer.connect({"title": "d20"})
            assert viewer.video is not None and viewer.audio is not None
            frames: list[tuple[float, object]] = []
            sound: list[object] = []

            async def watch(until: float) -> None:
                while time.monotonic() < until:
                    frames.append((time.monotonic(), await asyncio.wait_for(viewer.video.recv(), 5)))

            async def listen(until: float) -> None:
                while time.monotonic() < until:
                    sound.append(await asyncio.wait_for(viewer.audio.recv(), 5))

            began = time.monotonic()
            end = began + 9.5
            watching = asyncio.gather(watch(end), listen(end))
            for n in range(100):
                viewer.channel.send(json.dumps({"type": "recast", "enabled": n % 2 == 1}))
                await asyncio.sleep(0.08)
            await watching
            session = app[SERVICE].sessions[viewer.session]
            video = next(t for t in session.tracks if t.kind == "video")
            await viewer.close()
            pictures = [f for _, f in frames[3:]]
            exact = [max(psnr(f.to_ndarray(format="rgb24"), r[_index(f)]) for r in (recast, original))
                     for f in pictures]  # type: ignore[attr-defined]
            gaps = np.diff([t for t, _ in frames[3:]])
            heard = sum(s.samples for s in sound) / 48000  # type: ignore[attr-defined]
            print(f"{len(pictures)} frames, {video.switches} switches, worst match {min(exact):.1f} dB, longest gap "
                  f"{gaps.max() * 1e3:.0f} ms, {heard:.2f} s of audio in {end - began:.1f} s")
            assert min(exact) > 45  # each frame is one of the two streams, whole
            assert video.switches >= 2  # the choice at each keyframe (every 0.48 s) is what the last toggle left
            last = [psnr(f.to_ndarray(format="rgb24"), recast[_index(f)]) for f in pictures[-5:]]  # type: ignore
            assert min(last) > 45  # the last toggle (on) holds once its keyframe came
            assert gaps.max() < 0.25 and len(pictures) > 0.9 * 25 * (end - began - 0.5)
            assert heard > 0.9 * (end - began - 0.5)

    run_async(scenario, timeout=60)


def test_a_choice_no_rendition_covers_goes_live_and_comes_back_at_a_keyframe(cache: Path) -> None:
    """A cast per track (no rendition has it) hands the viewer to the live path at the same place in the title, and
    the cast for every face brings it back to the renditions at a keyframe: frames keep coming, every one a whole
    picture of the title at its place, the relayed ones exactly the rendition's."""
    titles = scan_titles(None, None, TitleCache(cache), loop=True)
    recast = decoded_h264(cache / "titles" / "d20" / "renditions" / "cast-hopper.h264")

    async def scenario() -> None:
        async with serving(titles, ServerConfig(demo=True)) as (base, app, http):
            viewer = Viewer(base, http)
            await viewer.connect({"title": "d20"})
            assert viewer.video is not None
            stamped: list[tuple[float, object]] = []

            async def take(count: int) -> list[object]:
                got = []
                for _ in range(count):
                    got.append(await asyncio.wait_for(viewer.video.recv(), 5))  # type: ignore[union-attr]
                    stamped.append((time.monotonic(), got[-1]))
                return got

            await take(10)
            reply = await viewer.control({"type": "cast", "track": 1, "cast": "hopper"})
            assert reply["type"] == "state" and reply["tracks"] == {"1": "hopper"}
            live = await take(45)
            state = await viewer.control({"type": "state"})
            assert state["path"] == "live", state
            await viewer.control({"type": "cast", "track": "all", "cast": "hopper"})
            back = await take(40)
            assert (await viewer.control({"type": "state"}))["path"] == "relay"
            video = next(t for t in app[SERVICE].sessions[viewer.session].tracks if t.kind == "video")
            await viewer.close()
            live_scores = _matches(live[-20:], recast)
            back_scores = _matches(back, recast)
            gaps = np.diff([t for t, _ in stamped[3:]])
            print(f"live: {min(live_scores):.1f}-{max(live_scores):.1f} dB against the rendition; back: "
                  f"{sum(s > 45 for s in back_scores)} of {len(back)} frames exactly the rendition's; longest gap "
                  f"{gaps.max() * 1e3:.0f} ms; {video.handovers} handovers")
            assert video.handovers == 2
            # live: the session's own render of the same cast on the same face, at the same place in the title
            assert max(live_scores) < 45 and min(live_scores) > 25
            assert all(s > 45 for s in back_scores[-15:])  # relayed again, exactly, once its keyframe came
            assert gaps.max() < 0.3  # no freeze at either handover

    run_async(scenario, timeout=60)


def test_a_rendition_truncated_while_relayed_hands_the_viewer_to_the_live_path(cache: Path, tmp_path: Path) -> None:
    """The cast's rendition cut in half on disk under a relayed viewer (an edit in place, not the cache's rename):
    it is never read again, the viewer's picture goes on from the live path, and the refusal is logged and
    counted in /metrics; a title whose rendition fails its checksum at start plays live and is counted too."""
    shutil.copytree(cache, tmp_path / "cache")
    folder = tmp_path / "cache" / "titles" / "d20" / "renditions"
    titles = scan_titles(None, None, TitleCache(tmp_path / "cache"), loop=True)
    assert titles["d20"].renditions is not None

    async def scenario() -> None:
        async with serving(titles, ServerConfig(demo=True)) as (base, _, http):
            viewer = Viewer(base, http)
            await viewer.connect({"title": "d20"})
            assert len(await viewer.frames(10)) == 10
            assert (await viewer.control({"type": "state"}))["path"] == "relay"
            with (folder / "cast-hopper.h264").open("r+b") as rendition:
                rendition.truncate(rendition.seek(0, 2) // 2)
            after = await viewer.frames(40)
            assert len(after) == 40 and all(f.width == 480 for f in after)  # type: ignore[attr-defined]
            assert (await viewer.control({"type": "state"}))["path"] == "live"
            _, metrics = await viewer.call("GET", "/metrics")
            assert 'recast_renditions_refused_total{reason="changed",title="d20"} 1' in metrics
            await viewer.close()

    run_async(scenario, timeout=60)
    rescanned = scan_titles(None, None, TitleCache(tmp_path / "cache"), loop=True)
    assert rescanned["d20"].prebaked and rescanned["d20"].renditions is None  # fails its checksum: plays live


def test_recast_bench_relay_measures_relayed_viewers_against_a_live_one(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`recast bench --only relay`: the viewers were relayed and the live one was not, a relayed viewer costs a
    small part of a live one (about 1/100 on a 2-core EPYC; asserted at 1/5), and each toggle took effect within
    a GOP and the trip (0.5 s; asserted under 1.5 s)."""
    out = tmp_path / "bench.json"
    assert main(["bench", "--only", "relay", str(CLIP), "--viewers", "2", "--seconds", "5",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())["relay"]
    assert result["relayed"]["path"] == ["relay"] and result["live"]["path"] == ["live"]
    assert result["renditions"] == ["cast-collins", "cast-hopper", "original"]
    assert result["live_over_relayed"] > 5, result
    assert result["relayed"]["fps_least"] > 20, result  # 25 fps, relayed at the title's pace
    assert result["toggle"]["toggles"] == 10 and result["toggle"]["delay_ms_max"] < 1500, result
    assert "viewers a core" in capsys.readouterr().out


def test_a_whep_player_of_a_baked_title_is_relayed(cache: Path) -> None:
    """WHEP (stream/server/whep.py) on a title with renditions: the player's session is relayed, its picture the
    cast rendition's own, and `?recast=0` starts it on the original."""
    from stream.server.clients import WhepViewer

    titles = scan_titles(None, None, TitleCache(cache), loop=True)
    recast = decoded_h264(cache / "titles" / "d20" / "renditions" / "cast-hopper.h264")
    original = decoded_h264(cache / "titles" / "d20" / "renditions" / "original.h264")

    async def scenario() -> None:
        async with serving(titles, ServerConfig(demo=True)) as (base, _, http):
            player = WhepViewer(base, http)
            await player.connect("d20", trickle=True)
            assert (await player.control({"type": "state"}))["path"] == "relay"
            assert min(_matches((await player.frames(20))[5:], recast)) > 45
            off = WhepViewer(base, http)
            await off.connect("d20", "recast=0")
            assert min(_matches((await off.frames(20))[5:], original)) > 45
            for each in (player, off):
                await each.delete()
                await each.close()

    run_async(scenario, timeout=60)
