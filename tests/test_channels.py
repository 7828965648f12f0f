"""Live channels (stream/server/channels.py, whip.py) with real aiortc peers on 127.0.0.1: a WHIP publisher streams
a clip with a face, WHEP players and session API viewers watch it recast, once per choice; the publisher leaving,
coming back, and what WHIP refuses."""

from __future__ import annotations

import asyncio
import fractions
import statistics
import time
from collections.abc import Callable

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from stream.casts.cast import collins_cast, hopper_cast
from stream.media.watermark import read_frames
from stream.server import channels
from stream.server.clients import ClipTrack, Viewer, ViewerError, WhepViewer, WhipPublisher, read_stamp
from stream.server.service import SERVICE, ServerConfig
from tests.conftest import media, psnr
from tests.demo_title import DemoTitle
from tests.webrtc_client import run_async, serving

CLIP = media("videos/liveportrait_d20.mp4")  # 480x480, 25 fps, one face in the middle
KEY, PUBLISH_KEY = "v" * 24, "p" * 24


def _face(image: np.ndarray) -> np.ndarray:
    return image[140:340, 140:340]  # d20's face, well inside the frame


async def _received(player: WhepViewer | Viewer, clip: ClipTrack, count: int,
                    pictures: list[np.ndarray] | None = None) -> tuple[list[float], list[float]]:
    """`count` pictures: the trip of each from the publisher's send (ms), and the face's PSNR against the frame
    sent; the pictures themselves into `pictures` when given."""
    trips, faces = [], []
    for _ in range(200):  # what waited in the player's queue while the test read another: not a trip's measure
        began = time.monotonic()
        await player.frames(1)
        if time.monotonic() - began > 0.015:
            break
    for _ in range(count):
        frame = (await player.frames(1))[0]  # timed as it arrives
        image = frame.to_ndarray(format="rgb24")
        if pictures is not None:
            pictures.append(image)
        number = read_stamp(image)
        if number in clip.sent and number < clip.number:
            trips.append((time.monotonic() - clip.sent[number]) * 1e3)
            faces.append(psnr(_face(image), _face(clip.images[number % len(clip.images)])))
    assert len(trips) >= count // 2, f"only {len(trips)} of {count} stamps read"
    return trips, faces


async def _until(condition: Callable[[], bool], seconds: float = 3.0) -> bool:
    for _ in range(round(seconds / 0.05)):
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


def test_a_published_channel_is_recast_once_per_choice_for_its_viewers(demo: DemoTitle) -> None:
    """Three WHEP players and a session API viewer: the recast ones see the face changed, the one with the recast
    off sees the publisher's picture; two choices are drawn for four viewers; a player that changes its choice
    moves to the other stream; the publisher-to-viewer trip is measured; then the publisher leaves and every
    viewer is told the channel ended."""
    async def scenario() -> None:
        async with serving(demo.titles, ServerConfig(demo=True), casts=[hopper_cast(), collins_cast()]) as (
                base, app, http):
            clip = ClipTrack(str(CLIP))
            publisher = WhipPublisher(base, http)
            await publisher.publish("live1", clip, trickle=True)
            _status, titles = await Viewer(base, http).call("GET", "/api/titles")
            live = next(t for t in titles if t["id"] == "live1")
            assert live["live"] is True and live["publishing"] is True and live["casts"] == ["hopper", "collins"]
            players = [WhepViewer(base, http) for _ in range(3)]
            await players[0].connect("live1", trickle=True)
            await players[1].connect("live1")
            await players[2].connect("live1", "recast=0")
            session_viewer = Viewer(base, http)
            await session_viewer.connect({"title": "live1"})
            channel = app[SERVICE].channels["live1"]
            await asyncio.sleep(1.0)  # the tracker finds the face
            pictures: list[list[np.ndarray]] = [[] for _ in range(4)]
            (on_trips, on_faces), _, (off_trips, off_faces), (_, api_faces) = await asyncio.gather(
                *(_received(p, clip, 30, seen) for p, seen in zip([*players, session_viewer], pictures, strict=True)))
            print(f"trip publisher to viewer: median {statistics.median(on_trips):.0f} ms (recast), "
                  f"{statistics.median(off_trips):.0f} ms (original); face {np.median(on_faces):.1f} dB recast, "
                  f"{np.median(off_faces):.1f} dB original")
            assert np.median(off_faces) > 28 and np.median(on_faces) < np.median(off_faces) - 6
            assert np.median(api_faces) < np.median(off_faces) - 6
            # the invisible mark on every recast picture (around the face), on none of the original's
            recast_marks, _ = read_frames(pictures[0])
            original_marks, _ = read_frames(pictures[2])
            assert all(v.marked for v in recast_marks) and not any(v.marked for v in original_marks)
            assert len(channel.streams) == 2 and channel.viewer_count() == 4  # the original and hopper, once each
            assert statistics.median(on_trips) < 500  # loopback, 4 viewers and the publisher in one process: 190 ms
            await players[1].control({"type": "cast", "track": "all", "cast": "collins"})
            assert await _until(lambda: len(channel.streams) == 3)  # at the player's next frame
            await players[1].control({"type": "recast", "enabled": False})
            assert await _until(lambda: len(channel.streams) == 2)  # collins is drawn no more
            assert await publisher.delete() == 200
            for player in players:
                ended = await player.replies.get()
                while not ended.get("ended"):
                    ended = await player.replies.get()
                assert ended["reason"] == "channel_ended"
            await asyncio.sleep(0.6)
            assert not app[SERVICE].sessions and "live1" not in app[SERVICE].channels
            for peer in [*players, session_viewer, publisher]:
                await peer.close()

    run_async(scenario)


def test_a_publisher_that_drops_and_comes_back_resumes_its_channel(demo: DemoTitle) -> None:
    """The publisher's connection closes without a DELETE: the viewer stays; a second publisher is refused (409)
    while the first is connected; a new publisher within the wait resumes the channel for the viewer."""
    async def scenario() -> None:
        async with serving(demo.titles, ServerConfig(demo=True)) as (base, app, http):
            first = WhipPublisher(base, http)
            await first.publish("live2", ClipTrack(str(CLIP)))
            player = WhepViewer(base, http)
            await player.connect("live2")
            assert len(await player.frames(10)) == 10
            with pytest.raises(ViewerError, match="409"):
                await WhipPublisher(base, http).publish("live2", ClipTrack(str(CLIP)))
            await first.close()  # gone without a word
            channel = app[SERVICE].channels["live2"]
            assert await _until(lambda: channel.interrupted_at is not None, 5.0)
            assert channel.interrupted_at is not None and player.resource.rsplit("/", 1)[1] in app[SERVICE].sessions
            clip = ClipTrack(str(CLIP))
            second = WhipPublisher(base, http)
            await second.publish("live2", clip)
            _trips, _ = await _received(player, clip, 20)  # the second publisher's frames reach the same viewer
            assert channel.interrupted_at is None and app[SERVICE].channels["live2"] is channel
            assert await second.delete() == 200
            await player.close()
            await second.close()

    run_async(scenario)


def test_whip_refuses_what_it_cannot_use(demo: DemoTitle) -> None:
    """No publish key (401), a viewing key (401), a publish key cannot view (401); an offer without video (400),
    with no codec the server decodes (406), a name that is a title (409); a WHEP player of no channel (404)."""
    async def scenario() -> None:
        config = ServerConfig(api_keys=(KEY,), publish_keys=(PUBLISH_KEY,))
        async with serving(demo.titles, config) as (base, _app, http):
            for key in ("", KEY):
                with pytest.raises(ViewerError, match="401"):
                    await WhipPublisher(base, http, key=key).publish("live3", ClipTrack(str(CLIP), 0.2))
            audio_only = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
                          "c=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n"
                          "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
                          "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n")
            headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {PUBLISH_KEY}"}
            async with http.post(f"{base}/whip/live3", data=audio_only, headers=headers) as r:
                assert r.status == 400 and "video" in await r.text()
            av1_only = audio_only.replace("m=audio 9 UDP/TLS/RTP/SAVPF 111", "m=video 9 UDP/TLS/RTP/SAVPF 45") \
                .replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:45 AV1/90000")
            async with http.post(f"{base}/whip/live3", data=av1_only, headers=headers) as r:
                assert r.status == 406, await r.text()
            async with http.post(f"{base}/whip/demo", data=av1_only, headers=headers) as r:
                assert r.status in (406, 409)  # its codec or its name: refused either way
            publisher = WhipPublisher(base, http, key=PUBLISH_KEY)
            await publisher.publish("live3", ClipTrack(str(CLIP), 0.5))
            with pytest.raises(ViewerError, match="401"):
                await WhepViewer(base, http, key=PUBLISH_KEY).connect("live3")
            with pytest.raises(ViewerError, match="404"):
                await WhepViewer(base, http, key=KEY).connect("nochannel")
            player = WhepViewer(base, http, key=KEY)
            await player.connect("live3")
            assert len(await player.frames(5)) == 5
            assert await publisher.delete() == 200
            await player.close()
            await publisher.close()

    run_async(scenario)


def test_a_channel_through_the_gateway_and_its_workers() -> None:
    """`recast serve --demo` with its workers: the publisher is placed on a worker, the channel is listed by the
    gateway once that worker reports it, its viewers (WHEP and the session API) go to that worker, and the
    publisher's DELETE ends them."""
    import aiohttp

    from stream.cli.serve_process import recast_serve_demo

    async def scenario() -> None:
        with recast_serve_demo() as server:
            async with aiohttp.ClientSession() as http:
                clip = ClipTrack(str(CLIP))
                publisher = WhipPublisher(server.base, http)
                await publisher.publish("live4", clip, trickle=True)
                listed: list[dict[str, object]] = []
                for _ in range(40):
                    async with http.get(f"{server.base}/api/titles") as r:
                        listed = [t for t in await r.json() if t["id"] == "live4"]
                    if listed:
                        break
                    await asyncio.sleep(0.1)
                assert listed and listed[0]["live"] is True
                player, viewer = WhepViewer(server.base, http), Viewer(server.base, http)
                await player.connect("live4")
                await viewer.connect({"title": "live4"})
                trips, _ = await _received(player, clip, 20)
                await _received(viewer, clip, 10)
                print(f"through the gateway: trip {statistics.median(trips):.0f} ms")
                async with http.get(f"{server.base}/healthz") as r:
                    assert (await r.json())["sessions"] == 2
                assert await publisher.delete() == 200
                ended = await player.replies.get()
                while not ended.get("ended"):
                    ended = await player.replies.get()
                assert ended["reason"] == "channel_ended"
                for peer in (player, viewer, publisher):
                    await peer.close()

    run_async(scenario, timeout=120)


def test_ten_whep_players_of_one_channel_share_its_picture_and_toggle_alone() -> None:
    """Ten aiortc WHEP players of a channel published to `recast serve --demo` (gateway and workers): each sees the
    recast face; one turns the recast off and sees the publisher's face while the nine others stay recast; the
    channel draws two choices for the ten."""
    import aiohttp

    from stream.cli.serve_process import recast_serve_demo

    async def scenario() -> None:
        with recast_serve_demo("--max-sessions", "16") as server:
            async with aiohttp.ClientSession() as http:
                clip = ClipTrack(str(CLIP))
                publisher = WhipPublisher(server.base, http)
                await publisher.publish("live5", clip)
                await asyncio.sleep(0.5)
                players = [WhepViewer(server.base, http) for _ in range(10)]
                await asyncio.gather(*(p.connect("live5") for p in players))
                await asyncio.sleep(1.0)
                recast = await asyncio.gather(*(_received(p, clip, 10) for p in players))
                await players[0].control({"type": "recast", "enabled": False})
                await asyncio.sleep(0.5)
                after = await asyncio.gather(*(_received(p, clip, 10) for p in players[:3]))
                faces = [float(np.median(f)) for _, f in recast]
                print(f"10 players: face {min(faces):.1f}-{max(faces):.1f} dB recast; the one with the recast off "
                      f"{np.median(after[0][1]):.1f} dB, two others {np.median(after[1][1]):.1f}, "
                      f"{np.median(after[2][1]):.1f} dB")
                assert max(faces) < 28 < np.median(after[0][1])
                assert np.median(after[1][1]) < 28 and np.median(after[2][1]) < 28
                async with http.get(f"{server.base}/api/titles") as r:
                    channel = next(t for t in await r.json() if t["id"] == "live5")
                assert channel["viewers"] == 10 and channel["choices"] == 2
                assert await publisher.delete() == 200
                for peer in [*players, publisher]:
                    await peer.close()

    run_async(scenario, timeout=150)


class _Garbage(MediaStreamTrack):
    """A publisher's video that is noise: random bytes sent as H.264 packets (aiortc packs them as they are)."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def recv(self) -> av.Packet:
        await asyncio.sleep(0.04)
        packet = av.Packet(b"\x00\x00\x00\x01" + np.random.default_rng(self.count).bytes(1500))
        packet.pts, packet.time_base = self.count * 3600, fractions.Fraction(1, 90000)
        self.count += 1
        return packet


class _Silent(MediaStreamTrack):
    """A publisher's video that stops: frames for a moment, then none, its connection left open."""

    kind = "video"

    def __init__(self, clip: ClipTrack, frames: int) -> None:
        super().__init__()
        self.clip, self.frames = clip, frames

    async def recv(self) -> av.VideoFrame:
        if self.clip.number >= self.frames:
            await asyncio.Event().wait()  # never again
        return await self.clip.recv()


def test_a_publisher_of_noise_or_silence_ends_its_channel_and_nothing_else(demo: DemoTitle,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """One publisher sends random bytes as H.264, another stops sending with its connection open: each channel is
    taken for gone after the stall time and ended after the wait (shortened here to 1 s and 1.5 s), its viewer
    told; a third channel's viewer and a title's viewer play on throughout."""
    from aiortc.rtcrtpsender import RTCRtpSender

    monkeypatch.setattr(channels, "STALL_S", 1.0)
    monkeypatch.setattr(channels, "RECONNECT_S", 1.5)

    async def scenario() -> None:
        async with serving(demo.titles, ServerConfig(demo=True)) as (base, app, http):
            noise = WhipPublisher(base, http)
            h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"]
            noise.pc.addTransceiver(_Garbage(), direction="sendonly").setCodecPreferences(h264)
            await noise.publish_prepared("noise")
            silent = WhipPublisher(base, http)
            await silent.publish("silent", _Silent(ClipTrack(str(CLIP), 1.0), 30))
            good_clip = ClipTrack(str(CLIP))
            good = WhipPublisher(base, http)
            await good.publish("good", good_clip)
            watcher = WhepViewer(base, http)
            await watcher.connect("silent")
            title_viewer = Viewer(base, http)
            await title_viewer.connect({"title": "demo"})
            good_viewer = WhepViewer(base, http)
            await good_viewer.connect("good")
            assert await _until(lambda: not {"noise", "silent"} & set(app[SERVICE].channels), 10.0)
            ended = await watcher.replies.get()
            while not ended.get("ended"):
                ended = await watcher.replies.get()
            assert ended["reason"] == "channel_ended"
            assert len(await title_viewer.frames(10)) == 10
            await _received(good_viewer, good_clip, 10)
            assert "good" in app[SERVICE].channels
            for peer in (noise, silent, good, watcher, title_viewer, good_viewer):
                await peer.close()

    run_async(scenario)


def test_a_viewer_that_falls_behind_skips_to_a_keyframe_and_asks_for_one() -> None:
    """A viewer's packet queue (channels.PacketQueue) past VIEWER_QUEUE packets: emptied, the overflow told once
    (the choice's stream is asked for a keyframe), and the next packets kept; the producer never waits."""
    async def scenario() -> None:
        overflowed: list[int] = []
        queue = channels.PacketQueue(lambda: overflowed.append(1))
        queue.need_keyframe = False
        for n in range(channels.VIEWER_QUEUE):
            queue.put([av.Packet(bytes([n]))])
        assert not overflowed and len(queue.packets) == channels.VIEWER_QUEUE
        queue.put([av.Packet(b"late")])
        assert overflowed == [1] and queue.need_keyframe and [bytes(p) for p in queue.packets] == [b"late"]
        assert bytes(await queue.get()) == b"late"
        queue.close()
        with pytest.raises(MediaStreamError):
            await queue.get()

    run_async(scenario, timeout=10)
