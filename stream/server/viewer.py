"""A viewer of the service over its session API: an aiortc peer on this machine that creates a session, negotiates,
receives the picture and the sound, and talks on the control channel. `recast bench --only relay` measures with
it, and the tests watch with it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription


class ViewerError(RuntimeError):
    """The service refused a step of the session (its HTTP status and answer in the message)."""


@dataclass
class Viewer:
    """One viewer of the service at `base` (with an API key, where the service asks for one)."""

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
        if status != 201:
            raise ViewerError(f"POST /api/sessions: {status} {data}")
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
        if status != 200:
            raise ViewerError(f"POST /api/sessions/{self.session}/offer: {status} {answer}")
        await self.pc.setRemoteDescription(RTCSessionDescription(**answer))
        await asyncio.wait_for(asyncio.gather(opened.wait(), got_video.wait()), 20)

    async def frames(self, count: int, timeout: float = 20) -> list[av.VideoFrame]:
        if self.video is None:
            raise ViewerError("no video: connect first")
        return [await asyncio.wait_for(self.video.recv(), timeout) for _ in range(count)]

    async def control(self, message: Any, raw: bool = False) -> dict[str, Any]:
        self.channel.send(message if raw else json.dumps(message))
        return await asyncio.wait_for(self.replies.get(), 10)

    async def close(self) -> None:
        await self.pc.close()


@dataclass
class WhepViewer:
    """A WHEP player (draft-ietf-wish-whep) of the service at `base`: it posts its offer to /whep/TITLE and, with
    `trickle`, sends its candidates afterwards in a PATCH (as browsers' WHEP clients do) instead of in the offer.
    With `control`, it opens the `control` data channel, on which `control()` talks as Viewer's does."""

    base: str
    http: aiohttp.ClientSession
    key: str = ""
    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    resource: str = ""  # the session's URL (the Location of the 201)
    etag: str = ""
    video: MediaStreamTrack | None = None
    audio: MediaStreamTrack | None = None
    replies: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    channel: Any = None

    def headers(self, content_type: str) -> dict[str, str]:
        return {"Content-Type": content_type, **({"Authorization": f"Bearer {self.key}"} if self.key else {})}

    async def connect(self, title: str, query: str = "", trickle: bool = False, control: bool = True) -> None:
        got_video = asyncio.Event()
        opened = asyncio.Event()
        if control:
            self.channel = self.pc.createDataChannel("control")
            self.channel.on("open", opened.set)
            self.channel.on("message", lambda m: self.replies.put_nowait(json.loads(m)))
        else:
            opened.set()

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                self.video = track
                got_video.set()
            else:
                self.audio = track

        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = self.pc.localDescription.sdp
        candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
        if trickle:
            sdp = "".join(f"{line}\r\n" for line in sdp.splitlines()
                          if not line.startswith(("a=candidate:", "a=end-of-candidates")))
        url = f"{self.base}/whep/{title}" + (f"?{query}" if query else "")
        async with self.http.post(url, data=sdp, headers=self.headers("application/sdp")) as r:
            text = await r.text()
            if r.status != 201:
                raise ViewerError(f"POST /whep/{title}: {r.status} {text}")
            self.resource = self.base + r.headers["Location"]
            self.etag = r.headers.get("ETag", "")
        if trickle:
            status = await self.patch(_fragment(sdp, candidates))
            if status != 204:
                raise ViewerError(f"PATCH {self.resource}: {status}")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=text, type="answer"))
        await asyncio.wait_for(asyncio.gather(opened.wait(), got_video.wait()), 20)

    async def patch(self, fragment: str, if_match: str | None = None,
                    content_type: str = "application/trickle-ice-sdpfrag") -> int:
        headers = self.headers(content_type)
        if if_match is not None:
            headers["If-Match"] = if_match
        async with self.http.patch(self.resource, data=fragment, headers=headers) as r:
            return r.status

    async def frames(self, count: int, timeout: float = 20) -> list[av.VideoFrame]:
        if self.video is None:
            raise ViewerError("no video: connect first")
        return [await asyncio.wait_for(self.video.recv(), timeout) for _ in range(count)]

    async def control(self, message: Any) -> dict[str, Any]:
        self.channel.send(json.dumps(message))
        return await asyncio.wait_for(self.replies.get(), 10)

    async def delete(self) -> int:
        async with self.http.delete(self.resource, headers=self.headers("application/sdp")) as r:
            return r.status

    async def close(self) -> None:
        await self.pc.close()


def _fragment(offer: str, candidates: list[str]) -> str:
    """The trickle-ice-sdpfrag (RFC 8840) of an offer's candidates: its ICE credentials, its first m-line and mid."""
    lines = offer.splitlines()
    keep = [line for line in lines if line.startswith(("a=ice-ufrag:", "a=ice-pwd:"))][:2]
    media = next(line for line in lines if line.startswith("m="))
    mid = next((line for line in lines if line.startswith("a=mid:")), "a=mid:0")
    return "\r\n".join([*keep, media, mid, *candidates, "a=end-of-candidates"]) + "\r\n"
