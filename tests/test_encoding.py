"""The session's own encoders (stream/server/encoding.py): H.264 and VP8 packets aiortc can send as they are,
keyframes on time and on request (a viewer's PLI reaches them through aiortc's sender), the choice of encoder and
its fallbacks. h264_nvenc is libx264's code with another codec name: it runs where a GPU with NVENC is lent (`gpu`
marker)."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtp import RTCP_PSFB_APP, RTCP_PSFB_PLI, RtcpPsfbPacket, pack_remb_fci

from stream.server.encoding import (
    KEYFRAME_EVERY_S,
    RATE_EVERY_S,
    PacketEncoder,
    encoder_opens,
    offers_h264,
    packet_kbps,
    resolve_encoding,
    session_codec,
)
from stream.server.media import TitleVideoTrack, to_video_frame
from stream.server.signalling import packet_sender


def _frames(count: int, size: tuple[int, int] = (256, 192)) -> list[av.VideoFrame]:
    """A moving gradient: something for the encoder to predict."""
    h, w = size
    out = []
    for i in range(count):
        x = np.linspace(0, 255, w)[None, :, None] + 4 * i
        image = np.broadcast_to(np.mod(x + np.arange(h)[:, None, None], 256), (h, w, 3)).astype(np.uint8)
        out.append(to_video_frame(image, i / 25))
    return out


def _encode_all(encoder: PacketEncoder, frames: list[av.VideoFrame], fps: float = 25) -> list[av.Packet]:
    return [p for i, f in enumerate(frames) for p in encoder.encode(f, i / fps)]


@pytest.mark.parametrize("codec", ["libx264", "libvpx"])
def test_packets_are_ones_aiortc_sends_as_they_are_and_decode_frame_for_frame(codec: str) -> None:
    """H.264 in Annex-B (start codes), VP8 frames; one packet a frame, on the 90 kHz clock."""
    encoder = PacketEncoder(codec, 25)
    frames = _frames(30)
    packets = _encode_all(encoder, frames)
    assert len(packets) == 30  # one packet a frame: no B-frames, no look-ahead
    assert packets[0].is_keyframe
    assert [round(float(p.pts * p.time_base) * 25) for p in packets] == list(range(30))
    # what aiortc's sender does with a packet: H.264 split at the start codes, VP8 cut with its payload descriptor
    if codec == "libx264":
        assert bytes(packets[0]).startswith(b"\x00\x00\x00\x01")
        payloads, timestamp = H264Encoder().pack(packets[3])
    else:
        assert bytes(packets[0])[3:6] == b"\x9d\x01\x2a"  # a VP8 keyframe's start code
        payloads, timestamp = Vp8Encoder().pack(packets[3])
    assert payloads and timestamp == 3 * 3600
    decoder = av.CodecContext.create("h264" if codec == "libx264" else "libvpx", "r")
    decoded = [f for p in packets for f in decoder.decode(p)]
    assert len(decoded) == 30
    error = np.abs(decoded[-1].to_ndarray(format="rgb24").astype(int) - frames[-1].to_ndarray(format="rgb24")).mean()
    assert error < 6, error  # grey levels on average: lossy, but the picture


@pytest.mark.parametrize("codec", ["libx264", "libvpx"])
def test_keyframes_come_on_time_on_request_and_on_a_new_size(codec: str) -> None:
    encoder = PacketEncoder(codec, 25)
    packets = _encode_all(encoder, _frames(2 * round(KEYFRAME_EVERY_S * 25) + 1))
    keys = [i for i, p in enumerate(packets) if p.is_keyframe]
    assert keys == [0, round(KEYFRAME_EVERY_S * 25), 2 * round(KEYFRAME_EVERY_S * 25)]
    frames = _frames(6)
    encoder.encode(frames[1], 0.04)
    encoder.request_keyframe()
    assert encoder.encode(frames[2], 0.08)[0].is_keyframe
    assert not encoder.encode(frames[3], 0.12)[0].is_keyframe
    bigger = _frames(1, (320, 240))[0]
    assert encoder.encode(bigger, 0.16)[0].is_keyframe  # a new size: a new stream, headers first


@pytest.mark.parametrize(("codec", "mime_type"), [("libx264", "video/H264"), ("libvpx", "video/VP8")])
def test_a_viewers_keyframe_request_and_bandwidth_estimate_reach_the_session_encoder(codec: str,
                                                                                     mime_type: str) -> None:
    """Through aiortc's own RTCP handling: a PLI for the sender's stream asks the session's encoder for a keyframe,
    a REMB sets its rate (within its bounds, a keyframe with the new rate); the transceiver offers its codec only."""
    async def scenario() -> None:
        pc = RTCPeerConnection()
        encoder = PacketEncoder(codec, 25)
        sender = packet_sender(pc, encoder, mime_type)
        track = TitleVideoTrack(session=None, path=None, fps=25, encoder=encoder)  # type: ignore[arg-type]
        assert pc.addTrack(track) is sender
        transceiver = pc.getTransceivers()[0]
        assert {c.mimeType for c in transceiver._preferred_codecs} == {mime_type, "video/rtx"}
        encoder.encode(_frames(1)[0], 0.0)
        await sender._handle_rtcp_packet(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=sender._ssrc))
        frames = _frames(4)
        assert encoder.encode(frames[1], 0.04)[0].is_keyframe
        own = packet_kbps(256, 192, 25)
        assert encoder._context.bit_rate == own * 1000
        remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(400_000, [sender._ssrc]))
        await sender._handle_rtcp_packet(remb)
        assert encoder.target_kbps(256, 192) == 400
        encoder._opened_at -= RATE_EVERY_S  # the rate changes at most once a second
        assert encoder.encode(frames[2], 0.08)[0].is_keyframe and encoder._context.bit_rate == 400_000
        other = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(9_000_000, [12345]))
        await sender._handle_rtcp_packet(other)  # another stream's estimate
        assert encoder.target_kbps(256, 192) == 400
        encoder.follow(50_000_000)
        assert encoder.target_kbps(256, 192) == 2 * own  # never past twice the size's own rate
        encoder.follow(1_000)
        assert encoder.target_kbps(256, 192) == 300  # nor under the floor
        await pc.close()

    asyncio.run(scenario())


def test_the_encoder_choice_and_its_fallbacks() -> None:
    assert resolve_encoding("webrtc") == "webrtc" and resolve_encoding("libvpx") == "libvpx"
    assert resolve_encoding("auto") == ("h264_nvenc" if encoder_opens("h264_nvenc") else "libx264")
    with pytest.raises(ValueError, match="one of auto, webrtc, libx264, libvpx, h264_nvenc"):
        resolve_encoding("vp9")
    both = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n"
    vp8, h264 = both.replace("a=rtpmap:102 H264/90000\r\n", ""), both.replace("a=rtpmap:96 VP8/90000\r\n", "")
    av1 = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 45\r\na=rtpmap:45 AV1/90000\r\n"
    # the session encodes the chosen codec, or the other one where the offer lacks it; aiortc when asked to
    assert [session_codec("libx264", sdp) for sdp in (both, vp8, h264, av1)] == ["libx264", "libvpx", "libx264", None]
    assert [session_codec("libvpx", sdp) for sdp in (both, vp8, h264, av1)] == ["libvpx", "libvpx", "libx264", None]
    assert session_codec("h264_nvenc", vp8) == "libvpx" and session_codec("webrtc", both) is None
    assert offers_h264("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=rtpmap:96 VP8/90000\r\n"
                       "a=rtpmap:102 H264/90000\r\n")
    assert not offers_h264("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n")
    assert [c.mimeType for c in RTCRtpSender.getCapabilities("video").codecs].count("video/H264") >= 1
    assert packet_kbps(512, 512, 25) == 655 and packet_kbps(64, 64, 10) == 300 and packet_kbps(3840, 2160, 60) == 6000


@pytest.mark.gpu
@pytest.mark.skipif(not encoder_opens("h264_nvenc"), reason="needs an NVIDIA GPU with NVENC")
def test_nvenc_packets_decode() -> None:
    packets = _encode_all(PacketEncoder("h264_nvenc", 25), _frames(30))
    assert packets[0].is_keyframe and bytes(packets[0]).startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01"))
    decoder = av.CodecContext.create("h264", "r")
    assert len([f for p in packets for f in decoder.decode(p)]) >= 29  # NVENC may hold one frame back at the end
