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
class _Peer:
    """An aiortc peer of the service at `base` (with a key, where the service asks for one): what it receives, and
    the `control` data channel when it opens one."""

    base: str
    http: aiohttp.ClientSession
    key: str = ""
    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    video: MediaStreamTrack | None = None
    audio: MediaStreamTrack | None = None
    replies: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    channel: Any = None

    def authorization(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def _receive(self, control: bool = True) -> tuple[asyncio.Event, asyncio.Event]:
        """Take the tracks the service sends, and open the control channel: (its opening, the video's arrival)."""
        opened, got_video = asyncio.Event(), asyncio.Event()
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

        return opened, got_video

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
class Viewer(_Peer):
    """A viewer of the service's session API."""

    session: str = ""

    def headers(self) -> dict[str, str]:
        return self.authorization()

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
        opened, got_video = self._receive()
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


@dataclass
class _Resource(_Peer):
    """A WebRTC-HTTP client (WHEP or WHIP): its offer posted to an endpoint, the session's resource (the Location
    of the 201) and entity-tag kept for PATCH and DELETE."""

    resource: str = ""
    etag: str = ""

    def headers(self, content_type: str) -> dict[str, str]:
        return {"Content-Type": content_type, **self.authorization()}

    async def _negotiate(self, path: str, trickle: bool) -> None:
        """Post the offer to `path` and take the answer; with `trickle`, the offer goes without its candidates and
        they follow in a PATCH (as browsers' clients do)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = self.pc.localDescription.sdp
        candidates = [line for line in sdp.splitlines() if line.startswith("a=candidate:")]
        if trickle:
            sdp = "".join(f"{line}\r\n" for line in sdp.splitlines()
                          if not line.startswith(("a=candidate:", "a=end-of-candidates")))
        async with self.http.post(self.base + path, data=sdp, headers=self.headers("application/sdp")) as r:
            answer = await r.text()
            if r.status != 201:
                raise ViewerError(f"POST {path.split('?')[0]}: {r.status} {answer}")
            self.resource = self.base + r.headers["Location"]
            self.etag = r.headers.get("ETag", "")
        if trickle:
            status = await self.patch(_fragment(sdp, candidates))
            if status != 204:
                raise ViewerError(f"PATCH {self.resource}: {status}")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def patch(self, fragment: str, if_match: str | None = None,
                    content_type: str = "application/trickle-ice-sdpfrag") -> int:
        headers = self.headers(content_type)
        if if_match is not None:
            headers["If-Match"] = if_match
        async with self.http.patch(self.resource, data=fragment, headers=headers) as r:
            return r.status

    async def delete(self) -> int:
        async with self.http.delete(self.resource, headers=self.authorization()) as r:
            return r.status


@dataclass
class WhepViewer(_Resource):
    """A WHEP player (draft-ietf-wish-whep): its offer posted to /whep/TITLE; with `control`, the `control` data
    channel opened, on which `control()` talks as Viewer's does."""

    async def connect(self, title: str, query: str = "", trickle: bool = False, control: bool = True) -> None:
        opened, got_video = self._receive(control)
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        await self._negotiate(f"/whep/{title}" + (f"?{query}" if query else ""), trickle)
        await asyncio.wait_for(asyncio.gather(opened.wait(), got_video.wait()), 20)


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
class WhipPublisher(_Resource):
    """A WHIP publisher (RFC 9725) to /whip/CHANNEL: it sends `video` (and `audio`, if given)."""

    async def publish(self, channel: str, video: MediaStreamTrack, audio: MediaStreamTrack | None = None,
                      trickle: bool = False) -> None:
        self.pc.addTransceiver(video, direction="sendonly")
        if audio is not None:
            self.pc.addTransceiver(audio, direction="sendonly")
        await self.publish_prepared(channel, trickle)

    async def publish_prepared(self, channel: str, trickle: bool = False) -> None:
        """Publish what the peer connection's transceivers already send."""
        await self._negotiate(f"/whip/{channel}", trickle)
