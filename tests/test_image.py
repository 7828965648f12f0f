"""The CPU image, built (`make image`: docker/build_local.sh here, `docker build` for operators) and run: the
container's `recast serve --demo` answers /healthz, plays a title session to an aiortc viewer with the recast on
and off, a WHEP player, and a live channel published into it over WHIP. Run before each release with
`make image-check`; skipped where no Docker engine answers or the image is not built (RECAST_IMAGE names it,
default recast:cpu)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import aiohttp
import pytest

from stream.server.clients import ClipTrack, Viewer, WhepViewer, WhipPublisher, read_stamp
from tests.conftest import media
from tests.webrtc_client import run_async

IMAGE = os.environ.get("RECAST_IMAGE", "recast:cpu")
pytestmark = pytest.mark.image


def _image_or_skip() -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker client")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker engine answers (start one: dockerd &)")
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        pytest.skip(f"the image {IMAGE} is not built (make image)")


@contextlib.contextmanager
def _container() -> Iterator[str]:
    """The image's `recast serve --demo` on a free loopback port of the host's network (WebRTC's UDP ports)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = f"recast-image-check-{port}"
    subprocess.run(["docker", "run", "-d", "--rm", "--network", "host", "--name", name, IMAGE, "serve", "--demo",
                    "--host", "127.0.0.1", "--port", str(port), "--ice-host", "127.0.0.1"], check=True,
                   capture_output=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(OSError), urllib.request.urlopen(base + "/healthz", timeout=1) as response:
                if response.status == 200:
                    break
            time.sleep(0.2)
        else:
            logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
            raise AssertionError(f"the container did not answer /healthz within 120 s: {logs.stderr[-2000:]}")
        yield base
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_the_image_serves_a_title_a_whep_player_and_a_live_channel() -> None:
    _image_or_skip()
    began = time.monotonic()
    with _container() as base:
        started = time.monotonic() - began

        async def scenario() -> None:
            async with aiohttp.ClientSession() as http:
                viewer = Viewer(base, http)
                await viewer.connect({"title": "demo"})
                assert len(await viewer.frames(25)) == 25
                state = await viewer.control({"type": "recast", "enabled": False})
                assert state["enabled"] is False
                assert len(await viewer.frames(10)) == 10
                player = WhepViewer(base, http)
                await player.connect("demo", "recast=1")
                assert len(await player.frames(10)) == 10
                clip = ClipTrack(str(media("videos/liveportrait_d20.mp4")), 2.0)
                publisher = WhipPublisher(base, http)
                await publisher.publish("studio", clip)
                channel_player = WhepViewer(base, http)
                await channel_player.connect("studio")
                frames = await channel_player.frames(20)
                assert any(read_stamp(f.to_ndarray(format="rgb24")) in clip.sent for f in frames)
                assert await publisher.delete() == 200
                for peer in (viewer, player, channel_player, publisher):
                    await peer.close()

        run_async(scenario, timeout=120)
    print(f"{IMAGE}: answered /healthz {started:.1f} s after docker run; a title, a WHEP player and a live channel "
          "played from it")
