"""The service's clients as aiortc peers: a viewer of its session API (`Viewer`: create a session, negotiate,
receive the picture and the sound, talk on the control channel), a WHEP player (`WhepViewer`) and a WHIP
publisher (`WhipPublisher`, with `ClipTrack`: a clip's frames at their rate, each stamped with its number, which
`read_stamp` reads back from a received picture to time the trip from publisher to viewer). The benchmarks
measure with them and the tests watch and publish with them."""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
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


STAMP_BITS, STAMP_BLOCK = 16, 16  # a frame's number as 16 black or white blocks of 16 px along its top edge


def stamp(image: np.ndarray, number: int) -> np.ndarray:
    """The picture with `number` (mod 2^16) written in blocks along its top-left edge."""
    out = image.copy()
    for bit in range(STAMP_BITS):
        out[:STAMP_BLOCK, bit * STAMP_BLOCK:(bit + 1) * STAMP_BLOCK] = 255 if number >> bit & 1 else 0
    return out


def read_stamp(image: np.ndarray) -> int:
    """The number `stamp` wrote (the blocks' centres read through a lossy codec)."""
    half = STAMP_BLOCK // 2
    return sum(1 << bit for bit in range(STAMP_BITS)
               if image[half - 2:half + 2, bit * STAMP_BLOCK + half - 2:bit * STAMP_BLOCK + half + 2].mean() > 127)


class ClipTrack(MediaStreamTrack):
    """A clip's frames (decoded beforehand, at most `seconds`), on repeat at its frame rate, each stamped with its
    number; `sent[number]` is when it was handed over (monotonic)."""

    kind = "video"

    def __init__(self, path: str, seconds: float = 4.0) -> None:
        super().__init__()
        from stream.media.sources import MediaSource

        with MediaSource(path, keep_audio=False) as source:
            self.fps = float(source.info.rate)
            self.images = [f.image for f in source.frames() if f.index < seconds * self.fps]
        self.number = 0
        self.sent: dict[int, float] = {}
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self.number / self.fps
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        image = stamp(self.images[self.number % len(self.images)], self.number)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = round(self.number * 90000 / self.fps), fractions.Fraction(1, 90000)
        self.sent[self.number % 2**STAMP_BITS] = time.monotonic()
        self.number += 1
        return frame


@dataclass
class WhipPublisher:
    """A WHIP publisher (RFC 9725) to /whip/CHANNEL at `base`: it sends `video` (and `audio`, if given)."""

    base: str
    http: aiohttp.ClientSession
    key: str = ""
    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    resource: str = ""
    etag: str = ""

    def headers(self, content_type: str) -> dict[str, str]:
        return {"Content-Type": content_type, **({"Authorization": f"Bearer {self.key}"} if self.key else {})}

    async def publish(self, channel: str, video: MediaStreamTrack, audio: MediaStreamTrack | None = None,
                      trickle: bool = False) -> None:
        self.pc.addTransceiver(video, direction="sendonly")
        if audio is not None:
            self.pc.addTransceiver(audio, direction="sendonly")
        await self.publish_prepared(channel, trickle)

    async def publish_prepared(self, channel: str, trickle: bool = False) -> None:
        """Publish what the peer connection's transceivers already send."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = self.pc.localDescription.sdp
        candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
        if trickle:
            sdp = "".join(f"{line}\r\n" for line in sdp.splitlines()
                          if not line.startswith(("a=candidate:", "a=end-of-candidates")))
        async with self.http.post(f"{self.base}/whip/{channel}", data=sdp,
                                  headers=self.headers("application/sdp")) as r:
            text = await r.text()
            if r.status != 201:
                raise ViewerError(f"POST /whip/{channel}: {r.status} {text}")
            self.resource = self.base + r.headers["Location"]
            self.etag = r.headers.get("ETag", "")
        if trickle:
            async with self.http.patch(self.resource, data=_fragment(sdp, candidates),
                                       headers=self.headers("application/trickle-ice-sdpfrag")) as r:
                if r.status != 204:
                    raise ViewerError(f"PATCH {self.resource}: {r.status}")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=text, type="answer"))

    async def delete(self) -> int:
        async with self.http.delete(self.resource, headers=self.headers("application/sdp")) as r:
            return r.status

    async def close(self) -> None:
        await self.pc.close()
