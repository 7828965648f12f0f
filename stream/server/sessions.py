"""WebRTC preview sessions: one peer connection each, its media tracks (stream/server/media.py), its frame
processor, and its `control` channel, whose rules live in stream/server/control.py.

A session offers the viewer what its recaster offers (`Recaster.cast_ids` and `edit_names`): the control rules
check every choice against that, and the frame processor hands the choices to the recaster on the next frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import functools
import gc
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from stream.casts.cast import Cast
from stream.media.watermark import Payload
from stream.perception.hog import LandmarkPredictor
from stream.recasters.contract import Recaster
from stream.render.options import RenderOptions
from stream.server.control import CONTROL_RATE, Control, ControlBudget, ControlError, ControlState
from stream.server.frames import FrameProcessor
from stream.server.media import PlaybackClock
from stream.server.metrics import Registry
from stream.server.titles import Title

log = logging.getLogger(__name__)

LIVE_LOOKAHEAD = 2  # frames; 67 ms at 30 fps keeps nearly all of the smoothing (see README)
DCEP_OPEN = 0x03  # RFC 8832 5.1: DATA_CHANNEL_OPEN
ENDED_FLUSH_S = 0.3  # between telling a viewer that its session ends and closing its peer connection
STALL_S = 5.0  # a title session that sent frames and then none for this long has a stuck pipeline: it is ended


def guard_data_channel_text(pc: RTCPeerConnection, on_bad_text: Callable[[Any], None] | None = None) -> None:
    """Keep text that is not UTF-8 out of aiortc's data channel receive loop, where decoding it raises and ends the
    whole association (the session's control channel with it): a text message is dropped (``on_bad_text`` gets
    its channel), a DCEP open whose label or protocol is not UTF-8 is ignored (that channel never opens).

    aiortc decodes inside `RTCSctpTransport._data_channel_receive`, a private method; this wraps it on this peer
    connection's transport only. Should aiortc rename it, the guard logs a warning and stands aside."""
    from aiortc.rtcsctptransport import WEBRTC_DCEP, WEBRTC_STRING

    sctp = pc.sctp
    if sctp is None:  # the offer has no data channel section
        return
    receive = getattr(sctp, "_data_channel_receive", None)
    if receive is None:
        log.warning("aiortc has no _data_channel_receive; text that is not UTF-8 will end the session")
        return

    def utf8(data: bytes) -> bool:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True

    async def guarded(stream_id: int, pp_id: int, data: bytes) -> None:
        if pp_id == WEBRTC_STRING and not utf8(data):
            channel = sctp._data_channels.get(stream_id)
            if channel is not None and on_bad_text is not None:
                on_bad_text(channel)
            return
        if pp_id == WEBRTC_DCEP and data[:1] == bytes([DCEP_OPEN]) and len(data) >= 12:
            label_length, protocol_length = int.from_bytes(data[8:10], "big"), int.from_bytes(data[10:12], "big")
            if not utf8(data[12:12 + label_length]) or not utf8(data[12 + label_length:][:protocol_length]):
                log.info("ignored a data channel whose label is not UTF-8")
                return
        await receive(stream_id, pp_id, data)

    sctp._data_channel_receive = guarded  # type: ignore[method-assign]


def _send(channel: Any, message: dict[str, Any]) -> None:
    """A message on a control channel, as JSON text, if the channel is open (a closing one drops it)."""
    if channel is not None and channel.readyState == "open":
        channel.send(json.dumps(message))


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> int:
    """Free what ended sessions left in reference cycles, then hand the freed heap pages back to the OS.

    A closed session is garbage inside reference cycles (aiortc's peer connection, its transports and event
    handlers; about 2,500 objects) that still hold native memory: codec contexts, the last decoded frames. The
    cyclic collector counts objects, not bytes, so in a long-running server a full collection comes rarely and
    those buffers piled up at about 1 MB per session (found with heaptrack: decoded frames from `to_ndarray`
    still allocated). A full collection here frees them; with the server's start-up objects frozen
    (`gc.freeze`), it scans only what sessions made. glibc then keeps the freed memory in its arenas, so
    `malloc_trim` returns it (a no-op where glibc's malloc_trim does not exist). Returns the objects collected."""
    collected = gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    return collected


class Session:
    """One viewer: a peer connection, its tracks, the control channel and the per-session pipeline."""

    def __init__(self, key: str, metrics: Registry, recaster: Recaster, casts: dict[str, Cast],
                 title: Title | None, options: RenderOptions, predictor: LandmarkPredictor | None = None,
                 channel: Any = None) -> None:
        """A session on a title, on a live channel (`channel`: stream/server/channels.LiveChannel), or on the
        viewer's camera (neither)."""
        self.id = uuid.uuid4().hex
        self.key, self.metrics, self.title, self.channel = key, metrics, title, channel
        self.kind = "title" if title is not None else "channel" if channel is not None else "camera"
        self.casts = casts
        self.state = ControlState(cast=next((c for c in casts if c in recaster.cast_ids()), ""))
        baked = title is not None and title.actor is not None
        self.control = Control(self.state, recaster.cast_ids(), recaster.edit_names() if baked else None)
        self.options = dataclasses.replace(options, mode="live", lookahead=LIVE_LOOKAHEAD, threads=1,
                                           mark_id=f"session:{self.id}")
        log.info("session %s: its recast pictures carry the invisible mark's id %d (recast verify reads it)", self.id,
                 Payload.for_id(True, self.options.mark_id).mark_id)
        self.recaster = recaster
        self.predictor = predictor
        self.pc: RTCPeerConnection | None = None
        self.tracks: list[MediaStreamTrack] = []
        self.clock = PlaybackClock()
        self.created = time.monotonic()
        self.last_sent = 0.0  # when the last frame left (monotonic); 0 before the first
        self.answered = False
        self.closed = False
        self.ended_by = ""
        self.on_end: Callable[[str], Awaitable[None]] | None = None  # ends the session in its service (given at offer)
        self._channel: Any = None
        self._discarding: set[asyncio.Task[None]] = set()
        self.finishing = ""  # why the session is ending by itself (see finish)
        self._ending: asyncio.Future[None] | None = None

    def count(self, what: str, amount: int = 1) -> None:
        if self.closed:  # a frame the worker hands over after the end must not bring back the forgotten series
            return
        if what == "out":
            self.last_sent = time.monotonic()
        counter = {"in": self.metrics.frames_in, "out": self.metrics.frames_out,
                   "dropped": self.metrics.frames_dropped, "failed": self.metrics.faces_failed}[what]
        counter.inc(amount, session=self.id)

    def observe(self, what: str, ms: float) -> None:
        """A frame's latency (`latency`) or a stage's time (`process`), in ms; ignored once the session ended."""
        if self.closed:
            return
        if what == "latency":
            self.metrics.latency_ms.observe(ms, session=self.id)
        else:
            self.metrics.stage_ms.observe(ms, session=self.id, stage=what)

    def processor(self) -> FrameProcessor:
        return FrameProcessor(self.recaster, self.state, self.options, self.predictor,
                              on_failed=lambda n: self.count("failed", n),
                              baked=self.title.faces if self.title is not None else None)

    # --- control channel -----------------------------------------------------------------------------------

    def handle_control(self, raw: Any) -> dict[str, Any]:
        """Apply one control message; returns the reply (state, or an error), counted. Never raises."""
        return self._counted(*self.control.handle(raw))

    def _counted(self, reply: dict[str, Any], kind: str, outcome: str) -> dict[str, Any]:
        self.metrics.control.inc(type=kind, outcome=outcome)
        return reply

    def refuse_text(self, channel: Any) -> None:
        """A text message that is not UTF-8 (dropped before aiortc decodes it: see guard_data_channel_text)."""
        if channel is self._channel:
            refused = self.control.refuse(ControlError("bad_message", "control messages are UTF-8 JSON text"))
            _send(channel, self._counted(*refused))

    def attach_channel(self, channel: Any) -> None:
        if channel.label != "control":
            return
        self._channel = channel

        budget = ControlBudget()

        @channel.on("message")
        def on_message(raw: Any) -> None:
            verdict = budget.take()
            if verdict == "ok":
                reply = self.handle_control(raw)
            elif verdict == "refuse":
                reply = self._counted(*self.control.refuse(ControlError(
                    "rate_limited", f"at most {CONTROL_RATE:g} control messages a second; the rest are dropped")))
            else:
                self.metrics.control.inc(type="invalid", outcome="rate_limited")
                if verdict == "flood":
                    self.finish("control_flood")
                return
            _send(channel, reply)

    def discard(self, track: MediaStreamTrack) -> None:
        """Read and drop a received track nobody uses: aiortc queues every decoded frame of a remote track until it
        is read, so an unread one grows for as long as the session lasts."""

        async def drain() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    await track.recv()

        task = asyncio.ensure_future(drain())
        self._discarding.add(task)
        task.add_done_callback(self._discarding.discard)

    @property
    def watching(self) -> str:
        """The id of the title or channel the session plays ("" for a camera session)."""
        return self.title.id if self.title is not None else self.channel.name if self.channel is not None else ""

    def tell_ended(self, reason: str) -> None:
        """Say on the control channel that the session ends (a `state` with `"ended": true` and why)."""
        _send(self._channel, {**self.state.as_message(), "ended": True, "reason": reason})

    def stalled(self, now: float) -> bool:
        """Whether the title's pipeline is stuck: frames went out, then none for STALL_S while the session still
        plays (a camera session's frames wait on the viewer's camera, so it never counts as stalled)."""
        return (self.kind == "title" and not self.finishing and self.last_sent > 0
                and now - self.last_sent > STALL_S)

    def tell_stalled(self) -> None:
        """The viewer learns on the control channel that its media stopped (an `error` with code `stalled`), and
        the session ends."""
        _send(self._channel, {"type": "error", "error": "stalled", "message":
                              f"the server's media pipeline for this session stopped for {STALL_S:g} s; the "
                              "session ends"})
        self.finish("stalled")

    def finish(self, reason: str) -> None:
        """The session's media ended by itself (its title played to the end, or failed): the viewer is told on the
        control channel, and the session ends ENDED_FLUSH_S later, once the message has left."""
        on_end = self.on_end
        if self.closed or on_end is None or self.finishing:
            return
        self.finishing = reason
        self.tell_ended(reason)

        def end() -> None:
            self._ending = asyncio.ensure_future(on_end(reason))  # held: a task nobody holds may be collected

        asyncio.get_running_loop().call_later(ENDED_FLUSH_S, end)

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.ended_by = reason
        for track in self.tracks:
            track.stop()
        for task in list(self._discarding):
            task.cancel()
        if self.pc is not None:
            try:
                await asyncio.wait_for(self.pc.close(), timeout=5)
            except (TimeoutError, Exception):  # a broken peer must not keep the session alive
                log.warning("session %s: peer connection did not close cleanly", self.id)
        self.metrics.sessions_total.inc(kind=self.kind, ended=reason)
        self.metrics.forget_session(self.id)
        log.info("session %s ended (%s)", self.id, reason)
