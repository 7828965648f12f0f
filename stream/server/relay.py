"""The relay: a baked title's renditions (export/renditions.py) sent to a viewer as they are, with no decode, no
recast and no encode per viewer.

A session is relayed when its title's renditions cover every choice the viewer can make (the original, and a
rendition for every cast the session offers; no edits) and the viewer's offer takes H.264. The video track sends
the packets of the rendition the viewer's choice names (the original while the toggle is off, `cast-ID` while it
is on) at the title's pace; a new choice takes effect at the next keyframe, which every rendition has on the same
frames (at most 0.5 s apart), so a switch never breaks the picture. A viewer's keyframe request (PLI) is answered by
that next keyframe as well. Timestamps keep increasing across switches and passes of a looped title. The audio
track sends the title's Opus packets. Each stream file is mapped into memory once per process and shared by every
viewer of the title (`TitleRenditions.open`); a viewer adds a track object and a packet in flight.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import mmap
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, Protocol

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from engines.cache import CacheError, TitleEntry
from engines.errors import InputError
from export.renditions import AUDIO, ORIGINAL, StreamIndex, cast_rendition, index_file, stream_file
from stream.server.control import ControlState
from stream.server.encoding import VIDEO_CLOCK

log = logging.getLogger(__name__)

OPUS_CLOCK = fractions.Fraction(1, 48000)


class RelaySession(Protocol):
    """What the relay's tracks need of their session (stream/server/sessions.Session)."""

    id: str
    state: ControlState
    clock: Any

    def count(self, what: str, amount: int = 1) -> None: ...

    def finish(self, reason: str) -> None: ...


class RenditionStream:
    """One stream of packets: its file mapped read-only (after its checksum is verified) and its index."""

    def __init__(self, entry: TitleEntry, name: str) -> None:
        self.name = name
        path = entry.verified(stream_file(name))
        self.index = StreamIndex.load(entry.verified(index_file(name)))
        with path.open("rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if path.stat().st_size else None
        if int(self.index.sizes.sum()) != (len(self._map) if self._map is not None else 0):
            raise InputError(f"{path}: its size does not match its index")

    def __len__(self) -> int:
        return len(self.index)

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
            if key not in cls._open:
                try:
                    cls._open[key] = cls(entry)
                except (CacheError, InputError, OSError, ValueError) as err:
                    log.warning("title %s: its renditions are not relayed (%s); it plays live", entry.id, err)
                    return None
            return cls._open[key]

    def covers(self, cast_ids: list[str], edits: bool) -> bool:
        """Whether every choice of a viewer with these casts (and edits or not) has a rendition."""
        return not edits and all(cast_rendition(c) in self.video for c in cast_ids)

    @staticmethod
    def choice(state: ControlState) -> str:
        """The rendition of the viewer's choice."""
        return cast_rendition(state.cast) if state.enabled else ORIGINAL


class RelayVideoTrack(MediaStreamTrack):
    """The video of a relayed session: packets of the chosen rendition, paced by the session's clock."""

    kind = "video"

    def __init__(self, session: RelaySession, renditions: TitleRenditions, loop: bool) -> None:
        super().__init__()
        self.session, self.renditions, self.loop = session, renditions, loop
        self.current = renditions.video[renditions.choice(session.state)]
        self._next = 0  # the next packet
        self._shift = 0.0  # seconds added to the title's times: the passes played before
        self.switches = 0
        self.switch_delays_ms: list[float] = []
        self._asked: tuple[str, float] | None = None  # a choice not yet in effect, since when (monotonic)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._next >= self.renditions.frames:
            if not self.loop or not self.renditions.frames:
                self.session.finish("title_ended")
                self.stop()
                raise MediaStreamError
            self._next, self._shift = 0, self._shift + self.renditions.duration
        i = self._next
        self._next += 1
        self._follow_choice(i)
        packet = await _paced(self.session, "video", self.current.packet(i),
                              float(self.current.index.times[i]) + self._shift, VIDEO_CLOCK)
        self.session.count("out")
        self.session.state.frame = i
        return packet

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

    def __init__(self, session: RelaySession, stream: RenditionStream, period: float | None) -> None:
        super().__init__()
        self.session, self.stream, self.period = session, stream, period
        self._next = 0
        self._shift = 0.0

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
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
                            max(0.0, float(self.stream.index.times[i])) + self._shift, OPUS_CLOCK)


async def _paced(session: RelaySession, kind: str, data: bytes, source_time: float,
                 clock: fractions.Fraction) -> av.Packet:
    """A packet of the title's `source_time`, handed over when the session's clock says it is due."""
    wait = session.clock.due(source_time) - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)
    packet = av.Packet(data)
    packet.pts, packet.time_base = round(source_time / clock), clock
    session.clock.sent(kind, source_time)
    return packet
