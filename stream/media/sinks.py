"""PyAV sinks: H.264 mp4 files with the source's timestamps and audio."""

from __future__ import annotations

import collections
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from stream.media.sources import Frame, MediaError, VideoInfo, quarter_turns


def even_size(width: int, height: int) -> tuple[int, int]:
    """H.264 in 4:2:0 needs even dimensions; odd ones are padded by one replicated pixel."""
    return width + (width & 1), height + (height & 1)


def padded_to_even(pixels: np.ndarray) -> np.ndarray:
    """A picture with odd sides padded to even ones (`even_size`: the last row or column repeated), contiguous."""
    width, height = even_size(pixels.shape[1], pixels.shape[0])
    if (height, width) != pixels.shape[:2]:
        return cv2.copyMakeBorder(pixels, 0, height - pixels.shape[0], 0, width - pixels.shape[1],
                                  cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(pixels)


def yuv420_frame(pixels: np.ndarray) -> av.VideoFrame:
    """An RGB picture as the 4:2:0 frame an encoder takes (odd sides padded, `padded_to_even`), converted by
    OpenCV: BT.601 video range as FFmpeg's own conversion (luma within a level, chroma within two), in a tenth of
    its time (0.15 ms against 1.7 ms a 720p frame)."""
    return av.VideoFrame.from_ndarray(cv2.cvtColor(padded_to_even(pixels), cv2.COLOR_RGB2YUV_I420), format="yuv420p")


# x264's presets: one 720p frame on one core of the development machine costs 13.5 ms at veryfast with the grain
# tuning, 8.2 at superfast with zerolatency and 5.9 at ultrafast (1.5 and 1.9 times veryfast's bytes at the same
# crf). A live stream takes ultrafast: at crf 18 its picture is the same to the eye, and the core it frees is the
# live path's
OFFLINE_PRESET, LIVE_PRESET = "veryfast", "ultrafast"


class MediaSink:
    """H.264 mp4 writer that keeps the source's timestamps, frame rate and audio.

    Video frames are encoded with the pts and time base they were decoded with, so frame count, variable
    frame rate, duration and a start offset all survive. Audio packets are copied, not re-encoded. Frames come
    upright; a source with a display rotation is stored turned back, with the same display matrix, as it was.
    """

    def __init__(
        self,
        path: str | Path,
        info: VideoInfo,
        *,
        audio_stream: Any = None,
        metadata: Mapping[str, str] | None = None,
        crf: int = 18,
        preset: str | None = None,
        live: bool = False,
        tune: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.info = info
        if self.path.parent and not self.path.parent.exists():
            raise MediaError(path, "output folder does not exist")
        try:
            self._container = av.open(
                str(self.path), mode="w", format="mp4", options={"movflags": "+use_metadata_tags"}
            )
        except (av.error.FFmpegError, OSError) as exc:
            raise MediaError(path, f"cannot write ({exc})") from exc
        for key, value in (metadata or {}).items():
            self._container.metadata[key] = value
        self.width, self.height = even_size(*info.stored_size)
        self._turns = quarter_turns(info.rotation)
        stream = self._container.add_stream("libx264", rate=info.rate)
        if self._turns:
            stream.set_display_rotation(self._turns * 90)
        stream.width = self.width
        stream.height = self.height
        stream.pix_fmt = "yuv420p"
        stream.time_base = info.time_base
        stream.codec_context.time_base = info.time_base
        # a live render tunes for latency and speed; an offline one takes `tune` (x264's default where None: a render
        # chooses `grain` for a grainy source, stream/media/grain.py)
        chosen = preset or (LIVE_PRESET if live else OFFLINE_PRESET)
        options = {"crf": str(crf), "preset": chosen}
        if live or tune:
            options["tune"] = "zerolatency" if live else str(tune)
        stream.codec_context.options = options
        self._video = stream
        self._audio = self._container.add_stream_from_template(audio_stream) if audio_stream is not None else None
        self.frames_written = 0
        self._closed = False

    def write(self, frame: Frame, image: np.ndarray | None = None) -> None:
        """Encode ``image`` (default: the frame's own pixels) at the frame's timestamp."""
        pixels = frame.image if image is None else image
        if self._turns:
            pixels = np.rot90(pixels, -self._turns)  # back to the stored orientation; the display matrix turns it
        vf = yuv420_frame(pixels)
        vf.pts = frame.pts
        vf.time_base = frame.time_base
        self._container.mux(self._video.encode(vf))
        self.frames_written += 1

    def write_audio(self, packets: collections.deque[Any], until: float | None = None) -> None:
        """Mux queued audio packets whose time is before ``until`` seconds (all when None)."""
        if self._audio is None:
            packets.clear()
            return
        while packets:
            packet = packets[0]
            if until is not None and packet.pts is not None and float(packet.pts * packet.time_base) > until:
                break
            packets.popleft()
            packet.stream = self._audio
            self._container.mux(packet)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._container.mux(self._video.encode(None))
        finally:
            self._container.close()

    def __enter__(self) -> MediaSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def first_seconds(source: Path, out: Path, seconds: float) -> Path:
    """The first `seconds` of a video, its video and first audio stream, packets copied (no re-encode): a short
    title for benchmarks and tests."""
    with av.open(str(source)) as src, av.open(str(out), "w") as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in (src.streams.video[0], *src.streams.audio[:1])}
        for packet in src.demux(*(src.streams[i] for i in streams)):
            if packet.dts is None or packet.pts is None or float(packet.pts * packet.time_base) >= seconds:
                continue
            packet.stream = streams[packet.stream.index]
            dst.mux(packet)
    return out
