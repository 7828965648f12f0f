"""The relay: a baked title's renditions (export/renditions.py) sent to a viewer as they are, with no decode, no
recast and no encode per viewer.

A session on a title with renditions whose viewer's offer takes H.264 is served here. While the viewer's choice
has a rendition (the original while the toggle is off, `cast-ID` while it is on; one cast for every face, no edit),
the video track sends that rendition's packets at the title's pace; a new choice takes effect at the next keyframe,
which every rendition has on the same frames (at most 0.5 s apart), so a switch never breaks the picture, and a
viewer's keyframe request (PLI) is answered by that next keyframe as well. A choice no rendition covers hands the
viewer to the live path (the session's render, encoded by the session) at the same place in the title, and back
at a keyframe once the choice is covered again. Timestamps keep increasing across switches, handovers and passes
of a looped title. The audio track sends the title's Opus packets. Each stream file is mapped into memory once per
process and shared by every viewer of the title (`TitleRenditions.open`); a viewer adds a track object and a
packet in flight.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import mmap
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from engines.cache import CacheError, TitleEntry
from engines.errors import InputError
from export.renditions import AUDIO, ORIGINAL, StreamIndex, cast_rendition, index_file, stream_file
from stream.media import opus
from stream.server.control import ControlState
from stream.server.encoding import VIDEO_CLOCK
from stream.server.media import TitleVideoTrack
from stream.server.metrics import RENDITIONS_REFUSED

log = logging.getLogger(__name__)

LIVE_LEAD = 12  # frames the live path is started ahead of where it takes over (it builds its tracker meanwhile)


class RelaySession(Protocol):
    """What the relay's tracks need of their session (stream/server/sessions.Session)."""

    id: str
    state: ControlState
    clock: Any

    def count(self, what: str, amount: int = 1) -> None: ...

    def finish(self, reason: str) -> None: ...


class RenditionStream:
    """One stream of packets: its file mapped read-only (after its checksum is verified) and its index. The cache
    replaces a file by renaming a new one over it, which leaves the mapped one whole; a file edited or truncated in
    place is caught by `intact` (its size and modification time, read before each packet) and never read again."""

    def __init__(self, entry: TitleEntry, name: str) -> None:
        self.name, self.title = name, entry.id
        self.path = entry.verified(stream_file(name))
        self.index = StreamIndex.load(entry.verified(index_file(name)))
        self._file = self.path.open("rb")
        self._identity = self._stat()
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if self._identity[0] else None
        if int(self.index.sizes.sum()) != self._identity[0]:
            self._file.close()
            raise InputError(f"{self.path}: its size does not match its index")
        self.changed = False

    def __len__(self) -> int:
        return len(self.index)

    def _stat(self) -> tuple[int, int]:
        stat = os.fstat(self._file.fileno())
        return stat.st_size, stat.st_mtime_ns

    def intact(self) -> bool:
        """Whether the file is still the one verified (logged and counted once when it is not)."""
        if not self.changed and self._stat() != self._identity:
            self.changed = True
            log.warning("title %s: %s changed on disk while relayed; it is not relayed again", self.title, self.path)
            RENDITIONS_REFUSED.inc(title=self.title, reason="changed")
        return not self.changed

    def packet(self, i: int) -> bytes:
        assert self._map is not None
        start = int(self.index.offsets[i])
        return self._map[start:start + int(self.index.sizes[i])]


class TitleRenditions:
    """A baked title's renditions, opened once per process and shared by its viewers' sessions."""

    _open: ClassVar[dict[tuple[str, str], TitleRenditions]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, entry: TitleEntry) -> None:
        stage = entry.stage("renditions")
        assert stage is not None
        names = sorted({Path(rel).name.split(".")[0] for rel in stage.files if rel.endswith(".h264")})
        self.video = {name: RenditionStream(entry, name) for name in names}
        self.audio = RenditionStream(entry, AUDIO) if any(rel == stream_file(AUDIO) for rel in stage.files) else None
        self.fps = float(stage.info.get("fps", 25.0))
        lengths = {len(s) for s in self.video.values()}
        if ORIGINAL not in self.video or len(lengths) != 1:
            raise InputError(f"{entry.folder}: renditions without the original, or of different lengths")
        self.frames = lengths.pop()
        self.origin = float(stage.info.get("origin", 0.0))  # the source's first frame time: renditions count from it
        self.duration = float(self.video[ORIGINAL].index.times[-1]) + 1 / max(self.fps, 1.0) if self.frames else 0.0

    @classmethod
    def open(cls, entry: TitleEntry) -> TitleRenditions | None:
        """The title's renditions, or None when it has none or they fail their checks (logged: the title then
        plays live)."""
        stage = entry.stage("renditions")
        if stage is None:
            return None
        key = (str(entry.folder), stage.key)
        with cls._lock:
            if key in cls._open and not cls._open[key].intact():  # changed on disk since: checked again
                del cls._open[key]
            if key not in cls._open:
                for older in [k for k in cls._open if k[0] == key[0]]:  # an earlier bake's: its viewers keep theirs
                    del cls._open[older]
                try:
                    cls._open[key] = cls(entry)
                except (CacheError, InputError, OSError, ValueError) as err:
                    log.warning("title %s: its renditions are not relayed (%s); it plays live", entry.id, err)
                    RENDITIONS_REFUSED.inc(title=entry.id, reason="checks")
                    return None
            return cls._open[key]

    def intact(self) -> bool:
        streams = [*self.video.values(), *([self.audio] if self.audio is not None else [])]
        return all([stream.intact() for stream in streams])

    def time(self, frame: int) -> float:
        """A frame's time from the title's first frame (the source's time less `origin`)."""
        return float(self.video[ORIGINAL].index.times[frame])

    def covered(self, state: ControlState) -> bool:
        """Whether the viewer's choice has a rendition: one cast for every face, no edit, its rendition baked."""
        if state.casts_by_track or any(factor != 0 for factor in state.edits.values()):
            return False
        stream = self.video.get(self.choice(state))
        return stream is not None and stream.intact()

    @staticmethod
    def choice(state: ControlState) -> str:
        """The rendition of the viewer's choice."""
        return cast_rendition(state.cast) if state.enabled else ORIGINAL


class RelayVideoTrack(MediaStreamTrack):
    """The video of a relayed session: packets of the chosen rendition, paced by the session's clock; for a choice
    no rendition covers, the live path (`live`: a factory of TitleVideoTrack in packet mode starting at a frame),
    and back to the renditions at a keyframe once the choice is covered again."""

    kind = "video"

    def __init__(self, session: RelaySession, renditions: TitleRenditions, loop: bool,
                 live: Callable[[int, float, int], TitleVideoTrack] | None = None) -> None:
        super().__init__()
        self.session, self.renditions, self.loop, self.make_live = session, renditions, loop, live
        self.current = renditions.video.get(renditions.choice(session.state), renditions.video[ORIGINAL])
        self._next = 0  # the next packet of the pass
        self._pass = 0  # passes of a looped title played before this one
        self.switches = 0
        self.switch_delays_ms: list[float] = []
        self.handovers = 0  # from the renditions to the live path and back, counted each way
        self._asked: tuple[str, float] | None = None  # a choice not yet in effect, since when (monotonic)
        self._live: TitleVideoTrack | None = None
        self._live_at = 0  # the frame (counted from the title's start, passes included) where the live path serves
        self._serving_live = False
        self._sent = -1.0  # the title time of the last packet sent

    @property
    def _shift(self) -> float:
        return self._pass * self.renditions.duration

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        covered = self.renditions.covered(self.session.state)
        if self._sent < 0 and self._live is None and not covered and self.make_live is not None:
            self._begin_live(start=0)  # a first choice no rendition covers: the live path from the first frame
            self._serving_live = True
        reached = self._pass * self.renditions.frames + self._next >= self._live_at
        if self._live is not None and (self._serving_live or (reached and self._live.ready())):
            self._serving_live = True  # the renditions go on until the live path has its first picture
            return await self._from_live(covered)
        if self._live is not None and covered:  # the viewer came back before the live path took over
            self._end_live()
        elif self._live is None and not covered and self.make_live is not None:
            self._begin_live()
        if not self.current.intact():  # changed on disk under the relay: the live path, from here on
            return await self._instead_of_broken(covered)
        if self._next >= self.renditions.frames:
            if not self.loop or not self.renditions.frames:
                self.session.finish("title_ended")
                self.stop()
                raise MediaStreamError
            self._next, self._pass = 0, self._pass + 1
        i = self._next
        self._next += 1
        if covered:
            self._follow_choice(i)
        self.session.state.path = "relay"
        self._sent = self._time(i)
        packet = await _paced(self.session, "video", self.current.packet(i), self._sent, VIDEO_CLOCK,
                              self.renditions.origin)
        self.session.count("out")
        self.session.state.frame = i
        return packet

    async def _instead_of_broken(self, covered: bool) -> av.Packet:
        """The live path at once, where the stream being relayed can no longer be read."""
        if self._live is None and self.make_live is not None:
            self._begin_live(start=self._next)
        if self._live is None:  # no live path to hand over to, or the title ends here
            self.session.finish("rendition_changed")
            self.stop()
            raise MediaStreamError
        self._serving_live = True
        return await self._from_live(covered)

    def _time(self, i: int) -> float:
        """Frame i of this pass in the title's time from its start (the passes before included)."""
        return float(self.current.index.times[i]) + self._shift

    def _begin_live(self, start: int | None = None) -> None:
        """The live path, started LIVE_LEAD frames ahead (or at `start`) so that it is drawing when the renditions
        hand over."""
        assert self.make_live is not None
        start, passes = (self._next + LIVE_LEAD if start is None else start), self._pass
        if start >= self.renditions.frames:
            if not self.loop:  # the title ends before the live path would take over
                return
            start, passes = start - self.renditions.frames, passes + 1
        self._live = self.make_live(start, passes * self.renditions.duration, passes * self.renditions.frames)
        if self._live.encoder is not None:  # the session's encoder may have served an earlier handover
            self._live.encoder.request_keyframe()
        self._live.begin()
        self._live_at = passes * self.renditions.frames + start
        log.info("session %s: a choice no rendition covers; the live path takes over at frame %d",
                 self.session.id, start)

    async def _from_live(self, covered: bool) -> av.Packet:
        assert self._live is not None
        packet = await self._live.recv()
        first = self.session.state.path != "live"
        while _seconds(packet) <= self._sent + 1e-6 or (first and not packet.is_keyframe):
            # pictures the renditions already showed (the live path started late), and what depends on them:
            # the live path begins with a keyframe after the last relayed picture
            if self._live.encoder is not None:
                self._live.encoder.request_keyframe()
            self.session.count("dropped")
            packet = await self._live.recv()
        time_s = self._sent = _seconds(packet)
        if first:
            self.session.state.path = "live"
            self.handovers += 1
        passes = int(time_s // self.renditions.duration) if self.renditions.duration else 0
        i = int(np.searchsorted(self.current.index.times, time_s - passes * self.renditions.duration - 1e-6))
        self._next, self._pass = i + 1, passes  # where the renditions take up again
        if covered:  # back to the renditions at the next keyframe (the next frame's, or the next pass's first)
            following = i + 1
            if following >= self.renditions.frames or self.current.index.keyframes[following]:
                self._end_live()
                self.current = self.renditions.video[self.renditions.choice(self.session.state)]
                self.handovers += 1
        return packet

    def _end_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
            self._serving_live = False

    def stop(self) -> None:
        self._end_live()
        super().stop()

    def _follow_choice(self, i: int) -> None:
        """Switch to the viewer's choice at a keyframe (every rendition has them on the same frames)."""
        wanted = self.renditions.choice(self.session.state)
        if wanted == self.current.name:
            self._asked = None
            return
        if self._asked is None or self._asked[0] != wanted:
            self._asked = (wanted, time.monotonic())
        if self.current.index.keyframes[i] and wanted in self.renditions.video:
            self.current = self.renditions.video[wanted]
            self.switches += 1
            self.switch_delays_ms.append((time.monotonic() - self._asked[1]) * 1e3)
            self._asked = None


class RelayAudioTrack(MediaStreamTrack):
    """The title's Opus packets, paced by the session's clock (audio never switches: it is the same in every
    rendition)."""

    kind = "audio"

    def __init__(self, session: RelaySession, stream: RenditionStream, period: float | None,
                 origin: float = 0.0) -> None:
        super().__init__()
        self.session, self.stream, self.period, self.origin = session, stream, period, origin
        self._next = 0
        self._shift = 0.0

    async def recv(self) -> av.Packet:
        if self.readyState != "live" or not self.stream.intact():  # changed on disk: the sound ends, not the picture
            self.stop()
            raise MediaStreamError
        if self._next >= len(self.stream):
            if self.period is None or not len(self.stream):
                self.stop()
                raise MediaStreamError
            self._next, self._shift = 0, self._shift + self.period
        i = self._next
        self._next += 1
        # Opus's first packet starts a little before 0 (the encoder's pre-skip): sent at 0
        return await _paced(self.session, "audio", self.stream.packet(i),
                            max(0.0, float(self.stream.index.times[i])) + self._shift, opus.CLOCK, self.origin)


def _seconds(packet: av.Packet) -> float:
    return float(packet.pts * packet.time_base)


async def _paced(session: RelaySession, kind: str, data: bytes, title_time: float, clock: fractions.Fraction,
                 origin: float) -> av.Packet:
    """A packet at `title_time` from the title's start, handed over when the session's clock says it is due. The
    clock runs on the source's own times (the live path's), which start at `origin`."""
    wait = session.clock.due(title_time + origin) - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)
    packet = av.Packet(data)
    packet.pts, packet.time_base = round(title_time / clock), clock
    session.clock.sent(kind, title_time + origin)
    return packet
