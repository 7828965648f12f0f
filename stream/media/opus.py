"""Sound as WebRTC carries it: 48 kHz stereo in 20 ms frames (what aiortc's Opus encoder takes), and Opus packets
made from it once for many listeners (a baked title's renditions, a live channel)."""

from __future__ import annotations

import fractions
from typing import Any

import av

RATE = 48000  # Opus's clock
FRAME = 960  # samples a frame: 20 ms
CLOCK = fractions.Fraction(1, RATE)
BITS_PER_S = 64000


def resampler() -> av.AudioResampler:
    """Any sound to s16 stereo at 48 kHz in 20 ms frames."""
    return av.AudioResampler(format="s16", layout="stereo", rate=RATE, frame_size=FRAME)


class OpusEncoder:
    """Sound to Opus packets, each frame timed by a running count of samples from `first_sample`."""

    def __init__(self, first_sample: int = 0) -> None:
        self.samples = first_sample  # the next frame's first sample
        self._resampler = resampler()
        self._context: Any = av.CodecContext.create("libopus", "w")
        self._context.sample_rate, self._context.layout, self._context.format = RATE, "stereo", "s16"
        self._context.time_base = CLOCK
        self._context.bit_rate = BITS_PER_S
        self._context.open()

    def frames(self, sound: av.AudioFrame | None) -> list[av.AudioFrame]:
        """Decoded sound as 20 ms frames, not yet timed (None: what the resampler still holds)."""
        return list(self._resampler.resample(sound))

    def encode(self, frame: av.AudioFrame | None) -> list[av.Packet]:
        """The packets of one 20 ms frame of `frames`, timed at the count (None: the encoder's tail)."""
        if frame is not None:
            frame.pts, frame.time_base = self.samples, CLOCK
            self.samples += frame.samples
        packets = list(self._context.encode(frame))
        for packet in packets:
            packet.time_base = CLOCK
        return packets
