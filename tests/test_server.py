"""`recast serve` with real aiortc clients on 127.0.0.1: the API, title and camera sessions, the toggle, the control
channel, safety (keys, ids, sizes, limits, hostile peers) and clean endings."""

from __future__ import annotations

import asyncio
import fractions
import gc
import itertools
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack

from stream.cli.demo_title import demo_title_path
from stream.media.sinks import first_seconds
from stream.media.sources import MediaSource
from stream.media.watermark import read_frames
from stream.server.clients import Viewer
from stream.server.service import CLEANUP_DELAY_S, SERVICE, ServerConfig
from stream.server.titles import scan_titles
from tests.conftest import media, psnr
from tests.demo_title import DemoTitle
from tests.webrtc_client import run_async, serving

KEY = "k" * 24
OTHER_KEY = "o" * 24


def _compare(frames: list[av.VideoFrame], demo: DemoTitle) -> tuple[float, float]:
    """Mean PSNR inside and outside the face against the source frame with the same timestamp."""
    ins, outs = [], []
    for frame in frames:
        index = round(float(frame.pts * frame.time_base) * demo.fps)
        if index not in demo.boxes or index >= len(demo.frames):
            continue
        face, rest = demo.face_and_rest(frame.to_ndarray(format="rgb24"), index)
        ins.append(face)
        outs.append(rest)
    assert len(ins) >= 5
    return float(np.mean(ins)), float(np.mean(outs))


@pytest.mark.parametrize(("codec", "encoder", "packets"), [
    ("video/VP8", "webrtc", None), ("video/H264", "webrtc", None), (None, "libx264", "libx264"),
    ("video/VP8", "libx264", "libvpx"), (None, "libvpx", "libvpx")])
def test_title_session_toggle_changes_only_the_face(demo: DemoTitle, codec: str | None, encoder: str,
                                                    packets: str | None) -> None:
    """The toggle, the audio in step, and the metrics, for each codec the viewer may ask for, with aiortc encoding
    (webrtc) or the session (packets sent as they are: `packets` is the session's encoder, chosen from an offer of
    every codec aiortc has, VP8 first, or of VP8 only)."""
    async def scenario() -> None:
        config = ServerConfig(demo=True, video_encoder=encoder)
        async with serving(demo.titles, config) as (base, app, http):
            status, titles = await Viewer(base, http).call("GET", "/api/titles")
            assert status == 200 and titles[0]["id"] == "demo" and titles[0]["casts"] == ["hopper"]
            viewer = Viewer(base, http)
            await viewer.connect({"title": "demo"}, codec=codec)
            assert viewer.audio is not None  # the title's audio track is negotiated too
            track = next(t for t in app[SERVICE].sessions[viewer.session].tracks if t.kind == "video")
            assert (track.encoder.codec if track.encoder else None) == packets
            answered = viewer.pc.remoteDescription.sdp.split("m=video")[1].split("a=rtpmap:")[1].split()[1]
            assert answered == {"libx264": "H264/90000", "libvpx": "VP8/90000"}.get(packets or "", answered)
            on, skews = await viewer.frames(10), []  # the first frames of a cold session run slow
            for _ in range(5):
                on += await viewer.frames(5)
                skews.append(app[SERVICE].sessions[viewer.session].clock.skew_ms())
            sound = [await asyncio.wait_for(viewer.audio.recv(), 10) for _ in range(10)]
            delay = app[SERVICE].sessions[viewer.session].clock.video_delay_s * 1e3
            print(f"{codec}: video minus audio lateness at send {skews} ms; audio held back {delay:.0f} ms")
            # the title's audio arrives (Opus, 48 kHz) and leaves the server in step with the video: the median
            # gap between their lateness against the session clock stays within 40 ms (a frame and a bit)
            assert all(s.sample_rate == 48000 and s.samples > 0 for s in sound)
            assert None not in skews and abs(float(np.median(skews))) < 40
            state = await viewer.control({"type": "recast", "enabled": False})
            assert state["type"] == "state" and state["enabled"] is False and state["frame"] > 0
            await viewer.frames(3)  # frames already handed to the encoder before the toggle
            off = await viewer.frames(25)
            state = await viewer.control({"type": "recast", "enabled": True})
            await viewer.frames(3)
            on_again = await viewer.frames(60)  # the mark is read over a window of frames: aiortc's VP8 denoises
            # the invisible mark on every recast picture (around the face), on none of the original's
            recast_marks, _ = read_frames([f.to_ndarray(format="rgb24") for f in on[5:] + on_again])
            original_marks, _ = read_frames([f.to_ndarray(format="rgb24") for f in off])
            scores = [v.z for v in recast_marks]
            print(f"{codec} {encoder}: the mark's windows score {min(scores):.1f}-{max(scores):.1f}")
            # windows score 24-26 over aiortc's own VP8 (its denoiser freezes small changes: the mark is strongest
            # where the picture is busy), 28-36 over the session's encoders; unmarked 4-5
            assert sum(v.marked for v in recast_marks) >= 0.9 * len(recast_marks)
            assert not any(v.marked for v in original_marks)
            face_on, rest_on = _compare(on[5:], demo)
            face_off, rest_off = _compare(off, demo)
            face_again, _ = _compare(on_again, demo)
            print(f"{codec}: face on {face_on:.1f} off {face_off:.1f} again {face_again:.1f}; "
                  f"rest on {rest_on:.1f} off {rest_off:.1f} dB")
            # off: the whole picture is the original (through two lossy encodes); on: the face differs, the rest not
            assert face_off > 28 and rest_off > 28
            assert face_on < face_off - 6 and face_again < face_off - 6
            # the rest changes by the invisible mark alone (36-37 dB on its own on the demo title's busy picture),
            # which a faithful encode keeps: 2.5-4.7 dB
            assert rest_on > 30 and rest_off - rest_on < 8
            _, text = await viewer.call("GET", "/metrics")
            assert f'recast_frames_out_total{{session="{viewer.session}"}}' in text
            assert 'recast_sessions{kind="title"} 1' in text
            status, _ = await viewer.call("DELETE", f"/api/sessions/{viewer.session}")
            assert status == 204
            await viewer.close()
            assert app[SERVICE].sessions == {}
            _, text = await viewer.call("GET", "/metrics")
            assert 'recast_sessions{kind="title"} 0' in text and viewer.session not in text

    run_async(scenario)


def test_control_messages_are_validated_and_the_session_stays_up(demo: DemoTitle) -> None:
    async def scenario() -> None:
        async with serving(demo.titles) as (base, _, http):
            viewer = Viewer(base, http)
            await viewer.connect({"title": "demo"})
            bad: list[tuple[Any, bool, str]] = [
                ("not json", True, "bad_json"),
                (b"\x00\x01binary", True, "bad_message"),
                ("x" * 5000, True, "too_large"),
                ([1, 2], False, "bad_message"),
                ({"type": "launch"}, False, "unknown_type"),
                ({"type": "recast", "enabled": "yes"}, False, "bad_message"),
                ({"type": "cast", "track": "all", "cast": "../../etc/passwd"}, False, "unknown_cast"),
                ({"type": "cast", "track": -1, "cast": "hopper"}, False, "bad_message"),
                ({"type": "edit", "direction": "age", "factor": 2.0}, False, "not_baked"),
            ]
            for message, raw, code in bad:
                reply = await viewer.control(message, raw=raw)
                assert reply["type"] == "error" and reply["error"] == code, (message, reply)
            ok = await viewer.control({"type": "cast", "track": 0, "cast": "hopper"})
            assert ok["type"] == "state" and ok["tracks"] == {"0": "hopper"}
            assert len(await viewer.frames(10)) == 10  # still streaming
            await viewer.close()

    run_async(scenario)


def test_keys_ids_sizes_and_limits(demo: DemoTitle) -> None:
    async def scenario() -> None:
        config = ServerConfig(api_keys=(KEY, OTHER_KEY), max_sessions=3, sessions_per_minute=4)
        async with serving(demo.titles, config) as (base, app, http):
            anon, wrong = Viewer(base, http), Viewer(base, http, key="w" * 24)
            alice, bob = Viewer(base, http, key=KEY), Viewer(base, http, key=OTHER_KEY)
            assert (await anon.call("GET", "/healthz")) == (200, {"status": "ok"})
            for who in (anon, wrong):
                status, body = await who.call("GET", "/api/titles")
                assert status == 401 and body["error"] == "unauthorized"
                assert (await who.call("POST", "/api/sessions", {"title": "demo"}))[0] == 401
                assert (await who.call("GET", "/metrics"))[0] == 401
            assert (await alice.call("GET", "/api/titles"))[0] == 200
            for title in ("../../etc/passwd", "demo/../demo", "", "x" * 200, "nope"):
                status, body = await alice.call("POST", "/api/sessions", {"title": title})
                assert status == 404 and body["error"] == "unknown_title"
            for body in ([], "demo", {"title": 3}, {"title": "demo", "camera": True}, {}):
                assert (await alice.call("POST", "/api/sessions", body))[0] == 400
            async with http.post(base + "/api/sessions", data=b"{" * 300_000, headers=alice.headers()) as r:
                assert r.status == 413
            # a malformed SDP is refused, its session ends, and the server carries on
            status, created = await alice.call("POST", "/api/sessions", {"title": "demo"})
            sid = created["session"]
            status, body = await alice.call("POST", f"/api/sessions/{sid}/offer", {"sdp": "v=0\r\nnonsense",
                                                                                   "type": "offer"})
            assert status == 400 and body["error"] == "bad_sdp" and sid not in app[SERVICE].sessions
            status, body = await alice.call("POST", f"/api/sessions/{sid}/offer", {"sdp": "hello", "type": "answer"})
            assert status == 404
            # bob cannot touch alice's session
            good = Viewer(base, http, key=KEY)
            await good.connect({"title": "demo"})
            assert (await bob.call("DELETE", f"/api/sessions/{good.session}"))[0] == 404
            assert len(await good.frames(5)) == 5
            # the session cap, then the per-key rate limit (alice has used 3 of her 4 per minute)
            status, created = await alice.call("POST", "/api/sessions", {"title": "demo"})
            assert status == 201
            status, _ = await bob.call("POST", "/api/sessions", {"title": "demo"})
            assert status == 201
            status, body = await bob.call("POST", "/api/sessions", {"title": "demo"})
            assert status == 503 and body["error"] == "busy"
            await alice.call("DELETE", f"/api/sessions/{created['session']}")
            status, body = await alice.call("POST", "/api/sessions", {"title": "demo"})
            assert status == 201
            await alice.call("DELETE", f"/api/sessions/{body['session']}")
            status, body = await alice.call("POST", "/api/sessions", {"title": "demo"})
            assert status == 429 and body["error"] == "rate_limited"
            assert len(await good.frames(5)) == 5  # the other viewer never noticed
            await good.close()

    run_async(scenario)


class FileTrack(MediaStreamTrack):
    """A camera stand-in: frames of a real clip at its frame rate."""

    kind = "video"

    def __init__(self, path: Path, fps: int = 25) -> None:
        super().__init__()
        with MediaSource(path, keep_audio=False) as source:
            self.images = [f.image for _, f in zip(range(100), source.frames(), strict=False)]
        self.index, self.fps, self.start = 0, fps, 0.0

    async def recv(self) -> av.VideoFrame:
        if self.index == 0:
            self.start = time.monotonic()
        due = self.start + self.index / self.fps
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        image = self.images[self.index % len(self.images)]
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = self.index, fractions.Fraction(1, self.fps)
        self.index += 1
        return frame


def test_camera_session_recasts_the_viewers_video() -> None:
    async def scenario() -> None:
        titles = scan_titles(None, demo_title_path())
        async with serving(titles) as (base, app, http):
            camera = FileTrack(media("videos/liveportrait_d20.mp4"))
            viewer = Viewer(base, http)
            await viewer.connect({"camera": True}, send=camera)
            frames = await viewer.frames(40)
            assert frames[-1].width == 480 and frames[-1].height == 480
            await viewer.control({"type": "recast", "enabled": False})
            await viewer.frames(5)
            plain = await viewer.frames(10)
            # recast frames differ from every camera frame far more than the plain ones do, in the middle of the
            # picture where the face is (the rest is the camera's own in both)

            def best(frame: av.VideoFrame) -> float:
                image = frame.to_ndarray(format="rgb24")
                h, w = image.shape[:2]
                middle = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))
                return max(psnr(image[middle], src[middle]) for src in camera.images)  # it loops over them

            recast_scores = [best(f) for f in frames[-5:]]
            plain_scores = [best(f) for f in plain[-5:]]
            print(f"camera session: plain {np.mean(plain_scores):.1f} dB, recast {np.mean(recast_scores):.1f} dB")
            assert np.mean(plain_scores) > np.mean(recast_scores) + 3
            service = app[SERVICE]
            sid = viewer.session
            assert service.metrics.frames_in.value(session=sid) >= 40
            await viewer.close()
            for _ in range(100):  # the peer hung up without DELETE: the server notices and cleans up
                if sid not in service.sessions:
                    break
                await asyncio.sleep(0.1)
            assert sid not in service.sessions

    run_async(scenario)


def test_shutdown_ends_sessions_and_threads(demo: DemoTitle) -> None:
    before = {t.name for t in threading.enumerate()}

    async def scenario() -> None:
        async with serving(demo.titles, ServerConfig(demo=True, offer_timeout_s=1.0)) as (base, app, http):
            viewers = [Viewer(base, http) for _ in range(2)]
            for v in viewers:
                await v.connect({"title": "demo"})
                await v.frames(3)
            idle = Viewer(base, http)
            _, created = await idle.call("POST", "/api/sessions", {"title": "demo"})
            await asyncio.sleep(2.5)  # never sends an offer: reaped after offer_timeout_s
            assert created["session"] not in app[SERVICE].sessions
            assert len(app[SERVICE].sessions) == 2
            service = app[SERVICE]
        # leaving the context ran the app's shutdown
        assert service.sessions == {}
        for v in viewers:
            await v.close()

    run_async(scenario)
    time.sleep(0.5)
    leftover = {t.name for t in threading.enumerate()} - before
    assert not any(name.startswith(("title-", "camera-")) for name in leftover), leftover


def test_an_ended_session_is_freed_by_the_server(demo: DemoTitle) -> None:
    """A closed session is garbage in reference cycles (aiortc's peer connection, event handlers) that hold codec
    contexts and decoded frames; the server collects them itself shortly after the session ends. With automatic
    collection off, only that can free them: before it did, the soak grew about 1 MB per session."""

    async def scenario() -> None:
        async with serving(demo.titles) as (base, app, http):
            viewer = Viewer(base, http)
            await viewer.connect({"title": "demo"})
            await viewer.frames(10)
            session = app[SERVICE].sessions[viewer.session]
            held = [weakref.ref(x) for x in (session, session.pc, *session.tracks, session.tracks[0].processor)]
            del session
            await viewer.call("DELETE", f"/api/sessions/{viewer.session}")
            await viewer.close()
            await asyncio.sleep(CLEANUP_DELAY_S + 1.0)
            alive = [type(r()).__name__ for r in held if r() is not None]
            assert alive == [], f"still alive after the server's clean-up: {alive}"

    gc.collect()
    gc.disable()
    try:
        run_async(scenario)
    finally:
        gc.enable()


def test_a_title_that_ends_says_so_and_ends_its_session(tmp_path: Path) -> None:
    """Played once, a title's end is told on the control channel (a `state` with "ended": true and the reason);
    the server then ends the session and counts how it ended."""
    first_seconds(demo_title_path(), tmp_path / "short.mp4", 1.0)
    titles = scan_titles(tmp_path, None)
    assert not titles["short"].loop

    async def scenario() -> None:
        async with serving(titles) as (base, app, http):
            viewer = Viewer(base, http)
            await viewer.connect({"title": "short"})
            began = time.monotonic()
            ended = None
            while ended is None and time.monotonic() - began < 15:
                message = await asyncio.wait_for(viewer.replies.get(), 15)
                ended = message if message.get("ended") else None
            assert ended is not None and ended["type"] == "state" and ended["reason"] == "title_ended", ended
            told = time.monotonic()
            while time.monotonic() - told < 6 and "title_ended" not in app[SERVICE].metrics.render():
                await asyncio.sleep(0.1)
            assert viewer.session not in app[SERVICE].sessions
            text = app[SERVICE].metrics.render()
            assert any(line.startswith("recast_sessions_total{") and 'ended="title_ended"' in line
                       and line.endswith(" 1") for line in text.splitlines()), text
            await viewer.close()

    run_async(scenario)


def test_a_looped_title_plays_on_past_its_end(tmp_path: Path) -> None:
    """On repeat (the demo title, `--loop`), a 1 s title keeps sending: video and audio timestamps run on across
    passes and the session stays up."""
    first_seconds(demo_title_path(), tmp_path / "short.mp4", 1.0)
    titles = scan_titles(tmp_path, None, loop=True)
    assert titles["short"].loop

    async def scenario() -> None:
        async with serving(titles) as (base, app, http):
            viewer = Viewer(base, http)
            await viewer.connect({"title": "short"})
            assert viewer.audio is not None
            frames = await viewer.frames(60, timeout=10)  # 2.4 s at 25 fps: over two passes
            times = [float(f.pts * f.time_base) for f in frames]
            assert all(b > a for a, b in itertools.pairwise(times)), "timestamps must run on"
            assert times[-1] - times[0] > 1.8
            sound = [await asyncio.wait_for(viewer.audio.recv(), 10) for _ in range(120)]  # 2.4 s of 20 ms frames
            assert len(sound) == 120
            assert viewer.session in app[SERVICE].sessions
            assert viewer.replies.empty() or not any(m.get("ended") for m in list(viewer.replies._queue))
            await viewer.close()

    run_async(scenario)


def test_a_looped_baked_title_finds_its_tracks_by_the_frame_of_the_pass() -> None:
    """On repeat, frame indices run on across passes; a baked title's tracks are found by the frame of the pass."""
    from fractions import Fraction

    from stream.media.sources import Frame
    from stream.perception.face_stage import BakedFaceStage

    first, second = [object()], [object()]
    stage = BakedFaceStage({0: first, 1: second})  # type: ignore[dict-item]
    image = np.zeros((2, 2, 3), np.uint8)
    assert stage.push(Frame(3, 3, Fraction(1, 25), image))[0][1] == []  # played once: past the bake, no faces
    stage.cycle = 2
    assert stage.push(Frame(3, 3, Fraction(1, 25), image))[0][1] is second
    assert stage.push(Frame(4, 4, Fraction(1, 25), image))[0][1] is first


def test_a_stuck_pipeline_is_told_on_the_control_channel_and_ended(demo: DemoTitle) -> None:
    """A session whose media pipeline hangs (a native call that never returns: here the renderer, held on an
    event) sends no frame; after STALL_S its viewer gets an `error` with code `stalled` on the control channel and
    the session ends (`state` with "ended": true); the service counts it, and a gateway takes such a worker for
    hung."""
    from stream.server.sessions import STALL_S

    release = threading.Event()

    async def scenario() -> None:
        async with serving(demo.titles) as (base, app, http):
            viewer = Viewer(base, http)
            await viewer.connect({"title": "demo"})
            await viewer.frames(10)
            processor = app[SERVICE].sessions[viewer.session].tracks[0].processor
            draw = processor.render

            def stuck(*args: Any) -> Any:
                release.wait()
                return draw(*args)

            processor.render = stuck
            began = time.monotonic()
            replies: list[dict[str, Any]] = []
            while not any(r.get("ended") for r in replies) and time.monotonic() - began < STALL_S + 10:
                replies.append(await asyncio.wait_for(viewer.replies.get(), STALL_S + 10))
            errors = [r for r in replies if r.get("type") == "error"]
            assert errors and errors[0]["error"] == "stalled", replies
            assert replies[-1].get("ended") and replies[-1]["reason"] == "stalled"
            assert time.monotonic() - began >= STALL_S - 0.5
            await asyncio.sleep(1.0)
            assert viewer.session not in app[SERVICE].sessions and app[SERVICE].stalled == 1
            await viewer.close()

    try:
        run_async(scenario)
    finally:
        release.set()
