"""Renditions: a baked title encoded once for WebRTC, so that its viewers' sessions relay packets instead of
rendering (`recast bake --renditions`).

A title's renditions are its original and one recast per cast, drawn with the bake's offline tracks and the badge
on every recast face, each an H.264 elementary stream in Annex-B (constrained baseline, the profile aiortc and
browsers negotiate; no B-frames, so a packet's order is its frame's; sequence and picture parameter sets before
every keyframe) whose keyframes fall on the same frames in every rendition: every `gop_s` seconds, closed GOPs. A
viewer can therefore switch from one rendition to another at any keyframe. The title's audio is encoded once, as
Opus packets of 20 ms at 48 kHz. Every stream is a file of packets one after another and an index beside it
(`NAME.index.npz`: each packet's offset, size, time in seconds and whether it is a keyframe), so a relay reads a
packet with one seek and knows where the next keyframe is without parsing:

    renditions/original.h264         renditions/original.index.npz
    renditions/cast-ID.h264          renditions/cast-ID.index.npz
    renditions/audio.opus            renditions/audio.index.npz      (when the title has audio)
"""

from __future__ import annotations

import fractions
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from engines.errors import InputError
from stream.casts.cast import Cast
from stream.media import opus
from stream.media.opus import OpusEncoder
from stream.media.sinks import even_size, yuv420_frame
from stream.media.sources import MediaSource, VideoInfo
from stream.perception.track_set import TrackSet
from stream.recasters.contract import Recaster
from stream.render.renderer import FaceRenderer
from stream.render.threads import StageTimer

ORIGINAL = "original"
AUDIO = "audio"
CLOCK = fractions.Fraction(1, 90000)


def cast_rendition(cast_id: str) -> str:
    return f"cast-{cast_id}"


def stream_file(name: str) -> str:
    """A rendition's packets, relative to the title's folder."""
    return f"renditions/{name}.opus" if name == AUDIO else f"renditions/{name}.h264"


def index_file(name: str) -> str:
    return f"renditions/{name}.index.npz"


@dataclass
class StreamIndex:
    """Where each packet of a stream lies: byte offset and size, time (s) and whether it is a keyframe."""

    offsets: np.ndarray  # int64
    sizes: np.ndarray  # int64
    times: np.ndarray  # float64, seconds from the title's start
    keyframes: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.offsets)

    def save(self, path: Path) -> None:
        with path.open("wb") as f:
            np.savez(f, allow_pickle=False, offsets=self.offsets, sizes=self.sizes, times=self.times,
                     keyframes=self.keyframes)

    @classmethod
    def load(cls, path: Path) -> StreamIndex:
        with np.load(path, allow_pickle=False) as arrays:
            index = cls(arrays["offsets"].astype(np.int64), arrays["sizes"].astype(np.int64),
                        arrays["times"].astype(np.float64), arrays["keyframes"].astype(bool))
        sizes_ok = len(index.sizes) == len(index.offsets) == len(index.times) == len(index.keyframes)
        consecutive = not len(index) or (index.offsets[0] == 0 and np.all(np.diff(index.offsets) == index.sizes[:-1]))
        if not sizes_ok or not consecutive:
            raise InputError(f"{path}: not an index of consecutive packets")
        return index


class _PacketFile:
    """Packets written one after another, with their index."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("wb")
        self.offsets: list[int] = []
        self.sizes: list[int] = []
        self.times: list[float] = []
        self.keyframes: list[bool] = []
        self._at = 0

    def add(self, data: bytes, time_s: float, keyframe: bool) -> None:
        self.file.write(data)
        self.offsets.append(self._at)
        self.sizes.append(len(data))
        self.times.append(time_s)
        self.keyframes.append(keyframe)
        self._at += len(data)

    def close(self) -> StreamIndex:
        self.file.close()
        return StreamIndex(np.asarray(self.offsets, np.int64), np.asarray(self.sizes, np.int64),
                           np.asarray(self.times, np.float64), np.asarray(self.keyframes, bool))


def decoded_pictures(path: Path) -> list[av.VideoFrame]:
    """Every picture of a rendition (an H.264 elementary stream in Annex-B), in order."""
    context = av.CodecContext.create("h264", "r")
    packets = [*context.parse(path.read_bytes()), *context.parse(None)]
    return [f for p in packets for f in context.decode(p)] + list(context.decode(None))


def gop_frames(fps: float, gop_s: float) -> int:
    """Frames between keyframes: at most `gop_s` seconds."""
    return max(1, math.floor(gop_s * fps + 1e-6))


def encode_video(frames: Iterable[tuple[float, np.ndarray]], fps: float, out: Path, *, gop: int, crf: int,
                 max_kbps: int) -> StreamIndex:
    """(time in seconds, RGB picture) pairs to an H.264 rendition at `out` (Annex-B packets), a keyframe on every
    `gop`-th frame and nowhere else; returns its index (the caller saves it)."""
    writer = _PacketFile(out)
    context = None
    times: list[float] = []  # by frame number: the source's own times (a variable rate stays as it was)
    try:
        for number, (time_s, image) in enumerate(frames):
            if context is None:
                context = _h264(*even_size(image.shape[1], image.shape[0]), fps, gop, crf, max_kbps)
            times.append(time_s)
            frame = yuv420_frame(image)
            frame.pts, frame.time_base = number, context.time_base
            frame.pict_type = av.video.frame.PictureType.I if number % gop == 0 else av.video.frame.PictureType.NONE
            for packet in context.encode(frame):
                writer.add(bytes(packet), times[packet.pts], bool(packet.is_keyframe))
        if context is not None:
            for packet in context.encode(None):
                writer.add(bytes(packet), times[packet.pts], bool(packet.is_keyframe))
    finally:
        index = writer.close()
    return index


def _h264(width: int, height: int, fps: float, gop: int, crf: int, max_kbps: int) -> av.VideoCodecContext:
    context = av.CodecContext.create("libx264", "w")
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.time_base = fractions.Fraction(1, 1) / fractions.Fraction(fps).limit_denominator(1001)
    context.framerate = fractions.Fraction(fps).limit_denominator(1001)
    context.gop_size, context.max_b_frames = gop, 0
    # baseline (no B-frames, CAVLC) at x264's medium preset; keyframes only where asked (no scene cuts, no shorter
    # GOPs), each an IDR (closed GOPs); headers on every keyframe (no global header: Annex-B as it goes)
    context.options = {"preset": "medium", "profile": "baseline", "crf": str(crf),
                       "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:"
                                      f"vbv-maxrate={max_kbps}:vbv-bufsize={max_kbps}"}
    context.open()
    return context


def encode_audio(source: Path, out: Path, max_seconds: float | None = None) -> StreamIndex:
    """The title's first audio stream as Opus packets (48 kHz stereo, 20 ms) at `out` (where `probe` finds one)."""
    with av.open(str(source)) as container:
        stream = container.streams.audio[0]
        encoder = OpusEncoder()
        writer = _PacketFile(out)
        try:
            for decoded in container.decode(stream):
                for frame in encoder.frames(decoded):
                    if max_seconds is not None and encoder.samples / opus.RATE >= max_seconds:
                        break
                    for packet in encoder.encode(frame):
                        writer.add(bytes(packet), float(packet.pts) / opus.RATE, True)
            for packet in encoder.encode(None):
                writer.add(bytes(packet), float(packet.pts) / opus.RATE, True)
        finally:
            index = writer.close()
    return index


def baked_frames(source: Path, tracks: TrackSet, recaster: Recaster | None, occlusion: bool = True,
                 mark_id: str = "") -> Iterator[tuple[float, np.ndarray]]:
    """The title's frames as the bake's tracks draw them (None: the original), with the badge and the invisible
    mark on every recast frame: (time from the first frame, picture). As `recast render --title` draws them."""
    renderer = (FaceRenderer(recaster, badge=True, occlusion=occlusion, mark_id=mark_id)
                if recaster is not None else None)
    faces = tracks.by_frame()
    timer = StageTimer()
    first: float | None = None
    with MediaSource(source, keep_audio=False) as media:
        for frame in media.frames():
            if frame.index >= tracks.frame_count:
                return
            first = frame.time if first is None else first
            if renderer is not None:
                renderer.render(frame.image, faces.get(frame.index, []), timer)
            yield frame.time - first, frame.image


def probe(source: Path) -> tuple[VideoInfo, float]:
    """What the renditions need to know of the source, said before any work: its facts (size, audio) and the time
    of its first frame, which rendition times count from."""
    with MediaSource(source, keep_audio=False) as media:
        info, origin = media.info, next(iter(media.frames())).time
    return info, origin


def rendition_casts(ids: Iterable[str], registry: str | None, detector: str) -> list[Cast]:
    """The casts named for renditions: the built-in ones and the registry's (`all`: every one of them), each once;
    an unknown id or a cast the service animates with FOMM (whose rendition would not be what it plays) is refused."""
    from stream.casts.cast import default_casts
    from stream.casts.registry import CastRegistry, default_registry

    folder = CastRegistry(registry or default_registry())
    built_in = {c.cast_id: c for c in default_casts()}
    wanted = list(dict.fromkeys(ids))
    if "all" in wanted:
        wanted = list(dict.fromkeys([*built_in, *folder.ids()]))
    casts = []
    for cast_id in wanted:
        if cast_id in folder:
            cast = folder.load(cast_id)
        elif cast_id in built_in:
            cast = built_in[cast_id]
        else:
            known = ", ".join(sorted({*built_in, *folder.ids()}))
            raise InputError(f"--renditions: no cast {cast_id!r} (built in or in {folder.folder}: {known})")
        if cast.fomm is not None:
            raise InputError(f"--renditions: cast {cast_id!r} is animated by FOMM; renditions are drawn by the warp")
        casts.append(cast)
    return casts


def cast_recaster(cast: Cast, detector: str) -> Recaster:
    """The recaster a cast's rendition is drawn with: the warp, as the service draws a warp cast."""
    from stream.recasters.warp import WarpRecaster

    return WarpRecaster([cast], detector=detector)
