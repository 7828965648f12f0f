"""The media of a session: the title's video and audio tracks, paced by one clock, and the camera track.

A title's video is decoded in a worker thread paced to the source's timestamps; every frame goes through the
session's frame processor (tracking and a 2-frame look-ahead, the recast when the viewer's toggle is on) right
before it is handed to WebRTC, so the toggle takes effect on the next frame sent. When the worker falls behind,
frames that are already late are dropped (and counted) instead of queueing up, so latency stays bounded. A camera
session does the same on the viewer's own video, keeping only the newest received frame. The tracks know their
session only through `MediaSession`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from stream.media import opus
from stream.media.sinks import yuv420_frame
from stream.media.sources import Frame, MediaSource, PacketDecoder
from stream.server.encoding import VIDEO_CLOCK, PacketEncoder
from stream.server.frames import FrameProcessor

log = logging.getLogger(__name__)

AUDIO_AHEAD = 50  # decoded audio frames held ahead of sending (1 s)
AUDIO_CORRUPT_LIMIT = 50  # corrupt audio packets in a row that end the audio track
AUDIO_DELAY_S = 0.1  # audio's hold-back before the first video frame tells the pipeline's latency
MAX_AUDIO_LATE = 0.2  # seconds: audio later than this against the session clock is skipped to stay in sync


class MediaSession(Protocol):
    """What a media track needs of its session."""

    id: str
    clock: PlaybackClock

    def processor(self) -> FrameProcessor: ...

    def count(self, what: str, amount: int = 1) -> None: ...

    def observe(self, what: str, ms: float) -> None: ...

    def finish(self, reason: str) -> None: ...


def to_video_frame(image: np.ndarray, time_s: float) -> av.VideoFrame:
    """A picture as a WebRTC frame at `time_s`; odd sides padded to even ones, as in renders and renditions."""
    frame = yuv420_frame(image)
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

    def __init__(self, session: MediaSession, path: Path, fps: float, period: float | None = None,
                 encoder: PacketEncoder | None = None, *, origin: float | None = None,
                 start: tuple[int, float, int] = (0, 0.0, 0), start_time: float | None = None,
                 pass_frames: int = 0) -> None:
        """`period`: play on repeat, a pass every `period` seconds (the title's duration); None: once, and the
        session is told when it ends (`MediaSession.finish`). `encoder`: the track hands aiortc encoded packets
        (stream/server/encoding.py) instead of frames. For a track that starts inside the title
        (stream/server/relay.py): `origin`, the title's first frame time (None: the first frame played); `start`,
        (frame of the pass, seconds and frames of the passes before); `start_time`, that frame's time in the file
        (the track seeks to it; None: decodes up to it); `pass_frames`, the frames of a pass."""
        super().__init__()
        self.session, self.path, self.fps, self.period = session, path, fps, period
        self.encoder = encoder
        self.processor: FrameProcessor | None = None
        self.failed = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._queue: _LatestQueue | None = None
        self._broken = False  # a packet was dropped: the packets up to the next keyframe are not sent
        self.origin, self.start, self.start_time, self.pass_frames = origin, start, start_time, pass_frames

    def _dropped(self) -> None:
        self.session.count("dropped")
        if self.encoder is not None:  # what follows refers to the dropped packet: start again from a keyframe
            self._broken = True
            self.encoder.request_keyframe()

    def ready(self) -> bool:
        """Whether a frame (or packet) is waiting to be taken."""
        return self._queue is not None and not self._queue.queue.empty()

    def begin(self) -> None:
        """Start decoding and drawing now, ahead of the first `recv` (the relay starts the live path early)."""
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._queue = _LatestQueue(loop, 2, self._dropped)
        self._thread = threading.Thread(target=self._run, name=f"title-{self.session.id[:8]}", daemon=True)
        self._thread.start()

    def _passes(self) -> Generator[Frame, None, None]:
        """The title's frames, once or on repeat: each pass starts `period` seconds (at least its own length) after
        the last, its frame indices carry on from the last's, so tracking and pacing see one continuous video."""
        skip, shift_s, shift_index = self.start
        while True:
            count, span = 0, 0.0
            with MediaSource(self.path, keep_audio=False) as source:
                # a track that starts inside the title seeks to its first frame (the keyframe before it decoded)
                begin = (skip, self.start_time) if skip and self.start_time is not None else None
                for frame in source.frames(start=begin):
                    count = frame.index + 1
                    span = frame.time + 1 / max(self.fps, 1.0)
                    if frame.index < skip:  # (a start without its time: decoded, not shown)
                        continue
                    if shift_index:
                        frame = Frame(frame.index + shift_index, frame.pts + round(shift_s / frame.time_base),
                                      frame.time_base, frame.image)
                    yield frame
            if self.period is None or count == 0 or self._stop.is_set():
                return
            if self.processor is not None:
                self.processor.loop_every(count)
            shift_s += max(self.period, span)
            shift_index += count
            skip = 0

    def _run(self) -> None:
        assert self._queue is not None
        sid, clock = self.session.id, self.session.clock
        try:
            processor = self.processor = self.session.processor()
            if self.start[2] and self.pass_frames:  # started in a later pass: its indices carry on
                processor.loop_every(self.pass_frames)
            interval = 1 / max(self.fps, 1.0)
            t0: float | None = self.origin
            with contextlib.closing(self._passes()) as frames:
                for frame in frames:
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
                        frame_out = to_video_frame(image, ready.time - t0)
                        if self.encoder is None:
                            self._queue.put_threadsafe((frame_out, ready.time))
                        for packet in self.encoder.encode(frame_out, ready.time - t0) if self.encoder else ():
                            self._queue.put_threadsafe((packet, ready.time))
                    self.session.observe("process", (time.perf_counter() - began) * 1e3)
                    wait = due - time.monotonic()
                    if wait > 0:
                        self._stop.wait(wait)
        except Exception:
            self.failed = True
            log.exception("session %s: title worker failed; ending the video track", sid)
        finally:
            self._queue.put_threadsafe(None)

    async def recv(self) -> av.VideoFrame | av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._thread is None:
            self._start()
        assert self._queue is not None
        while True:
            item = await self._queue.queue.get()
            if item is None:
                if not self._stop.is_set():  # the title ended by itself (or its decoding failed), not by a hangup
                    self.session.finish("title_failed" if self.failed else "title_ended")
                self.stop()
                raise MediaStreamError
            frame, source_time = item
            if self._broken and isinstance(frame, av.Packet) and not frame.is_keyframe:
                self.session.count("dropped")
                continue
            self._broken = False
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

    def __init__(self, session: MediaSession, path: Path, period: float | None = None) -> None:
        super().__init__()
        self.session, self.path, self.period = session, path, period
        self._sent = 0  # samples sent, all passes: the outgoing timestamps
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
        try:
            shift = 0.0
            while self._play_once(shift) and self.period is not None:
                shift += self.period
        except Exception:
            log.exception("session %s: title audio failed; ending the audio track", self.session.id)
        finally:
            self._put(None)

    def _play_once(self, shift: float) -> bool:
        """One pass over the audio, its source times `shift` seconds on; False once the session has gone."""
        resampler = opus.resampler()
        samples, start = 0, 0.0
        with av.open(str(self.path), metadata_errors="ignore") as container:
            for raw in itertools.chain(self._decoded(container), [None]):  # None: flush the resampler's tail
                if samples == 0 and raw is not None:
                    start = float(raw.time or 0.0)
                for out in resampler.resample(raw):
                    out.pts, out.time_base = self._sent, opus.CLOCK
                    if not self._put((out, shift + start + samples / opus.RATE)):
                        return False
                    samples += out.samples
                    self._sent += out.samples
        return not self._stop.is_set()

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

    def __init__(self, session: MediaSession, source: MediaStreamTrack) -> None:
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


