"""Live channels: a stream published over WHIP (stream/server/whip.py), tracked once, recast once per choice that
some viewer has made, each choice encoded once, and its packets handed to every viewer of it.

The publisher's frames are read on the event loop and processed in the channel's own thread, newest first (a frame
that arrives while the last one is still processed replaces the one waiting). Each frame is tracked once (the live
face stage, two frames of look-ahead); then every choice in use (`frames.Choice`: the original, a cast for every
face, casts by track, edits) is drawn by its own painter, encoded by its own H.264 encoder, and its packets are
queued for each of its viewers. The cost grows with the choices in use, not with the viewers: a viewer whose
choice nobody else has costs a draw and an encode, the others a queued packet. A viewer that falls VIEWER_QUEUE
packets behind skips to the next keyframe and never holds up the others. A viewer that joins, switches choice or
asks for a keyframe (PLI) gets one within KEYFRAME_GAP_S (the encoder of a choice makes at most one keyframe that
often on demand, and one every KEYFRAME_EVERY_S in any case). The audio is encoded once, as Opus, for every viewer.

A publisher that disconnects (its peer connection fails or closes, or no frame comes for STALL_S) leaves its channel
waiting for RECONNECT_S: its viewers stay connected and see the last picture; a publisher that publishes to the
channel again within that time resumes it for them. Then, or when the publisher deletes its session, the channel
ends: each viewer is told (a `state` with `"ended": true` and `"reason": "channel_ended"`) and its session ends.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any, Protocol

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from stream.media import opus
from stream.media.opus import OpusEncoder
from stream.media.sources import Frame
from stream.perception.face_stage import LiveFaceStage
from stream.perception.hog import LandmarkPredictor
from stream.perception.track_set import FaceState
from stream.recasters.contract import Recaster
from stream.render.options import RenderOptions
from stream.render.pipeline import make_tracker
from stream.server.control import ControlState
from stream.server.encoding import VIDEO_CLOCK, PacketEncoder
from stream.server.frames import Choice, Painter
from stream.server.media import to_video_frame

log = logging.getLogger(__name__)

RECONNECT_S = 10.0  # a publisher that comes back within this resumes its channel for the viewers still there
STALL_S = 5.0  # a publisher that sends no frame for this long is taken for gone
VIEWER_QUEUE = 15  # packets a viewer may be behind before it skips to the next keyframe
KEYFRAME_GAP_S = 0.25  # keyframes on demand, at most one this often per choice
LOOKAHEAD = 2  # frames of look-ahead of the channel's face stage (67 ms at 30 fps)


class ChannelViewer(Protocol):
    """What the channel needs of a viewer's session (stream/server/sessions.Session)."""

    id: str
    state: ControlState

    def count(self, what: str, amount: int = 1) -> None: ...

    def finish(self, reason: str) -> None: ...


class PacketQueue:
    """A viewer's packets waiting to be sent: bounded; when full, emptied and the viewer waits for a keyframe."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        self.packets: collections.deque[av.Packet] = collections.deque()
        self.ready = asyncio.Event()
        self.closed = False
        self.on_overflow = on_overflow
        self.need_keyframe = True

    def put(self, packets: list[av.Packet]) -> None:
        if len(self.packets) + len(packets) > VIEWER_QUEUE:
            self.packets.clear()
            self.need_keyframe = True
            self.on_overflow()
        self.packets.extend(packets)
        self.ready.set()

    async def get(self) -> av.Packet:
        while not self.packets:
            if self.closed:
                raise MediaStreamError
            self.ready.clear()
            await self.ready.wait()
        return self.packets.popleft()

    def close(self) -> None:
        self.closed = True
        self.ready.set()


class ChoiceStream:
    """One choice's picture for all its viewers: drawn and encoded once a frame (in the channel's thread)."""

    def __init__(self, choice: Choice, recaster: Recaster, options: RenderOptions, fps: float) -> None:
        self.choice = choice
        self.painter = Painter(recaster, options)
        self.encoder = PacketEncoder("libx264", fps)
        self.viewers: set[ChannelVideoTrack] = set()
        self._asked_at = 0.0

    def want_keyframe(self) -> None:
        """A keyframe at the next frame, unless one was asked for within KEYFRAME_GAP_S (it is on its way)."""
        now = time.monotonic()
        if now - self._asked_at >= KEYFRAME_GAP_S:
            self._asked_at = now
            self.encoder.request_keyframe()

    def draw(self, frame: Frame, faces: list[FaceState], time_s: float) -> list[av.Packet]:
        image = self.painter.paint(frame, faces, self.choice)
        return self.encoder.encode(to_video_frame(image, time_s), time_s)

    def deliver(self, packets: list[av.Packet]) -> None:
        for viewer in list(self.viewers):
            viewer.queue.put(packets)


class LiveChannel:
    """A published stream and its viewers (see the module's docstring). Made on the event loop; its frames are
    processed in its own thread."""

    def __init__(self, name: str, new_recaster: Callable[[], Recaster], options: RenderOptions,
                 predictor: LandmarkPredictor | None = None) -> None:
        self.name = name
        self.new_recaster, self.predictor = new_recaster, predictor
        self.options = dataclasses.replace(options, mark_id=f"channel:{name}")
        self.streams: dict[Choice, ChoiceStream] = {}
        self.audio_viewers: set[ChannelAudioTrack] = set()
        self.publisher: Any = None  # the publishing session (stream/server/whip.Publisher) while one is connected
        self.ended = False
        self.interrupted_at: float | None = None  # when the publisher went, while the channel waits for it
        self.frames_in = self.frames_dropped = 0
        self._arrived: collections.deque[float] = collections.deque(maxlen=50)  # the last frames' arrivals
        self.latency_ms: collections.deque[float] = collections.deque(maxlen=300)  # arrival to packets queued
        self.last_frame_at = 0.0
        self._arrivals: dict[int, float] = {}  # frame index -> arrival (monotonic), until the frame is sent
        self._t0 = time.monotonic()
        self._stage: LiveFaceStage | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"channel-{name[:12]}")
        self._waiting: tuple[av.VideoFrame, float] | None = None
        self._busy = False
        self._index = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._opus: OpusEncoder | None = None
        self.on_end: Callable[[LiveChannel, str], None] | None = None

    # --- the publisher's side ---------------------------------------------------------------------------------

    def publish(self, publisher: Any) -> None:
        """A publisher (new, or back within RECONNECT_S) feeds the channel; its tracks come with `feed`."""
        self.publisher, self.interrupted_at = publisher, None
        self._stage = None  # tracking starts again: the new stream may show anything
        self.last_frame_at = time.monotonic()
        for stream in self.streams.values():
            stream.want_keyframe()

    def feed(self, track: MediaStreamTrack) -> None:
        """Read a publisher's track (video or audio) until it ends."""
        reader = self._read_video(track) if track.kind == "video" else self._read_audio(track)
        task = asyncio.ensure_future(reader)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def interrupt(self, publisher: Any, reason: str) -> None:
        """The publisher went (`reason`): the channel waits RECONNECT_S for it, its viewers still connected."""
        if publisher is not self.publisher or self.ended:
            return
        log.warning("channel %s: the publisher went (%s); waiting %.0f s for it to come back", self.name, reason,
                    RECONNECT_S)
        self.publisher, self.interrupted_at = None, time.monotonic()

    def check(self, now: float) -> str:
        """Why the channel should end now ("" if not): its publisher gone for RECONNECT_S."""
        if self.publisher is not None and self.last_frame_at and now - self.last_frame_at > STALL_S:
            self.interrupt(self.publisher, f"no frame for {STALL_S:g} s")
        if self.interrupted_at is not None and now - self.interrupted_at > RECONNECT_S:
            return "publisher_gone"
        return ""

    def end(self, reason: str) -> None:
        """End the channel: every viewer told and its session ended; the thread let go."""
        if self.ended:
            return
        self.ended = True
        log.info("channel %s ended (%s)", self.name, reason)
        viewers = {v.session for s in self.streams.values() for v in s.viewers}
        viewers |= {a.session for a in self.audio_viewers}
        for stream in self.streams.values():
            for viewer in list(stream.viewers):
                viewer.queue.close()
        for audio in list(self.audio_viewers):
            audio.queue.close()
        for session in viewers:
            session.finish("channel_ended")
        for task in list(self._tasks):
            task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.on_end is not None:
            self.on_end(self, reason)

    async def _read_video(self, track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self.ended:
                frame = await track.recv()
                self.frames_in += 1
                self.last_frame_at = time.monotonic()
                self._arrived.append(self.last_frame_at)
                if self._waiting is not None:
                    self.frames_dropped += 1  # newest first: the one waiting is replaced
                self._waiting = (frame, time.monotonic())
                if not self._busy:
                    self._busy = True
                    loop.run_in_executor(self._executor, self._drain, loop)
        except MediaStreamError:
            pass

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """The channel's thread: process frames while one is waiting."""
        try:
            while self._waiting is not None and not self.ended:
                (frame, arrived), self._waiting = self._waiting, None
                self._process(frame, arrived, loop)
        except Exception:
            log.exception("channel %s: a frame failed", self.name)
        finally:
            self._busy = False
            if self._waiting is not None and not self.ended:  # one arrived as the loop ended
                self._busy = True
                loop.call_soon_threadsafe(lambda: loop.run_in_executor(self._executor, self._drain, loop))

    def _process(self, frame: av.VideoFrame, arrived: float, loop: asyncio.AbstractEventLoop) -> None:
        stage = self._stage  # a publisher coming back sets it to None from the event loop: this frame keeps its own
        if stage is None:
            stage = self._stage = LiveFaceStage(make_tracker(self.options, self.predictor), LOOKAHEAD)
        image = frame.to_ndarray(format="rgb24")
        self._index += 1
        time_s = arrived - self._t0
        pushed = Frame(self._index, round(time_s / VIDEO_CLOCK), VIDEO_CLOCK, image)
        self._arrivals[self._index] = arrived
        while len(self._arrivals) > 64:  # the stage gives every frame back; a bound all the same
            self._arrivals.pop(next(iter(self._arrivals)))
        for ready, faces, _ in stage.push(pushed):
            for stream in list(self.streams.values()):
                packets = stream.draw(ready, faces, ready.time)
                if packets:
                    loop.call_soon_threadsafe(stream.deliver, packets)
            began = self._arrivals.pop(ready.index, arrived)
            self.latency_ms.append((time.monotonic() - began) * 1e3)

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        try:
            while not self.ended:
                frame = await track.recv()
                for packet in self._encode_audio(frame):
                    for viewer in list(self.audio_viewers):
                        viewer.queue.put([packet])
        except MediaStreamError:
            pass

    def _encode_audio(self, frame: av.AudioFrame) -> list[av.Packet]:
        """The publisher's sound as Opus packets once for every viewer, timed from the channel's start."""
        if self._opus is None:
            self._opus = OpusEncoder(first_sample=round((time.monotonic() - self._t0) * opus.RATE))
        return [packet for out in self._opus.frames(frame) for packet in self._opus.encode(out)]

    # --- the viewers' side -----------------------------------------------------------------------------------

    def stream_for(self, choice: Choice) -> ChoiceStream:
        stream = self.streams.get(choice)
        if stream is None:
            stream = self.streams[choice] = ChoiceStream(choice, self.new_recaster(), self.options, self.fps)
            log.info("channel %s: %d choices drawn (%s added)", self.name, len(self.streams), choice)
        return stream

    def leave(self, viewer: ChannelVideoTrack) -> None:
        stream = viewer.stream
        if stream is None:
            return
        stream.viewers.discard(viewer)
        if not stream.viewers and self.streams.get(stream.choice) is stream:
            del self.streams[stream.choice]  # nobody sees it: no longer drawn

    @property
    def fps(self) -> float:
        """The publisher's frame rate over its last frames (30 before there are two)."""
        if len(self._arrived) < 2 or self._arrived[-1] <= self._arrived[0]:
            return 30.0
        return (len(self._arrived) - 1) / (self._arrived[-1] - self._arrived[0])

    def describe(self, cast_ids: list[str]) -> dict[str, Any]:
        """The channel as /api/titles lists it."""
        return {"id": self.name, "live": True, "duration": None, "fps": round(self.fps, 3), "prebaked": False,
                "loop": False, "casts": cast_ids, "edits": [], "renditions": [],
                "publishing": self.publisher is not None, "viewers": self.viewer_count(),
                "choices": len(self.streams), "frames_in": self.frames_in, "frames_dropped": self.frames_dropped,
                "latency_ms": round(statistics.median(self.latency_ms), 1) if self.latency_ms else None}

    def viewer_count(self) -> int:
        return sum(len(s.viewers) for s in self.streams.values())


class ChannelVideoTrack(MediaStreamTrack):
    """A viewer's video of a live channel: the packets of the stream of its choice, from a keyframe on."""

    kind = "video"

    def __init__(self, session: ChannelViewer, channel: LiveChannel) -> None:
        super().__init__()
        self.session, self.channel = session, channel
        self.stream: ChoiceStream | None = None
        self.queue = PacketQueue(self._overflowed)

    def _overflowed(self) -> None:
        self.session.count("dropped")
        if self.stream is not None:
            self.stream.want_keyframe()

    def request_keyframe(self) -> None:
        """The viewer asked for a keyframe (PLI, FIR): the next one of its choice's stream."""
        if self.stream is not None:
            self.stream.want_keyframe()

    def follow(self, _bits_per_s: float) -> None:
        """A viewer's bandwidth estimate (REMB) is not followed: its choice's stream is shared."""

    def _follow_choice(self) -> None:
        choice = Choice.of(self.session.state)
        if self.stream is not None and self.stream.choice == choice:
            return
        self.channel.leave(self)
        self.stream = self.channel.stream_for(choice)
        self.stream.viewers.add(self)
        self.queue.packets.clear()
        self.queue.need_keyframe = True
        self.stream.want_keyframe()

    async def recv(self) -> av.Packet:
        if self.readyState != "live" or self.channel.ended:
            raise MediaStreamError
        while True:
            self._follow_choice()
            packet = await self.queue.get()
            if self.queue.need_keyframe and not packet.is_keyframe:
                continue
            self.queue.need_keyframe = False
            self.session.count("out")
            return packet

    def stop(self) -> None:
        self.channel.leave(self)
        self.queue.close()
        super().stop()


class ChannelAudioTrack(MediaStreamTrack):
    """A viewer's sound of a live channel: the Opus packets the channel encodes once for all."""

    kind = "audio"

    def __init__(self, session: ChannelViewer, channel: LiveChannel) -> None:
        super().__init__()
        self.session, self.channel = session, channel
        self.queue = PacketQueue(lambda: None)
        self.queue.need_keyframe = False
        channel.audio_viewers.add(self)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        return await self.queue.get()

    def stop(self) -> None:
        self.channel.audio_viewers.discard(self)
        self.queue.close()
        super().stop()
