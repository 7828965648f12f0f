"""PyAV sources: files, URLs and live streams decoded into RGB frames that keep their pts and
time_base, with the audio packets passed through."""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from engines.errors import InputError

log = logging.getLogger(__name__)
_URL_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
_LIVE_SCHEMES = ("rtsp://", "rtmp://", "udp://", "tcp://", "srt://")
# A decoder that fails on this many packets in a row is reading something that is not video.
_MAX_CONSECUTIVE_ERRORS = 25


class PacketDecoder:
    """Decodes one stream's packets, skipping corrupt ones with a warning; ``limit`` corrupt packets in a row
    raise :class:`MediaError` (the stream is not what it claims). ``errors`` counts the packets skipped."""

    def __init__(self, location: str, kind: str, limit: int = _MAX_CONSECUTIVE_ERRORS) -> None:
        self.location, self.kind, self.limit = location, kind, limit
        self.errors = 0
        self._in_a_row = 0

    def decode(self, packet: Any) -> list[Any]:
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:
            self.errors += 1
            self._in_a_row += 1
            # one line per packet only with -v: a file that turns out unreadable gets one error line, a readable
            # one a single summary warning (MediaSource.frames)
            log.info("%s: skipping a corrupt %s packet (%s)", self.location, self.kind, exc)
            if self._in_a_row >= self.limit:
                raise MediaError(self.location, f"{self.kind} does not decode ({exc})") from exc
            return []
        self._in_a_row = 0
        return list(frames)


class MediaError(InputError):
    """A media file or URL that cannot be read or written; the message names it and says why."""

    def __init__(self, location: str | Path, reason: str) -> None:
        super().__init__(f"{location}: {reason}")
        self.location = str(location)
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    """What a source says about its video stream (and whether it has audio)."""

    location: str
    width: int
    height: int
    rate: Fraction  # average frame rate
    time_base: Fraction
    start_time: float  # seconds; the first video pts, not padded to 0
    duration: float  # seconds, 0.0 when unknown (live)
    frame_count: int  # 0 when the container does not say
    has_audio: bool
    codec: str
    rotation: int = 0  # the display matrix's rotation (degrees counter-clockwise: 0, 90, 180, 270)

    @property
    def fps(self) -> float:
        return float(self.rate)

    @property
    def stored_size(self) -> tuple[int, int]:
        """Width and height of the pixels as the file stores them (``width``/``height`` are as displayed)."""
        return (self.height, self.width) if self.rotation % 180 else (self.width, self.height)


@dataclass
class Frame:
    """One decoded video frame: RGB pixels plus where it sits in time."""

    index: int
    pts: int
    time_base: Fraction
    image: np.ndarray  # [H,W,3] uint8 RGB, upright (the file's display rotation applied)

    @property
    def time(self) -> float:
        return float(self.pts * self.time_base)


def quarter_turns(degrees: float) -> int:
    """A display rotation in degrees as counter-clockwise quarter turns (0-3); other angles round to the nearest."""
    return round(degrees / 90) % 4


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """The picture as players show it: the stored pixels turned by the display matrix's rotation."""
    turns = quarter_turns(rotation)
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def _display_rotation(location: str) -> int:
    """The rotation of the first video frame's display matrix (0 when the file has none or it cannot be read)."""
    try:
        with av.open(location, metadata_errors="ignore") as container:
            for frame in container.decode(video=0):
                return quarter_turns(frame.rotation) * 90
    except (av.error.FFmpegError, OSError, ValueError):
        pass
    return 0


def is_url(location: str | Path) -> bool:
    return str(location).lower().startswith(_URL_SCHEMES)


def is_live(location: str | Path) -> bool:
    """A stream that will not wait for us (RTSP, RTMP, UDP...): under load its newest frame wins.
    HTTP(S) files and HLS playlists are read at our own pace, frame for frame."""
    return str(location).lower().startswith(_LIVE_SCHEMES)


class MediaSource:
    """Pull-based decoder over a file or URL.

    ``frames()`` yields :class:`Frame` objects, upright: a file whose video carries a display matrix (a phone's
    portrait clip) is turned the way players show it, and ``info`` gives the upright size and the ``rotation``, so
    that a sink can store the pixels as the source did. Audio packets found on the way accumulate in
    ``audio_packets`` for a sink to take. Corrupt packets are skipped and counted in ``decode_errors``;
    a file that ends early (truncated) yields the frames it has.
    """

    def __init__(self, location: str | Path, *, keep_audio: bool = True, timeout_s: float = 10.0) -> None:
        self.location = str(location)
        if not is_url(location):
            path = Path(location)
            if not path.exists():
                raise MediaError(location, "no such file")
            if path.is_dir():
                raise MediaError(location, "is a directory, not a media file")
            if path.stat().st_size == 0:
                raise MediaError(location, "empty file")
        options = {"rw_timeout": str(int(timeout_s * 1e6))} if is_url(location) else {}
        try:
            self._container = av.open(self.location, mode="r", options=options, metadata_errors="ignore")
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise MediaError(location, f"cannot open as media ({exc})") from exc
        if not self._container.streams.video:
            self._container.close()
            raise MediaError(location, "has no video stream")
        self._video = self._container.streams.video[0]
        self._video.thread_type = "AUTO"
        self._audio = self._container.streams.audio[0] if (keep_audio and self._container.streams.audio) else None
        cc = self._video.codec_context
        if not cc.width or not cc.height:
            self._container.close()
            raise MediaError(location, "video stream has no frame size (corrupt header)")
        rotation = 0 if is_url(location) else _display_rotation(self.location)
        width, height = (cc.height, cc.width) if rotation % 180 else (cc.width, cc.height)
        self.info = VideoInfo(
            location=self.location,
            width=width,
            height=height,
            rate=_frame_rate(self._video),
            time_base=Fraction(self._video.time_base or Fraction(1, 90000)),
            start_time=float((self._video.start_time or 0) * (self._video.time_base or 0)),
            duration=_duration(self._container, self._video),
            frame_count=int(self._video.frames or 0),
            has_audio=bool(self._container.streams.audio),
            codec=cc.name,
            rotation=rotation,
        )
        self.audio_packets: collections.deque[av.Packet] = collections.deque()
        self._decoder = PacketDecoder(self.location, "video")
        self.truncated = False

    @property
    def decode_errors(self) -> int:
        return self._decoder.errors

    @property
    def audio_stream(self) -> Any:
        return self._audio

    def frames(self, start: tuple[int, float] | None = None) -> Iterator[Frame]:
        """Decode every video frame in order; audio packets go to ``audio_packets``. ``start``: (index, time in
        seconds) of a frame to begin at: the file is sought to the keyframe before it and the frames before it are
        decoded, not yielded (on a file that cannot seek, every frame before it is); indices count on from it."""
        streams = [self._video] + ([self._audio] if self._audio is not None else [])
        index = 0
        last_pts: int | None = None
        step = _pts_step(self.info)
        sought = start is not None and start[0] > 0 and self._seek(start[1])
        half_frame = 0.5 / float(self.info.rate)
        try:
            for packet in self._container.demux(streams):
                if packet.stream.type == "audio":
                    if packet.dts is not None and packet.size:
                        self.audio_packets.append(packet)
                    continue
                for vf in self._decoder.decode(packet):
                    pts = vf.pts if vf.pts is not None else (last_pts + step if last_pts is not None else 0)
                    if last_pts is not None and pts <= last_pts:
                        pts = last_pts + 1  # keep timestamps strictly increasing for the muxer
                    last_pts = pts
                    if start is not None:  # before the frame to begin at: decoded, not yielded
                        late = float(pts * self.info.time_base) - start[1]
                        if sought and late < -half_frame:
                            continue
                        if not sought and index < start[0]:
                            index += 1
                            continue
                        # a seek that lands past the frame (a damaged index) counts the frames it missed
                        index, start = start[0] + (max(0, round(late * float(self.info.rate))) if sought else 0), None
                    image = upright(vf.to_ndarray(format="rgb24"), vf.rotation)
                    yield Frame(index, pts, self.info.time_base, image)
                    index += 1
        except av.error.FFmpegError as exc:
            # Demuxing stopped inside the file: a truncated or damaged tail. Keep what decoded.
            self.truncated = True
            if index:
                log.warning("%s: stopped reading after %d frames (%s)", self.location, index, exc)
        if index == 0:
            skipped = f"; corrupt packets: {self.decode_errors}" if self.decode_errors else ""
            raise MediaError(self.location, f"no video frame could be decoded (corrupt or truncated file{skipped})")
        if self.decode_errors:
            log.warning("%s: skipped %d corrupt video packets", self.location, self.decode_errors)

    def _seek(self, time_s: float) -> bool:
        """Put the demuxer on the keyframe at or before `time_s`; False where the file cannot seek."""
        try:
            self._container.seek(int(time_s / self.info.time_base), stream=self._video, backward=True)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            log.info("%s: cannot seek to %.3f s (%s); decoding from the start", self.location, time_s, exc)
            return False
        return True

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> MediaSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _frame_rate(video: Any) -> Fraction:
    for rate in (video.average_rate, video.guessed_rate, video.base_rate):
        if rate and float(rate) > 0 and math.isfinite(float(rate)) and float(rate) < 1000:
            return Fraction(rate).limit_denominator(100000)
    return Fraction(25)


def _duration(container: Any, video: Any) -> float:
    if video.duration and video.time_base:
        return float(video.duration * video.time_base)
    if container.duration:
        return float(container.duration / av.time_base)
    return 0.0


def _pts_step(info: VideoInfo) -> int:
    return max(1, round(1 / (float(info.rate) * float(info.time_base))))


def probe(path: str | Path) -> dict[str, Any]:
    """Facts about a finished file for tests and reports: frames, fps, duration, start, audio, metadata."""
    with av.open(str(path), metadata_errors="ignore") as container:
        video = container.streams.video[0]
        frames, rotation = 0, 0
        for frame in container.decode(video=0):
            rotation = rotation if frames else quarter_turns(frame.rotation) * 90
            frames += 1
        audio = container.streams.audio[0] if container.streams.audio else None
        return {
            "frames": frames,
            "rotation": rotation,
            "fps": float(video.average_rate or 0),
            "width": video.codec_context.width,
            "height": video.codec_context.height,
            "video_start": float((video.start_time or 0) * video.time_base),
            "duration": _duration(container, video),
            "audio_codec": audio.codec_context.name if audio is not None else None,
            "audio_start": float((audio.start_time or 0) * audio.time_base) if audio is not None else None,
            "metadata": dict(container.metadata),
        }
