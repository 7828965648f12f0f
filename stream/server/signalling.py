"""WebRTC signalling for a session: its peer connection built from a checked offer, the session's media tracks
added to the transceivers the offer made, and the answer. No HTTP here: the service's offer route checks the
request and the SDP (stream/server/validate.py) and hands them over."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, unpack_remb_fci

from stream.server.channels import ChannelAudioTrack, ChannelVideoTrack
from stream.server.encoding import H264_ENCODERS, MIME_TYPES, PacketEncoder, offers_h264, session_codec
from stream.server.media import CameraVideoTrack, TitleAudioTrack, TitleVideoTrack
from stream.server.relay import RelayAudioTrack, RelayVideoTrack, TitleRenditions
from stream.server.sessions import Session, guard_data_channel_text
from stream.server.validate import Offer


async def answer(session: Session, sdp: str, offered: Offer, on_end: Callable[[str], Awaitable[None]],
                 video_encoder: str = "libx264") -> str | None:
    """Give `session` a peer connection for the offer and make its answer (in `session.pc.localDescription`); why
    the offer cannot be used, or None. `on_end(reason)` is awaited when the peer connection fails or closes.
    `video_encoder`: who encodes a title's video (stream/server/encoding.py; resolved, not auto)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    session.pc = pc  # from here on, closing the session closes the peer connection
    session.on_end = on_end
    pc.on("datachannel", session.attach_channel)

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            await on_end(f"peer_{pc.connectionState}")

    if session.channel is not None:
        return await _answer_channel(session, pc, sdp, offered)
    if session.title is None:

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "video" and not session.tracks and not session.closed:
                out = CameraVideoTrack(session, track)
                session.tracks.append(out)
                pc.addTrack(out)
            else:  # the viewer's audio, a second video: read and dropped, or aiortc queues them without bound
                session.discard(track)

    relayed = relay_for(session, sdp)
    # the session encodes the video itself unless aiortc is asked to; a relayed session's live path in H.264
    codec = session_codec(video_encoder, sdp)
    if relayed is not None:
        codec = codec if codec in H264_ENCODERS else "libx264"
    encoder = None
    if session.title is not None and codec is not None:
        encoder = PacketEncoder(codec, session.title.fps)
        packet_sender(pc, encoder, MIME_TYPES[codec])  # before the offer is read: the codecs are chosen as it is
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        guard_data_channel_text(pc, session.refuse_text)
        if session.title is not None and not session.closed:
            # tracks go to the transceivers the offer made, so a kind it does not receive (audio) is left out
            period = session.title.duration if session.title.loop else None
            if relayed is not None:
                assert encoder is not None  # a relayed offer takes H.264
                video: MediaStreamTrack = RelayVideoTrack(session, relayed, session.title.loop,
                                                          live_from(session, relayed, encoder))
            else:
                video = TitleVideoTrack(session, session.title.path, session.title.fps, period, encoder)
            session.tracks.append(video)
            pc.addTrack(video)  # on the transceiver packet_sender made, if it did
            if session.title.has_audio and offered.receives("audio"):
                if relayed is not None and relayed.audio is not None:
                    audio: MediaStreamTrack = RelayAudioTrack(session, relayed.audio,
                                                              relayed.duration if session.title.loop else None,
                                                              relayed.origin)
                else:
                    audio = TitleAudioTrack(session, session.title.path, period)
                session.tracks.append(audio)
                pc.addTrack(audio)
        if session.title is None and not session.tracks:
            return "a camera session's offer must send video"
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:  # aiortc raises ValueError and others for SDP it cannot use
        return str(exc)[:200]
    return None


def relay_for(session: Session, sdp: str) -> TitleRenditions | None:
    """The renditions that serve this session (stream/server/relay.py), or None for the live path alone: a title
    with renditions and an offer that takes H.264. A choice they do not cover is played live by the relay's track."""
    title = session.title
    renditions = title.renditions if title is not None else None
    if renditions is None or not offers_h264(sdp):
        return None
    session.state.path = "relay" if renditions.covered(session.state) else "live"
    return renditions


def live_from(session: Session, renditions: TitleRenditions, encoder: PacketEncoder
              ) -> Callable[[int, float, int], TitleVideoTrack]:
    """What a relayed session plays for a choice no rendition covers: the live path in H.264 packets, from a frame
    of a pass (with the seconds and frames of the passes before), on the renditions' timeline."""
    title = session.title
    assert title is not None

    def make(start: int, shift_s: float, shift_frames: int) -> TitleVideoTrack:
        return TitleVideoTrack(session, title.path, title.fps, renditions.duration if title.loop else None,
                               encoder, origin=renditions.origin, start=(start, shift_s, shift_frames),
                               start_time=renditions.origin + renditions.time(start), pass_frames=renditions.frames)

    return make


async def _answer_channel(session: Session, pc: RTCPeerConnection, sdp: str, offered: Offer) -> str | None:
    """A viewer of a live channel: the H.264 packets of its choice's stream and the channel's Opus packets."""
    if not offers_h264(sdp):
        return "a live channel is sent in H.264, which this offer does not take"
    video = ChannelVideoTrack(session, session.channel)
    session.state.path = "channel"
    packet_sender(pc, video, "video/H264")  # a keyframe the viewer asks for comes from its choice's stream
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        guard_data_channel_text(pc, session.refuse_text)
        session.tracks.append(video)
        pc.addTrack(video)
        if offered.receives("audio"):
            audio = ChannelAudioTrack(session, session.channel)
            session.tracks.append(audio)
            pc.addTrack(audio)
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:  # aiortc raises ValueError and others for SDP it cannot use
        return str(exc) or type(exc).__name__
    return None


class KeyframeSource(Protocol):
    """Who answers a viewer's keyframe requests and bandwidth estimates: the session's encoder, or a live
    channel's stream of the viewer's choice."""

    def request_keyframe(self) -> None: ...

    def follow(self, bits_per_s: float) -> None: ...


def packet_sender(pc: RTCPeerConnection, encoder: KeyframeSource, mime_type: str) -> RTCRtpSender:
    """A video sender for packets the session encodes (`mime_type`: video/H264 or video/VP8), made before the
    viewer's offer is read: its transceiver negotiates that codec only (the offer's video takes it); a keyframe the
    viewer asks for (PLI, FIR) comes from the session's encoder, whose rate follows the viewer's bandwidth estimate
    (REMB). aiortc does both itself only for frames it encodes: the sender's two hooks for them are pointed at the
    session's encoder."""
    transceiver = pc.addTransceiver("video", direction="sendonly")
    codecs = RTCRtpSender.getCapabilities("video").codecs
    transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() in (mime_type.lower(), "video/rtx")])
    sender = transceiver.sender
    sender._send_keyframe = encoder.request_keyframe  # type: ignore[method-assign]  # on PLI and FIR
    handle_rtcp = sender._handle_rtcp_packet

    async def follow_estimates(packet: Any) -> None:  # the viewer's bandwidth estimate (REMB) sets the rate
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            with contextlib.suppress(ValueError):  # an application packet that is not REMB
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
                if sender._ssrc in ssrcs:
                    encoder.follow(bitrate)
        await handle_rtcp(packet)

    sender._handle_rtcp_packet = follow_estimates  # type: ignore[method-assign]
    return sender
