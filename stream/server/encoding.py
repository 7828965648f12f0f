"""How a title session's video is encoded for WebRTC.

- ``libx264``, ``h264_nvenc``, ``libvpx``: the session's own thread encodes the video through PyAV, and aiortc
  only packs and sends the packets. H.264 is constrained baseline (Annex-B, no B-frames, headers on every keyframe);
  ``h264_nvenc`` runs on the NVENC unit of an NVIDIA GPU (L4, L40S, RTX cards; H100 and A100 have none), which
  frees the CPU of the encode; ``libx264`` is the same on the CPU (about the CPU of VP8, measured).
  ``libvpx`` is VP8 with aiortc's own real-time settings but without the denoiser, which would take the invisible
  mark's slow change on a still background for noise (stream/media/watermark.py). The bitrate starts at
  PACKET_BITS_PER_PIXEL (within PACKET_KBPS) and follows the viewer's estimate of its bandwidth (REMB) up to twice
  that; a viewer's keyframe request (PLI, FIR) is answered by the next frame. A viewer whose offer lacks the chosen
  codec gets the other one (`session_codec`).
- ``webrtc``: aiortc encodes the frames it is handed, in the codec the viewer's offer prefers, with its own
  settings (VP8's denoiser included).
- ``auto``: ``h264_nvenc`` where it opens (a GPU with NVENC and its driver), otherwise ``libx264``.
"""

from __future__ import annotations

import fractions
import logging
import os
import re
import threading
import time
from typing import Any

import av
from aiortc.codecs.vpx import number_of_threads

log = logging.getLogger(__name__)

ENCODINGS = ("auto", "webrtc", "libx264", "libvpx", "h264_nvenc")
H264_ENCODERS = ("libx264", "h264_nvenc")
PACKET_BITS_PER_PIXEL = 0.1  # bits a pixel a frame: 655 kbit/s at 512x512 and 25 fps, 2.8 Mbit/s at 720p30
PACKET_KBPS = (300, 6000)
KEYFRAME_EVERY_S = 2.0  # a keyframe at least this often, for viewers that lost one and did not ask
RATE_CHANGE, RATE_EVERY_S = 0.1, 1.0  # the encoder is made again for a new rate past 10 %, at most once a second
VIDEO_CLOCK = fractions.Fraction(1, 90000)

_OPTIONS = {  # PyAV codec options per encoder: low latency, one packet a frame
    "libx264": {"preset": "superfast", "tune": "zerolatency", "profile": "baseline", "level": "31"},
    "h264_nvenc": {"preset": "p4", "tune": "ll", "rc": "cbr", "zerolatency": "1", "profile": "baseline",
                   "forced-idr": "1", "delay": "0"},
    # aiortc's VP8 settings but the denoiser (the module's docstring says why); the constant rate is set per rate
    "libvpx": {"deadline": "realtime", "cpu-used": "-6", "lag-in-frames": "0", "noise-sensitivity": "0",
               "static-thresh": "1", "overshoot-pct": "15", "undershoot-pct": "100", "partitions": "0"},
}
MIME_TYPES = {"libx264": "video/H264", "h264_nvenc": "video/H264", "libvpx": "video/VP8"}


def offers(sdp: str, name: str) -> bool:
    """Whether an offer can receive the video codec `name` (H264, VP8: an rtpmap line for it)."""
    return re.search(rf"^a=rtpmap:\d+ {re.escape(name)}/90000", sdp, re.MULTILINE | re.IGNORECASE) is not None


def offers_h264(sdp: str) -> bool:
    return offers(sdp, "H264")


def session_codec(choice: str, sdp: str) -> str | None:
    """The encoder a session runs for an offer under the service's `choice` (resolved: not auto), or None when
    aiortc encodes (``webrtc``, or an offer with neither H.264 nor VP8). An offer without the chosen codec gets the
    other one, encoded by the session too: VP8 with libvpx, H.264 with libx264."""
    if choice == "webrtc":
        return None
    wanted = [choice, "libx264"] if choice == "libvpx" else [choice, "libvpx"]
    return next((codec for codec in wanted if offers(sdp, MIME_TYPES[codec].split("/")[1])), None)


def encoder_opens(codec: str) -> bool:
    """Whether PyAV's encoder `codec` opens here (h264_nvenc: a GPU with NVENC and the driver's libraries)."""
    try:
        context = av.CodecContext.create(codec, "w")
        context.width, context.height, context.pix_fmt = 256, 256, "yuv420p"
        context.time_base = fractions.Fraction(1, 25)
        context.options = dict(_OPTIONS.get(codec, {}))
        context.open()
    except (av.error.FFmpegError, ValueError, OSError) as err:
        log.info("encoder %s does not open here (%s)", codec, err)
        return False
    return True


def resolve_encoding(choice: str) -> str:
    """The encoding a service runs with for `choice` (one of ENCODINGS): auto picks h264_nvenc where it opens."""
    if choice not in ENCODINGS:
        raise ValueError(f"video encoding {choice!r}: one of {', '.join(ENCODINGS)}")
    if choice == "auto":
        return "h264_nvenc" if encoder_opens("h264_nvenc") else "libx264"
    return choice


def packet_kbps(width: int, height: int, fps: float) -> int:
    low, high = PACKET_KBPS
    return int(min(max(PACKET_BITS_PER_PIXEL * width * height * fps / 1e3, low), high))


class PacketEncoder:
    """Frames to packets (90 kHz timestamps; H.264 in Annex-B) that aiortc's sender of their codec packs as they
    are. Made on the first frame (its size), and again if the size or the rate changes. `request_keyframe` may be
    called from any thread."""

    def __init__(self, codec: str, fps: float) -> None:
        self.codec, self.fps = codec, fps
        self._context: Any = None
        self._keyframe = threading.Event()
        self._estimate_kbps: float | None = None  # the viewer's bandwidth estimate, when it has sent one
        self._opened_at = 0.0

    def request_keyframe(self) -> None:
        self._keyframe.set()

    def follow(self, bits_per_s: float) -> None:
        """The viewer's estimate of its bandwidth (REMB): the rate follows it from the next frame on."""
        self._estimate_kbps = bits_per_s / 1e3

    def target_kbps(self, width: int, height: int) -> int:
        """The rate for this size: the size's own, or the viewer's estimate within its floor and twice that."""
        own = packet_kbps(width, height, self.fps)
        if self._estimate_kbps is None:
            return own
        return int(min(max(self._estimate_kbps, PACKET_KBPS[0]), 2 * own, PACKET_KBPS[1]))

    def _stale(self, frame: av.VideoFrame) -> bool:
        context = self._context
        if context is None or (context.width, context.height) != (frame.width, frame.height):
            return True
        wanted = self.target_kbps(frame.width, frame.height) * 1000
        moved = abs(wanted - context.bit_rate) > RATE_CHANGE * context.bit_rate
        return moved and time.monotonic() - self._opened_at >= RATE_EVERY_S

    def _open(self, width: int, height: int) -> Any:
        context = av.CodecContext.create(self.codec, "w")
        context.width, context.height, context.pix_fmt = width, height, "yuv420p"
        context.time_base = VIDEO_CLOCK
        context.framerate = fractions.Fraction(self.fps).limit_denominator(1001)
        context.bit_rate = self.target_kbps(width, height) * 1000
        self._opened_at = time.monotonic()
        context.gop_size = max(1, round(KEYFRAME_EVERY_S * self.fps))
        context.max_b_frames = 0
        options = dict(_OPTIONS.get(self.codec, {}))
        if self.codec == "libvpx":  # a constant rate (minrate = maxrate) with a second's buffer, as aiortc's VP8
            context.qmin, context.qmax = 2, 56
            options.update({key: str(context.bit_rate) for key in ("minrate", "maxrate", "bufsize")})
            context.thread_count = number_of_threads(width * height, os.cpu_count() or 1)
        context.options = options
        context.open()
        return context

    def encode(self, frame: av.VideoFrame, time_s: float) -> list[av.Packet]:
        """The packets of one frame shown at `time_s` seconds (from the session's start)."""
        if self._stale(frame):  # a new size or rate: a new stream, which starts with a keyframe
            self._context = self._open(frame.width, frame.height)
            self._keyframe.clear()
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        frame.pts, frame.time_base = round(time_s / VIDEO_CLOCK), VIDEO_CLOCK
        asked = self._keyframe.is_set()
        if asked:
            self._keyframe.clear()
        frame.pict_type = av.video.frame.PictureType.I if asked else av.video.frame.PictureType.NONE
        packets = list(self._context.encode(frame))
        for packet in packets:
            packet.time_base = VIDEO_CLOCK
        return packets
