"""End to end through a real browser: `recast serve --demo` started as a user starts it, the preview page driven in
headless Debian Chromium with Python Playwright, and the pictures the page shows read back from its canvas.

The page connects, frames arrive, the recast toggle changes the face region and only it, and turning it off
restores the original picture. Every byte of WebRTC stays on 127.0.0.1. The test skips where Chromium or
Playwright is missing, unless RECAST_REQUIRE_BROWSER=1 (set by `.ci/run`, which installs both), where it fails."""

from __future__ import annotations

import base64
import os
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream.cli.demo_title import demo_title_path
from stream.cli.serve_process import recast_serve_demo
from tests.browser import chromium_page
from tests.conftest import media
from tests.demo_title import DemoTitle

# Draw the next `count` distinct video frames (every `every`-th) onto a canvas; PNG data URLs.
GRAB_FRAMES = """async ([count, every]) => {
  const video = document.getElementById("video");
  const canvas = Object.assign(document.createElement("canvas"), {width: video.videoWidth,
                                                                  height: video.videoHeight});
  const context = canvas.getContext("2d");
  const frames = [];
  for (let seen = 0; frames.length < count; seen++) {
    await new Promise((resolve) => video.requestVideoFrameCallback(resolve));
    if (seen % every) continue;
    context.drawImage(video, 0, 0);
    frames.push(canvas.toDataURL("image/png"));
  }
  return frames;
}"""


def _decode(urls: list[str]) -> list[np.ndarray]:
    images = []
    for url in urls:
        data = np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8)
        images.append(cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    return images


def _score(images: list[np.ndarray], demo: DemoTitle) -> tuple[float, float]:
    faces, rests = zip(*(demo.face_and_rest(image, demo.best_match(image)) for image in images), strict=True)
    return float(np.mean(faces)), float(np.mean(rests))


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["auto", "libvpx"])
def test_preview_page_in_chromium_toggles_the_face_only(encoder: str) -> None:
    """The page in Chromium: the picker, the toggle and a cast change, with the session's own packets: H.264 (auto
    on a machine without NVENC: libx264) and VP8 (libvpx, the browser's first choice)."""
    demo = DemoTitle.load()
    with recast_serve_demo("--cast", str(media("images/liveportrait_s42.jpg")), "--video-encoder", encoder) as server, \
            chromium_page() as (page, errors):
        page.goto(server.base + "/")
        page.wait_for_function("document.getElementById('source').options.length >= 2")
        assert page.locator("#source option").all_inner_texts()[0].startswith("demo")
        assert "hopper" in page.locator("#cast").inner_text()
        # the cast picker shows each cast's face (the two built-in casts and the one given); the default is chosen
        page.wait_for_function("[...document.querySelectorAll('#thumbs img')].filter((i) => i.naturalWidth === 96)"
                               ".length === 3")
        assert page.locator("#thumbs .thumb[aria-pressed=true]").get_attribute("data-cast") == "hopper"
        page.click("#play")
        page.wait_for_function("window.recastState.connected && document.getElementById('video').videoWidth > 0",
                               timeout=30_000)
        size = page.evaluate("[document.getElementById('video').videoWidth, "
                             "document.getElementById('video').videoHeight]")
        assert size == [640, 360]
        answer = page.evaluate("pc.remoteDescription.sdp")
        video_codec = answer.split("m=video")[1].split("a=rtpmap:")[1].split()[1]
        assert video_codec == ("VP8/90000" if encoder == "libvpx" else "H264/90000"), video_codec
        on = _decode(page.evaluate(GRAB_FRAMES, [8, 3]))
        assert page.locator("#synthetic").is_visible()  # the page says the picture is synthetic, badge or not

        page.uncheck("#recast")
        page.wait_for_function("window.recastState.state && window.recastState.state.enabled === false")
        assert not page.locator("#synthetic").is_visible()
        page.evaluate(GRAB_FRAMES, [1, 8])  # frames already past the recaster when the toggle flipped
        off = _decode(page.evaluate(GRAB_FRAMES, [8, 3]))

        page.check("#recast")
        page.wait_for_function("window.recastState.state && window.recastState.state.enabled === true")
        assert page.locator("#synthetic").is_visible()
        page.evaluate(GRAB_FRAMES, [1, 8])
        on_again = _decode(page.evaluate(GRAB_FRAMES, [8, 3]))

        page.click("#thumbs .thumb[data-cast=liveportrait_s42]")  # a click on a face picks that cast
        page.wait_for_function("window.recastState.state && window.recastState.state.cast === 'liveportrait_s42'")
        assert page.locator("#thumbs .thumb[aria-pressed=true]").get_attribute("data-cast") == "liveportrait_s42"

        page.wait_for_function("window.recastState.fps > 0 && window.recastState.state.latency_ms > 0")
        stats = page.evaluate("window.recastState")
        page.click("#stop")
        page.wait_for_function("!window.recastState.connected")
    face_on, rest_on = _score(on, demo)
    face_off, rest_off = _score(off, demo)
    face_again, rest_again = _score(on_again, demo)
    print(f"chromium ({video_codec}): face on {face_on:.1f} off {face_off:.1f} again {face_again:.1f}; "
          f"rest on {rest_on:.1f} off {rest_off:.1f} again {rest_again:.1f} dB; page fps {stats['fps']:.1f}, "
          f"server latency {stats['state']['latency_ms']} ms")
    assert not errors, errors
    # off: the picture is the original (through two encodes and the browser's decoder); on: the face differs only
    assert face_off > 28 and rest_off > 28
    assert face_on < face_off - 6 and face_again < face_off - 6
    # the rest changes by the invisible mark alone (36-37 dB on its own on the demo title's busy picture), which a
    # faithful encode keeps: 2-5.5 dB
    assert rest_on > 30 and rest_off - rest_on < 8 and rest_off - rest_again < 8
    assert stats["fps"] > 10 and stats["errors"] == []


@pytest.mark.slow
def test_the_page_says_when_a_title_ends_and_when_its_session_is_lost(tmp_path: Path) -> None:
    """A title played once ends: the page says so and offers to play again. A looped title (the demo) plays on
    until its worker is killed: the page notices the lost peer, asks the gateway, and says the session was lost."""
    from stream.media.sinks import first_seconds
    from tests.test_fleet import _workers_of

    first_seconds(demo_title_path(), tmp_path / "short.mp4", 1.5)
    with recast_serve_demo("--workers", "1", "--titles", str(tmp_path)) as server, \
            chromium_page() as (page, errors):
        page.goto(server.base + "/")
        page.wait_for_function("document.getElementById('source').options.length >= 3")
        page.select_option("#source", "title:short")
        page.click("#play")
        page.wait_for_function("window.recastState.ended === 'title_ended'", timeout=30_000)
        assert "The title has ended" in page.locator("#error").inner_text()
        assert page.locator("#play").inner_text() == "Play again" and page.locator("#play").is_enabled()

        page.select_option("#source", "title:demo")
        page.click("#play")
        page.wait_for_function("window.recastState.connected && document.getElementById('video').videoWidth > 0",
                               timeout=30_000)
        page.evaluate(GRAB_FRAMES, [10, 1])  # the demo loops: frames past its 6 s come later; here, it plays
        os.kill(next(iter(_workers_of(server.pid))), signal.SIGKILL)
        page.wait_for_function("window.recastState.sessionState === 'lost'", timeout=40_000)
        assert "lost" in page.locator("#error").inner_text()
    assert not [e for e in errors if "404" not in e], errors
