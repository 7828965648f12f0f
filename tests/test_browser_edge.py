"""The streaming edge with the real WHIP and WHEP clients of npm's `whip-whep` (tests/webrtc_clients, installed by
`make install`) in Debian's Chromium, against `recast serve --demo` as the README starts it (a gateway and its
workers), the pages served from another origin (so CORS is exercised): Chromium's fake camera, fed a stamped
clip with a face, publishes a live channel over WHIP; a second page plays it over WHEP, recast, turns the recast
off on the control channel, and is told when the publisher stops; the service's own page lists the channel as live,
plays it and says when it ends."""

from __future__ import annotations

import base64
import fractions
import http.server
import json
import os
import time
import urllib.request
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stream.cli.serve_process import recast_serve_demo
from stream.media.sources import MediaSource
from stream.server.clients import read_stamp, stamp
from tests.browser import browser_or_skip, chromium_page
from tests.conftest import media, psnr, static_server

CLIENTS = Path(__file__).resolve().parent / "webrtc_clients"
CLIP = media("videos/liveportrait_d20.mp4")  # 480x480, 25 fps, one face in the middle
FRAMES = 75


def _face(image: np.ndarray) -> np.ndarray:
    return image[140:340, 140:340]


def _stamped_y4m(out: Path) -> list[np.ndarray]:
    """The clip's first 3 s as a y4m file for Chromium's fake camera (it loops it), each frame stamped with its
    number; the frames, unstamped."""
    with MediaSource(CLIP, keep_audio=False) as source:
        images = [f.image for f in source.frames() if f.index < FRAMES]
    with av.open(str(out), "w", format="yuv4mpegpipe") as container:
        stream = container.add_stream("rawvideo", rate=25)
        stream.width, stream.height, stream.pix_fmt = 480, 480, "yuv420p"
        for number, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(stamp(image, number), format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = number, fractions.Fraction(1, 25)
            container.mux(stream.encode(frame))
    return images


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _grab(page: object) -> np.ndarray:
    url = page.evaluate("window.grab()")  # type: ignore[attr-defined]
    data = np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8)
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _faces(page: object, images: list[np.ndarray], count: int = 12) -> float:
    """The median PSNR of the played face against the frame of the same stamp."""
    scores = []
    for _ in range(count):
        picture = _grab(page)
        number = read_stamp(picture)
        if number < len(images):
            scores.append(psnr(_face(picture), _face(images[number])))
        time.sleep(0.08)
    assert len(scores) >= count // 2, f"only {len(scores)} stamps read"
    return float(np.median(scores))


@pytest.mark.slow
def test_npm_whip_publishes_from_chromium_and_npm_whep_plays_it_recast(tmp_path: Path) -> None:
    browser_or_skip()
    if not (CLIENTS / "node_modules" / "whip-whep" / "whep.js").exists():
        missing = "tests/webrtc_clients/node_modules (make install runs npm ci where npm is found)"
        if os.environ.get("RECAST_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser test needs {missing}")
        pytest.skip(f"the browser test needs {missing}")
    images = _stamped_y4m(tmp_path / "camera.y4m")
    camera = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
              f"--use-file-for-fake-video-capture={tmp_path / 'camera.y4m'}"]
    with recast_serve_demo() as server, static_server(CLIENTS, _QuietHandler) as pages, \
            chromium_page(*camera) as (publisher, errors):
        publisher.goto(f"{pages}/publish.html")
        publisher.wait_for_function("window.ready === true")
        resource = publisher.evaluate("([url]) => window.publish(url)", [f"{server.base}/whip/studio"])
        assert resource.startswith(f"{server.base}/whip/studio/")
        player = publisher.context.new_page()
        player.on("pageerror", lambda error: errors.append(str(error)))
        player.goto(f"{pages}/play.html")
        player.wait_for_function("window.ready === true")
        for _ in range(50):  # the gateway lists the channel once its worker has reported it
            with urllib.request.urlopen(f"{server.base}/api/titles") as response:
                if any(t["id"] == "studio" and t["live"] for t in json.load(response)):
                    break
            time.sleep(0.1)
        played = player.evaluate("([url]) => window.play(url)", [f"{server.base}/whep/studio?recast=1"])
        assert played.startswith(f"{server.base}/whep/studio/")
        player.wait_for_function("window.playing() && window.controlOpen()", timeout=30_000)
        time.sleep(1.5)  # the channel's tracker finds the face
        recast = _faces(player, images)
        player.evaluate("window.send({type: 'recast', enabled: false})")
        time.sleep(1.0)
        original = _faces(player, images)
        print(f"chromium WHEP player of a channel chromium publishes over WHIP: face {recast:.1f} dB recast, "
              f"{original:.1f} dB with the recast off")
        assert original > 26 and recast < original - 6
        page = publisher.context.new_page()  # the service's own page lists the channel and plays it
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.base + "/")
        page.wait_for_function("[...document.getElementById('source').options].some(o => o.text === 'studio (live)')")
        page.select_option("#source", "title:studio")
        page.click("#play")
        page.wait_for_function("window.recastState.connected && document.getElementById('video').videoWidth > 0",
                               timeout=30_000)
        page.wait_for_function("document.getElementById('stats').textContent.includes('live channel')",
                               timeout=10_000)
        publisher.evaluate("window.stopPublishing()")
        player.wait_for_function("window.replies.some(r => r.ended && r.reason === 'channel_ended')",
                                 timeout=15_000)
        page.wait_for_function("window.recastState.ended === 'channel_ended'", timeout=15_000)
        assert "live channel has ended" in page.locator("#error").inner_text()
    assert not errors, errors
