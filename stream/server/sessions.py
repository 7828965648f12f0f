"""WebRTC preview sessions: one peer connection each, the recast pipeline per session, the `control` channel.

A title session decodes the title in a worker thread paced to the source's timestamps; every frame goes through
the live face stage (tracking and a 2-frame look-ahead), and is recast when the viewer's toggle is on, right
before it is handed to WebRTC, so the toggle takes effect on the next frame sent. When the worker falls behind,
decoded frames that are already late are dropped (and counted) instead of queueing up, so latency stays bounded.
A camera session does the same on the viewer's own video, keeping only the newest received frame.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import fractions
import functools
import gc
import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from engines.edits import MAX_FACTOR, EditError, edit_factor
from stream.casts import Cast
from stream.faces import LandmarkPredictor
from stream.media import Frame, MediaSource, PacketDecoder
from stream.pipeline import FaceRenderer, RenderOptions, make_tracker
from stream.recasters import Recaster
from stream.server.metrics import Registry
from stream.server.validate import Refused, parse_json
from stream.tracks import BakedFaceStage, FaceState, LiveFaceStage

log = logging.getLogger(__name__)

VIDEO_CLOCK = fractions.Fraction(1, 90000)
MAX_CONTROL_BYTES = 4096
LIVE_LOOKAHEAD = 2  # frames; 67 ms at 30 fps keeps nearly all of the smoothing (see README)
AUDIO_RATE = 48000  # Opus's clock; aiortc's encoder takes s16 stereo at this rate
AUDIO_PTIME = 0.020  # seconds of audio per frame sent
AUDIO_AHEAD = 50  # decoded audio frames held ahead of sending (1 s)
AUDIO_CORRUPT_LIMIT = 50  # corrupt audio packets in a row that end the audio track
AUDIO_DELAY_S = 0.1  # audio's hold-back before the first video frame tells the pipeline's latency
MAX_AUDIO_LATE = 0.2  # seconds: audio later than this against the session clock is skipped to stay in sync
ACTOR_CAST = "actor"  # a baked title's own actor, re-rendered by its tuned generator (edits apply to it)


class ControlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ControlState:
    """What the viewer chose; read by the frame worker at render time (assignments are atomic)."""

    enabled: bool = True
    cast: str = ""
    casts_by_track: dict[int, str] = field(default_factory=dict)
    edits: dict[str, float] = field(default_factory=dict)
    frame: int = 0
    latency_ms: float = 0.0

    def as_message(self) -> dict[str, Any]:
        return {"type": "state", "enabled": self.enabled, "cast": self.cast,
                "tracks": {str(k): v for k, v in self.casts_by_track.items()}, "edits": dict(self.edits),
                "frame": self.frame, "latency_ms": round(self.latency_ms, 1)}


class FrameProcessor:
    """The per-session face stage and renderer; confined to one worker thread."""

    def __init__(self, recaster: Recaster, state: ControlState, options: RenderOptions,
                 predictor: LandmarkPredictor | None = None, on_failed: Callable[[int], None] | None = None,
                 baked: dict[int, list[FaceState]] | None = None) -> None:
        self.stage: LiveFaceStage | BakedFaceStage
        if baked is not None:
            self.stage = BakedFaceStage(baked)
        else:
            self.stage = LiveFaceStage(make_tracker(options, predictor), options.lookahead)
        self.renderer = FaceRenderer(recaster, badge=options.badge, occlusion=options.occlusion)
        self.recaster = recaster
        self.state = state
        self.on_failed = on_failed

    def push(self, frame: Frame) -> list[tuple[Frame, list[FaceState]]]:
        return [(f, faces) for f, faces, _ in self.stage.push(frame)]

    def render(self, frame: Frame, faces: list[FaceState]) -> np.ndarray:
        """The picture to send: recast when the toggle is on, the original otherwise."""
        if not self.state.enabled or not faces:
            return frame.image
        for face in faces:
            wanted = self.state.casts_by_track.get(face.track_id) or self.state.cast
            if wanted and hasattr(self.recaster, "assign"):
                self.recaster.assign(face.track_id, wanted)
        if hasattr(self.recaster, "set_edits"):
            self.recaster.set_edits(self.state.edits)
        image = frame.image.copy()
        rendered = self.renderer.render(image, faces)
        if rendered.failed and self.on_failed is not None:
            self.on_failed(rendered.failed)
        return image


def to_video_frame(image: np.ndarray, time_s: float) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    frame.pts = round(time_s / VIDEO_CLOCK)
    frame.time_base = VIDEO_CLOCK
    return frame


class _LatestQueue:
    """A bounded hand-off from a worker thread to the event loop: when full, the oldest item is dropped."""

    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int, on_drop: Callable[[], None]) -> None:
        self.loop, self.queue = loop, asyncio.Queue[Any](maxsize)
        self.on_drop = on_drop

    def put_threadsafe(self, item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: the session is gone
            self.loop.call_soon_threadsafe(self._put, item)

    def _put(self, item: Any) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.on_drop()
        self.queue.put_nowait(item)


class PlaybackClock:
    """One wall-clock mapping for all of a session's tracks, so that audio and video leave in step with their
    source timestamps: the first track to ask maps its first timestamp to now, and every track paces to that.
    Video leaves late by the pipeline's latency (look-ahead and recasting); audio is held back by the same amount
    (a running average of the video's lateness), so the two stay in sync."""

    def __init__(self) -> None:
        self._origin: float | None = None
        self._lock = threading.Lock()
        self.late_s: dict[str, float] = {}  # per track kind: how late its last frame left against the clock
        self.video_delay_s = AUDIO_DELAY_S  # running average of the video's lateness

    def due(self, source_time: float) -> float:
        """The monotonic time at which the frame with this source timestamp should be sent."""
        with self._lock:
            if self._origin is None:
                self._origin = time.monotonic() - source_time
            return self._origin + source_time

    def sent(self, kind: str, source_time: float) -> None:
        late = time.monotonic() - self.due(source_time)
        if kind == "video":  # the first video frame replaces the initial guess
            weight = 0.2 if "video" in self.late_s else 1.0
            self.video_delay_s += weight * (late - self.video_delay_s)
        self.late_s[kind] = late

    def skew_ms(self) -> float | None:
        """Video minus audio lateness of the last frames sent (positive: video behind); None without both."""
        if "video" not in self.late_s or "audio" not in self.late_s:
            return None
        return (self.late_s["video"] - self.late_s["audio"]) * 1e3


class TitleVideoTrack(MediaStreamTrack):
    """Video of a title through the recast pipeline, paced to the source's timestamps. The frame processor (a
    detector, a tracker: 0.3 s to build) is built in the worker thread, never on the event loop."""

    kind = "video"

    def __init__(self, session: Session, path: Path) -> None:
        super().__init__()
        self.session, self.path = session, path
        self.processor: FrameProcessor | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._queue: _LatestQueue | None = None

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._queue = _LatestQueue(loop, 2, lambda: self.session.count("dropped"))
        self._thread = threading.Thread(target=self._run, name=f"title-{self.session.id[:8]}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._queue is not None
        sid, clock = self.session.id, self.session.clock
        try:
            processor = self.processor = self.session.processor()
            with MediaSource(self.path, keep_audio=False) as source:
                interval = 1 / max(source.info.fps, 1.0)
                t0: float | None = None
                for frame in source.frames():
                    if self._stop.is_set():
                        return
                    self.session.count("in")
                    if t0 is None:
                        t0 = frame.time  # sent timestamps start at 0
                    due = clock.due(frame.time)
                    if time.monotonic() - due > 2 * interval:  # late already: drop it rather than fall behind
                        self.session.count("dropped")
                        continue
                    began = time.perf_counter()
                    for ready, faces in processor.push(frame):
                        image = processor.render(ready, faces)
                        latency = (time.monotonic() - clock.due(ready.time)) * 1e3
                        processor.state.frame = ready.index
                        processor.state.latency_ms = latency
                        self.session.observe("latency", latency)
                        self._queue.put_threadsafe((to_video_frame(image, ready.time - t0), ready.time))
                    self.session.observe("process", (time.perf_counter() - began) * 1e3)
                    wait = due - time.monotonic()
                    if wait > 0:
                        self._stop.wait(wait)
        except Exception:
            log.exception("session %s: title worker failed; ending the video track", sid)
        finally:
            self._queue.put_threadsafe(None)

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._thread is None:
            self._start()
        assert self._queue is not None
        item = await self._queue.queue.get()
        if item is None:
            self.stop()
            raise MediaStreamError
        frame, source_time = item
        self.session.clock.sent("video", source_time)
        self.session.count("out")
        return frame

    def stop(self) -> None:
        self._stop.set()
        super().stop()


class TitleAudioTrack(MediaStreamTrack):
    """A title's audio: only its audio stream is decoded (in a worker thread, at most a second ahead), resampled
    to 48 kHz stereo in 20 ms frames, and sent on the session's clock so it stays in step with the video.
    aiortc's MediaPlayer would also decode the video into a queue that nothing reads."""

    kind = "audio"

    def __init__(self, session: Session, path: Path) -> None:
        super().__init__()
        self.session, self.path = session, path
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._room = threading.BoundedSemaphore(AUDIO_AHEAD)
        self._queue: asyncio.Queue[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            if self._room.acquire(timeout=0.1):
                assert self._loop is not None and self._queue is not None
                try:
                    self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
                except RuntimeError:  # the loop is closed: the session is gone
                    return False
                return True
        return False

    def _decoded(self, container: Any) -> Iterator[av.AudioFrame]:
        """The audio stream's frames; corrupt packets are skipped (MediaError after 50 in a row, about 1 s)."""
        decoder = PacketDecoder(str(self.path), "audio", limit=AUDIO_CORRUPT_LIMIT)
        for packet in container.demux(container.streams.audio[0]):
            yield from decoder.decode(packet)

    def _run(self) -> None:
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=AUDIO_RATE,
                                      frame_size=round(AUDIO_RATE * AUDIO_PTIME))
        samples, start = 0, 0.0
        try:
            with av.open(str(self.path), metadata_errors="ignore") as container:
                for raw in itertools.chain(self._decoded(container), [None]):  # None: flush the resampler's tail
                    if samples == 0 and raw is not None:
                        start = float(raw.time or 0.0)
                    for out in resampler.resample(raw):
                        out.pts, out.time_base = samples, fractions.Fraction(1, AUDIO_RATE)
                        if not self._put((out, start + samples / AUDIO_RATE)):
                            return
                        samples += out.samples
        except Exception:
            log.exception("session %s: title audio failed; ending the audio track", self.session.id)
        finally:
            self._put(None)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._thread is None:
            self._loop, self._queue = asyncio.get_running_loop(), asyncio.Queue()
            self._thread = threading.Thread(target=self._run, name=f"audio-{self.session.id[:8]}", daemon=True)
            self._thread.start()
        assert self._queue is not None
        while True:
            item = await self._queue.get()
            self._room.release()
            if item is None:
                self.stop()
                raise MediaStreamError
            frame, source_time = item
            clock = self.session.clock
            wait = clock.due(source_time) + clock.video_delay_s - time.monotonic()
            if wait > -MAX_AUDIO_LATE:
                break  # else: late (the video started first); skip ahead to stay in sync
        if wait > 0:
            await asyncio.sleep(wait)
        clock.sent("audio", source_time)
        return frame

    def stop(self) -> None:
        self._stop.set()
        super().stop()


class CameraVideoTrack(MediaStreamTrack):
    """The viewer's camera, recast and sent back; only the newest received frame is processed. The frame processor
    is built in the track's worker thread, with the first frame."""

    kind = "video"

    def __init__(self, session: Session, source: MediaStreamTrack) -> None:
        super().__init__()
        self.session, self.source = session, source
        self.processor: FrameProcessor | None = None
        self._latest: av.VideoFrame | None = None
        self._arrived = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"camera-{session.id[:8]}")
        self._index = 0
        self._ended = False

    async def _read(self) -> None:
        try:
            while True:
                frame = await self.source.recv()
                self.session.count("in")
                if self._latest is not None:
                    self.session.count("dropped")
                self._latest = frame
                self._arrived.set()
        except MediaStreamError:
            pass
        finally:
            self._ended = True
            self._arrived.set()

    def _process(self, frame: av.VideoFrame, index: int) -> av.VideoFrame:
        if self.processor is None:
            self.processor = self.session.processor()
        image = frame.to_ndarray(format="rgb24")
        time_s = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else 0.0
        began = time.perf_counter()
        ready = self.processor.push(Frame(index, frame.pts or 0, frame.time_base or VIDEO_CLOCK, image))
        out_image = image
        if ready:
            ready_frame, faces = ready[-1]
            out_image = self.processor.render(ready_frame, faces)
        elapsed = (time.perf_counter() - began) * 1e3
        self.session.observe("process", elapsed)
        self.processor.state.frame = index
        self.processor.state.latency_ms = elapsed
        out = to_video_frame(out_image, time_s)
        out.pts, out.time_base = frame.pts, frame.time_base
        return out

    async def recv(self) -> av.VideoFrame:
        if self._reader is None:
            self._reader = asyncio.ensure_future(self._read())
        while self._latest is None:
            if self._ended:
                self.stop()
                raise MediaStreamError
            self._arrived.clear()
            await self._arrived.wait()
        frame, self._latest = self._latest, None
        self._index += 1
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(self._executor, self._process, frame, self._index)
        self.session.count("out")
        return out

    def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
        super().stop()


DCEP_OPEN = 0x03  # RFC 8832 5.1: DATA_CHANNEL_OPEN


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


@dataclass
class Title:
    id: str
    path: Path
    duration: float
    fps: float
    has_audio: bool
    prebaked: bool = False
    faces: dict[int, list[FaceState]] | None = None  # a baked title's faces by frame index
    actor: Any = None  # a baked title's StyleGAN recaster (stream.recasters.learned.StyleGANRecaster): the `actor` cast

    @property
    def edits(self) -> list[str]:
        return sorted(self.actor.directions) if self.actor is not None else []

    def cast_ids(self, casts: Iterable[str]) -> list[str]:
        return ([ACTOR_CAST] if self.actor is not None else []) + [c for c in casts if c != ACTOR_CAST]

    def describe(self, casts: list[Cast]) -> dict[str, Any]:
        return {"id": self.id, "duration": round(self.duration, 3), "fps": round(self.fps, 3),
                "prebaked": self.prebaked, "casts": self.cast_ids(c.cast_id for c in casts), "edits": self.edits}


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
                 title: Title | None, options: RenderOptions, predictor: LandmarkPredictor | None = None) -> None:
        self.id = uuid.uuid4().hex
        self.key, self.metrics, self.title = key, metrics, title
        self.kind = "camera" if title is None else "title"
        self.casts = casts
        self.cast_ids = set(title.cast_ids(casts) if title is not None else casts)
        self.state = ControlState(cast=next(iter(casts)) if casts else "")
        self.options = dataclasses.replace(options, mode="live", lookahead=LIVE_LOOKAHEAD, threads=1)
        self.recaster = recaster
        self.predictor = predictor
        self.pc: RTCPeerConnection | None = None
        self.tracks: list[MediaStreamTrack] = []
        self.clock = PlaybackClock()
        self.created = time.monotonic()
        self.answered = False
        self.closed = False
        self.ended_by = ""
        self._channel: Any = None
        self._discarding: set[asyncio.Task[None]] = set()

    def count(self, what: str, amount: int = 1) -> None:
        if self.closed:  # a frame the worker hands over after the end must not bring back the forgotten series
            return
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
        """Apply one control message; returns the reply (state, or an error). Never raises."""
        try:
            message = self._parse(raw)
            self._apply(message)
            self.metrics.control.inc(type=message["type"], outcome="ok")
            return self.state.as_message()
        except ControlError as err:
            return self._refused(err)

    def _refused(self, err: ControlError) -> dict[str, Any]:
        """The `error` reply to an invalid control message, counted."""
        self.metrics.control.inc(type="invalid", outcome=err.code)
        return {"type": "error", "error": err.code, "message": str(err)}

    def _parse(self, raw: Any) -> dict[str, Any]:
        if isinstance(raw, bytes):
            raise ControlError("bad_message", "control messages are JSON text, not binary")
        if not isinstance(raw, str) or len(raw.encode("utf-8", "replace")) > MAX_CONTROL_BYTES:
            raise ControlError("too_large", f"control messages are at most {MAX_CONTROL_BYTES} bytes")
        try:
            message = parse_json(raw)
        except Refused as err:
            raise ControlError(err.code, str(err)) from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ControlError("bad_message", "a control message is an object with a 'type'")
        return message

    def _apply(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "recast":
            enabled = message.get("enabled")
            if not isinstance(enabled, bool):
                raise ControlError("bad_message", "'enabled' must be true or false")
            self.state.enabled = enabled
        elif kind == "cast":
            cast, track = message.get("cast"), message.get("track", "all")
            if not isinstance(cast, str) or cast not in self.cast_ids:
                raise ControlError("unknown_cast", f"no cast {str(cast)[:64]!r}; see /api/casts")
            if track == "all":
                self.state.casts_by_track = {}
                self.state.cast = cast
            elif isinstance(track, int) and not isinstance(track, bool) and 0 <= track < 1_000_000:
                if len(self.state.casts_by_track) >= 64 and track not in self.state.casts_by_track:
                    raise ControlError("too_many", "at most 64 per-track casts")
                self.state.casts_by_track = {**self.state.casts_by_track, track: cast}
            else:
                raise ControlError("bad_message", "'track' must be a track id (integer) or \"all\"")
        elif kind == "edit":
            direction, factor = message.get("direction"), message.get("factor")
            if self.title is None or self.title.actor is None:
                raise ControlError("not_baked", "edits need a pre-baked title and a StyleGAN2 bake")
            try:
                if not isinstance(direction, str) or isinstance(factor, str):
                    raise EditError("'direction' must be a name")
                factor = edit_factor(factor, "'factor'")
            except EditError as err:
                raise ControlError("bad_message", f"{err} ('direction' a name, 'factor' a number in "
                                   f"[-{MAX_FACTOR:g}, {MAX_FACTOR:g}])") from None
            if direction not in self.title.edits:
                raise ControlError("unknown_direction", f"no direction {direction[:64]!r} for this title; see "
                                   "/api/titles")
            self.state.edits = {**self.state.edits, direction: float(factor)}
        elif kind == "state":
            pass  # a poll: the reply is the state (the preview page shows its latency once a second)
        else:
            raise ControlError("unknown_type", f"unknown control message type {kind[:32]!r}")

    def refuse_text(self, channel: Any) -> None:
        """A text message that is not UTF-8 (dropped before aiortc decodes it: see guard_data_channel_text)."""
        if channel is self._channel and channel.readyState == "open":
            channel.send(json.dumps(self._refused(ControlError("bad_message", "control messages are UTF-8 JSON text"))))

    def attach_channel(self, channel: Any) -> None:
        if channel.label != "control":
            return
        self._channel = channel

        @channel.on("message")
        def on_message(raw: Any) -> None:
            reply = self.handle_control(raw)
            if channel.readyState == "open":
                channel.send(json.dumps(reply))

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
