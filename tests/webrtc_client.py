"""A real aiortc client for the service tests: create a session, negotiate on 127.0.0.1, receive frames, talk on
the control channel."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from stream.casts.cast import Cast, hopper_cast
from stream.server.app import ServerConfig, build_app
from stream.server.ice import restrict_host_candidates
from stream.server.titles import Title


def run_async(fn: Callable[[], Awaitable[None]], timeout: float = 120) -> None:
    """Run a test's async scenario on a fresh event loop, failing it after ``timeout`` seconds."""
    asyncio.run(asyncio.wait_for(fn(), timeout))


@contextlib.asynccontextmanager
async def running_server(config: ServerConfig, titles: dict[str, Title], casts: Sequence[Cast]
                         ) -> AsyncIterator[tuple[str, web.Application]]:
    restrict_host_candidates(["127.0.0.1"])
    app = build_app(config, titles, casts)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        await runner.cleanup()
        restrict_host_candidates(None)


@contextlib.asynccontextmanager
async def serving(titles: dict[str, Title], config: ServerConfig | None = None, casts: Sequence[Cast] | None = None
                  ) -> AsyncIterator[tuple[str, web.Application, aiohttp.ClientSession]]:
    """The server tests' preamble: the service on 127.0.0.1 (open, as `--demo`, unless `config` says otherwise)
    with `titles` and Hopper's cast unless `casts` are given, and an HTTP client: (base URL, app, client)."""
    async with running_server(config or ServerConfig(demo=True), titles, [hopper_cast()] if casts is None else casts
                              ) as (base, app), aiohttp.ClientSession() as http:
        yield base, app, http


@dataclass
class Viewer:
    base: str
    http: aiohttp.ClientSession
    key: str = ""
    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    session: str = ""
    video: MediaStreamTrack | None = None
    audio: MediaStreamTrack | None = None
    replies: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    channel: Any = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, json=body, headers=self.headers()) as r:
            data = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, data

    async def connect(self, request: dict[str, Any], send: MediaStreamTrack | None = None,
                      codec: str | None = None) -> None:
        status, data = await self.call("POST", "/api/sessions", request)
        assert status == 201, data
        self.session = data["session"]
        self.channel = self.pc.createDataChannel("control")
        opened = asyncio.Event()
        self.channel.on("open", opened.set)
        self.channel.on("message", lambda m: self.replies.put_nowait(json.loads(m)))
        got_video = asyncio.Event()

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                self.video = track
                got_video.set()
            else:
                self.audio = track

        if send is not None:
            self.pc.addTrack(send)
        else:
            self.pc.addTransceiver("video", direction="recvonly")
            self.pc.addTransceiver("audio", direction="recvonly")
        if codec is not None:
            from aiortc.rtcrtpsender import RTCRtpSender

            caps = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType.lower() == codec.lower()]
            for t in self.pc.getTransceivers():
                if t.kind == "video":
                    t.setCodecPreferences(caps)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        status, answer = await self.call("POST", f"/api/sessions/{self.session}/offer",
                                         {"sdp": self.pc.localDescription.sdp, "type": "offer"})
        assert status == 200, answer
        await self.pc.setRemoteDescription(RTCSessionDescription(**answer))
        await asyncio.wait_for(asyncio.gather(opened.wait(), got_video.wait()), 20)

    async def frames(self, count: int, timeout: float = 20) -> list[av.VideoFrame]:
        assert self.video is not None
        return [await asyncio.wait_for(self.video.recv(), timeout) for _ in range(count)]

    async def control(self, message: Any, raw: bool = False) -> dict[str, Any]:
        self.channel.send(message if raw else json.dumps(message))
        return await asyncio.wait_for(self.replies.get(), 10)

    async def close(self) -> None:
        await self.pc.close()
