"""WHIP ingest (RFC 9725): a publisher (OBS, GStreamer, FFmpeg, a browser) streams to a live channel.

    POST    /whip/CHANNEL              an SDP offer that sends video (and audio) -> 201, the answer, Location, ETag
    PATCH   /whip/CHANNEL/PUBLISHER    trickled candidates (application/trickle-ice-sdpfrag) -> 204
    DELETE  /whip/CHANNEL/PUBLISHER    the publisher stops: the channel ends -> 200
    OPTIONS on either                  CORS preflight

Publishing takes a publish key (`--publish-keys-file`, RECAST_PUBLISH_KEYS), not a viewing key; `--demo` on
127.0.0.1 runs open, publishing included. A channel appears in /api/titles with `"live": true` and is watched as a
title is, over WHEP or the session API (stream/server/channels.py recasts it once per choice for every viewer).
One publisher a channel: a second is refused with 409 while the first is connected; a publisher that reconnects
within channels.RECONNECT_S after its connection failed resumes the channel. An offer that sends no video is
refused (400), one whose video has no codec the server decodes (VP8, H.264) too (406).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from typing import Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from engines.cache import TITLE_ID
from stream.server.channels import LiveChannel
from stream.server.http import API_KEY, ApiError
from stream.server.service import SERVICE, Service
from stream.server.validate import Refused, check_offer
from stream.server.webrtc_http import (
    WHIP_PATHS,
    add_protocol_routes,
    created,
    entity_tag,
    read_fragment,
    read_sdp,
    trickle,
)

log = logging.getLogger(__name__)

DECODED_VIDEO = re.compile(r"^a=rtpmap:\d+ (VP8|H264)/90000", re.MULTILINE | re.IGNORECASE)


class Publisher:
    """One publisher's connection to its channel."""

    def __init__(self, key: str, channel: LiveChannel) -> None:
        self.id = uuid.uuid4().hex
        self.key, self.channel = key, channel
        self.pc: RTCPeerConnection | None = None
        self.closed = False

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.pc is not None:
                try:
                    await asyncio.wait_for(self.pc.close(), timeout=5)
                except (TimeoutError, Exception):  # a broken peer must not keep the publisher alive
                    log.info("publisher %s: its peer connection did not close cleanly", self.id)


def checked_publish_offer(sdp: str) -> None:
    """A WHIP offer that sends video in a codec this server decodes, or the ApiError that refuses it."""
    try:
        offered = check_offer(sdp)
    except Refused as err:
        raise ApiError(400, err.code, f"cannot use this offer: {err}") from None
    if not offered.sends("video"):
        raise ApiError(400, "bad_sdp", "a WHIP offer sends video (a sendonly or sendrecv video section)")
    if not DECODED_VIDEO.search(sdp):
        raise ApiError(406, "unsupported_codec", "the offer's video has no codec this server decodes (VP8, H.264)")


def channel_for(service: Service, name: str) -> LiveChannel:
    """The channel `name`, made if new; 409 if a title has the name or a publisher is connected to it."""
    if not TITLE_ID.match(name):
        raise ApiError(400, "bad_channel", "a channel's name is a title id: letters, digits, '.', '_', '-'; 64 at most")
    if name in service.titles:
        raise ApiError(409, "title_exists", f"{name!r} is a title, not a channel")
    channel = service.channels.get(name)
    if channel is not None and channel.publisher is not None:
        raise ApiError(409, "channel_busy", f"channel {name!r} already has a publisher")
    if service.draining:
        raise ApiError(503, "draining", "the server is shutting down and takes no new publishers")
    if channel is None:
        if len(service.sessions) + len(service.channels) >= service.config.max_sessions:
            raise ApiError(503, "busy", f"the server holds its maximum of {service.config.max_sessions} sessions")
        channel = LiveChannel(name, lambda: service.casting.new_recaster(None), service.session_options(),
                              service.casting.predictor)
        channel.on_end = service.channel_ended
        service.channels[name] = channel
    return channel


async def publish(request: web.Request) -> web.StreamResponse:
    service: Service = request.app[SERVICE]
    name = request.match_info["channel"]
    sdp = await read_sdp(request)
    await asyncio.to_thread(checked_publish_offer, sdp)  # 128 KB of SDP: ms of regexes, off the loop
    channel = channel_for(service, name)
    publisher = Publisher(request[API_KEY], channel)
    pc = publisher.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    resumed = channel.interrupted_at is not None
    channel.publish(publisher)

    @pc.on("track")
    def on_track(track: Any) -> None:
        channel.feed(track)

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            channel.interrupt(publisher, f"peer {pc.connectionState}")
            service.publishers.pop(publisher.id, None)
            await publisher.close()

    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:  # aiortc raises ValueError and others for SDP it cannot use
        channel.interrupt(publisher, "bad offer")
        await publisher.close()
        if not resumed and not channel.viewer_count():
            channel.end("bad_offer")
        raise ApiError(400, "bad_sdp", f"cannot use this offer: {exc}") from None
    service.publishers[publisher.id] = publisher
    log.info("channel %s: publisher %s %s", name, publisher.id, "resumed it" if resumed else "started it")
    return created(pc.localDescription.sdp, f"/whip/{name}/{publisher.id}", entity_tag(publisher.id))


def _publisher(request: web.Request) -> Publisher:
    service: Service = request.app[SERVICE]
    publisher = service.publishers.get(request.match_info["pid"])
    if (publisher is None or publisher.channel.name != request.match_info["channel"]
            or (publisher.key != request[API_KEY] and not service.config.open_access)):
        raise ApiError(404, "unknown_session", "no such publisher for this key")
    return publisher


async def patch(request: web.Request) -> web.StreamResponse:
    publisher = _publisher(request)
    fragment = await read_fragment(request, entity_tag(publisher.id))
    publisher = _publisher(request)
    assert publisher.pc is not None
    await trickle(publisher.pc, fragment)
    return web.Response(status=204)


async def stop(request: web.Request) -> web.StreamResponse:
    """The publisher ends its stream: the channel ends for its viewers now (no wait for a reconnection)."""
    service: Service = request.app[SERVICE]
    publisher = _publisher(request)
    service.publishers.pop(publisher.id, None)
    publisher.channel.end("publisher_left")
    await publisher.close()
    return web.Response(status=200)


def add_routes(app: web.Application) -> None:
    add_protocol_routes(app, WHIP_PATHS, publish, patch, stop)
