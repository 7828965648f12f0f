"""What a single process's routes share (stream/server/app.py, stream/server/whep.py): its configuration, its
sessions and limits (`Service`), and the steps every way of starting a session takes: admit it, check its offer,
negotiate its peer connection."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from engines.cache import TITLE_ID
from stream.casts.cast import Cast
from stream.render.options import RenderOptions
from stream.server.casting import Casting
from stream.server.channels import LiveChannel
from stream.server.http import API_KEY, MAX_SDP, ApiError
from stream.server.ice import consent_checks
from stream.server.metrics import Registry
from stream.server.sessions import ENDED_FLUSH_S, LIVE_LOOKAHEAD, STALL_S, Session, release_free_memory
from stream.server.signalling import answer
from stream.server.titles import Title
from stream.server.validate import Offer, Refused, check_offer

log = logging.getLogger(__name__)


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    titles_dir: Path | None = None
    demo: bool = False
    api_keys: tuple[str, ...] = ()
    publish_keys: tuple[str, ...] = ()  # who may publish live channels (WHIP); with no API keys (--demo), anyone
    max_sessions: int = 8
    sessions_per_minute: int = 20  # per key
    offer_timeout_s: float = 30.0
    disconnect_timeout_s: float = 10.0
    options: RenderOptions = field(default_factory=RenderOptions)
    device: str = "cpu"  # torch device of the learned recasters (registered FOMM casts)
    video_encoder: str = "libx264"  # who encodes a title's video (stream/server/encoding.py; resolved, never auto)

    @property
    def open_access(self) -> bool:
        return not self.api_keys


class RateLimiter:
    """Token bucket per API key: `per_minute` session creations, bursting up to the same number."""

    def __init__(self, per_minute: int) -> None:
        self.rate, self.capacity = per_minute / 60.0, float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        return True


class Service:
    """State shared by the routes: catalogue, casts, sessions, limits, metrics."""

    def __init__(self, config: ServerConfig, titles: dict[str, Title], casts: Sequence[Cast]) -> None:
        self.config, self.titles = config, titles
        self.casts = {c.cast_id: c for c in casts}
        self.metrics = Registry()
        self.sessions: dict[str, Session] = {}
        self.limiter = RateLimiter(config.sessions_per_minute)
        self._reaper: asyncio.Task[None] | None = None
        self._cleanups: list[asyncio.TimerHandle] = []
        self.casting = Casting(casts, config.options.detector, config.device)
        self.channels: dict[str, LiveChannel] = {}  # live channels by name (stream/server/channels.py)
        self.publishers: dict[str, Any] = {}  # their publishers by id (stream/server/whip.Publisher)
        self._closing: set[asyncio.Future[None]] = set()
        self.draining = False  # no new sessions (SIGTERM at the gateway, or a worker told to drain)
        self.stalled = 0  # sessions ended because their pipeline stuck (a worker with any is taken for hung)

    async def start(self, _app: web.Application) -> None:
        consent_checks(self.config.disconnect_timeout_s)
        self._reaper = asyncio.ensure_future(self._reap())
        gc.collect()
        gc.freeze()  # models, casts and modules live as long as the server: later full collections skip them

    async def stop(self, _app: web.Application) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        await self.end_all("shutdown")
        for handle in self._cleanups:  # after the closes above, which schedule theirs too
            handle.cancel()
        gc.unfreeze()
        consent_checks(None)

    def session_options(self) -> RenderOptions:
        """A live picture's options (a session's, or a live channel's)."""
        return dataclasses.replace(self.config.options, mode="live", lookahead=LIVE_LOOKAHEAD, threads=1)

    def channel_ended(self, channel: LiveChannel, reason: str) -> None:
        if self.channels.get(channel.name) is channel:
            del self.channels[channel.name]
        for pid, publisher in list(self.publishers.items()):
            if publisher.channel is channel:
                del self.publishers[pid]
                closing = asyncio.ensure_future(publisher.close())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)

    async def end_all(self, reason: str) -> None:
        """End every session, each viewer told on its control channel first (a `state` with `"ended": true`)."""
        for channel in list(self.channels.values()):
            channel.end(reason)
        for session in list(self.sessions.values()):
            session.tell_ended(reason)
        await asyncio.sleep(ENDED_FLUSH_S)  # the message leaves before the peer connection closes
        await asyncio.gather(*(self.close(sid, reason) for sid in list(self.sessions)))

    async def close(self, sid: str, reason: str) -> None:
        session = self.sessions.pop(sid, None)
        if session is not None:
            await session.close(reason)
            self.count_sessions()
            # once the handlers that still hold the session have returned; one per session, so that a session
            # ending while another's collection waits is not left for the next one
            self._cleanups.append(asyncio.get_running_loop().call_later(CLEANUP_DELAY_S, self._release))

    def _release(self) -> None:
        now = asyncio.get_running_loop().time()
        self._cleanups = [h for h in self._cleanups if h.when() > now]
        began = time.perf_counter()
        collected = release_free_memory()
        log.info("freed %d objects of ended sessions in %.0f ms", collected, (time.perf_counter() - began) * 1e3)

    def count_sessions(self) -> None:
        for kind in ("title", "camera", "channel"):
            self.metrics.sessions.set(sum(s.kind == kind for s in self.sessions.values()), kind=kind)

    async def _reap(self) -> None:
        """End sessions that never sent an offer or whose peer failed (a peer that goes silent fails ICE consent
        within `disconnect_timeout_s`, see `consent_checks`, and its connection state says so), and those whose
        pipeline stuck (no frame for STALL_S), their viewers told on the control channel."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for channel in list(self.channels.values()):
                reason = channel.check(now)
                if reason:
                    channel.end(reason)
            for sid in list(self.sessions):
                reason = self._reap_reason(sid, now)  # no reference to the session stays in this frame
                if reason == "stalled":
                    self.stalled += 1
                    log.error("session %s: no frame for %.0f s; its pipeline is stuck", sid, STALL_S)
                    self.sessions[sid].tell_stalled()  # it ends itself once the viewer is told
                elif reason:
                    await self.close(sid, reason)

    def _reap_reason(self, sid: str, now: float) -> str:
        session = self.sessions.get(sid)
        if session is None:
            return ""
        pc = session.pc
        if not session.answered and now - session.created > self.config.offer_timeout_s:
            return "no_offer"
        if pc is not None and pc.connectionState in ("failed", "closed"):
            return f"peer_{pc.connectionState}"
        if session.stalled(now):
            return "stalled"
        return ""


SERVICE = web.AppKey("service", Service)
CLEANUP_DELAY_S = 1.0  # after a session ends, its garbage is collected this much later (see release_free_memory)


def admit(service: Service, key: str, title_id: str | None) -> Session:
    """A new session on a title (None: the viewer's camera) for `key`, or the ApiError that refuses it."""
    title: Title | None = None
    channel = service.channels.get(title_id) if title_id is not None else None
    if title_id is not None and channel is None:
        if not TITLE_ID.match(title_id) or title_id not in service.titles:
            raise ApiError(404, "unknown_title", f"no title {title_id[:64]!r}; see /api/titles")
        title = service.titles[title_id]
    if service.draining:
        raise ApiError(503, "draining", "the server is shutting down and takes no new sessions")
    if len(service.sessions) >= service.config.max_sessions:
        raise ApiError(503, "busy", f"the server holds its maximum of {service.config.max_sessions} sessions")
    if not service.limiter.allow(key):
        raise ApiError(429, "rate_limited", "too many sessions for this key; try again in a minute")
    session = Session(key, service.metrics, service.casting.new_recaster(title), service.casts, title,
                      service.config.options, service.casting.predictor, channel=channel)
    service.sessions[session.id] = session
    service.count_sessions()
    log.info("session %s created (%s)", session.id, session.watching or "camera")
    return session


def session_of(request: web.Request) -> Session:
    service: Service = request.app[SERVICE]
    session = service.sessions.get(request.match_info["sid"])
    if session is None or (session.key != request[API_KEY] and not service.config.open_access):
        raise ApiError(404, "unknown_session", "no such session for this key")
    return session


def checked_offer(body: dict[str, Any]) -> tuple[str, Offer]:
    """An offer request's SDP and what it offers, checked (validate.check_offer) before anything is built; a
    refusal is an ApiError. The gateway checks with this too, before it forwards the offer."""
    sdp, kind = body.get("sdp"), body.get("type")
    if kind != "offer" or not isinstance(sdp, str) or not sdp.startswith("v=0") or len(sdp) > MAX_SDP:
        raise ApiError(400, "bad_sdp", f'expected {{"sdp": "v=0...", "type": "offer"}} of at most {MAX_SDP} bytes')
    try:
        return sdp, check_offer(sdp)
    except Refused as err:
        raise ApiError(400, err.code, f"cannot use this offer: {err}") from None


def _offered(session: Session, body: dict[str, Any]) -> tuple[str, Offer]:
    """The offer's SDP, checked against what this session needs, before anything is built."""
    sdp, offered = checked_offer(body)
    if session.title is not None and not offered.receives("video"):
        raise ApiError(400, "bad_sdp", "cannot use this offer: it must receive video (a recvonly or sendrecv "
                       "video section)")
    if session.channel is not None and not offered.receives("video"):
        raise ApiError(400, "bad_sdp", "cannot use this offer: it must receive video (a recvonly or sendrecv "
                       "video section)")
    if session.kind == "camera" and not (offered.sends("video") and offered.receives("video")):
        raise ApiError(400, "bad_sdp", "cannot use this offer: a camera session sends and receives video "
                       "(a sendrecv video section)")
    return sdp, offered


async def negotiate(service: Service, session: Session, body: dict[str, Any]) -> Any:
    """The session's answer to the offer in `body` ({"sdp", "type": "offer"}), its peer connection built; a
    refusal (the session then ends) is an ApiError."""
    if session.pc is not None:
        raise ApiError(409, "already_negotiated", "this session already has a peer connection")
    try:
        sdp, offered = await asyncio.to_thread(_offered, session, body)  # 128 KB of SDP: ms of regexes
    except ApiError:
        await service.close(session.id, "bad_sdp")
        raise
    refused = await answer(session, sdp, offered, lambda reason: service.close(session.id, reason),
                           service.config.video_encoder)
    if refused is not None:
        if session.closed:  # ended while negotiating; its close closed the peer connection
            raise ApiError(404, "unknown_session", "the session ended during negotiation")
        await service.close(session.id, "bad_sdp")
        raise ApiError(400, "bad_sdp", f"cannot use this offer: {refused}")
    if session.closed:
        raise ApiError(404, "unknown_session", "the session ended during negotiation")
    session.answered = True
    assert session.pc is not None  # given by answer()
    return session.pc.localDescription
