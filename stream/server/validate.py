"""What the server accepts from a client, checked before anything is built: JSON bodies and control messages
(size, encoding, nesting) and SDP offers (the fields an answer depends on, RFC 8866 and the WebRTC specs).

Everything here is pure and cheap: it runs on the event loop, so it must not block it, and it never builds a peer
connection, a decoder or a model. A failure raises :class:`Refused` with a code and a message for the client.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

MAX_JSON_DEPTH = 16  # our bodies and control messages are two levels deep; a JSON value deeper than this is refused


class Refused(ValueError):
    """Input the server will not use; ``code`` is the machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- JSON ---------------------------------------------------------------------------------------------------------


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return deepest


def parse_json(text: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON text nested at most ``max_depth`` deep. Deeper input (which would otherwise exhaust the parser's
    recursion) and malformed input raise :class:`Refused` ("too_deep", "bad_json")."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise Refused("too_deep", f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as err:
        raise Refused("bad_json", f"not JSON: {getattr(err, 'msg', 'cannot decode')}") from None
    if _depth(value) > max_depth:
        raise Refused("too_deep", f"JSON nested deeper than {max_depth} levels")
    return value


def decode_utf8(raw: bytes, what: str) -> str:
    """JSON travels as UTF-8 (RFC 8259); a byte order mark is allowed and dropped."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Refused("bad_json", f"{what} is not UTF-8 text") from None


# --- SDP offers ---------------------------------------------------------------------------------------------------

MAX_MEDIA_SECTIONS = 16
MAX_CANDIDATES = 64  # per offer: a browser offers a few per interface; aioice pairs remote candidates in quadratic time
HASH_BYTES = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64}  # RFC 8122 5
ICE_CHARS = re.compile(r"^[A-Za-z0-9+/]+$")  # RFC 8839 5.4: ice-char
TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")  # RFC 8866 9: token-char
RTP_PROTO = "UDP/TLS/RTP/SAVPF"  # RFC 8829 5.1.2: what a WebRTC offer uses for audio and video
SCTP_PROTOS = ("UDP/DTLS/SCTP", "DTLS/SCTP")  # RFC 8841 4.1 (and the draft form older browsers still send)
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
UINT32 = 2**32 - 1


@dataclass
class MediaSection:
    kind: str
    port: int
    direction: str = "sendrecv"
    mid: str | None = None
    attributes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def rejected(self) -> bool:
        return self.port == 0

    def receives(self) -> bool:
        """The offerer wants to receive this kind (our answer may send it)."""
        return not self.rejected and self.direction in ("sendrecv", "recvonly")

    def sends(self) -> bool:
        return not self.rejected and self.direction in ("sendrecv", "sendonly")


@dataclass
class Offer:
    """What the server needs to know of a checked offer."""

    media: list[MediaSection]

    def receives(self, kind: str) -> bool:
        return any(m.kind == kind and m.receives() for m in self.media)

    def sends(self, kind: str) -> bool:
        return any(m.kind == kind and m.sends() for m in self.media)

    @property
    def has_data_channel(self) -> bool:
        return any(m.kind == "application" and not m.rejected for m in self.media)


def _int(text: str, low: int, high: int, what: str) -> int:
    if not re.fullmatch(r"\d{1,12}", text) or not low <= int(text) <= high:
        raise Refused("bad_sdp", f"{what} must be an integer in [{low}, {high}], not {text[:32]!r}")
    return int(text)


HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}"
                      r"[A-Za-z0-9])?)*\.?$")
CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")


def _check_address(address: str, what: str) -> None:
    """An IP address, or a host name (browsers hide host addresses behind mDNS names such as `abc.local`)."""
    try:
        ipaddress.ip_address(address)
        return
    except ValueError:
        pass
    if re.fullmatch(r"[\d.]+|[\dA-Fa-f:.]*:[\dA-Fa-f:.]*", address) or not HOSTNAME.match(address):
        raise Refused("bad_sdp", f"{what} {address[:64]!r} is neither an IP address nor a host name")


def check_candidate(value: str) -> None:
    """RFC 8839 5.1: foundation component-id transport priority address port typ type [extensions]."""
    parts = value.split()
    if len(parts) < 8 or parts[6] != "typ":
        raise Refused("bad_sdp", "a=candidate must be 'foundation component transport priority address port "
                      "typ type ...'")
    if not 1 <= len(parts[0]) <= 32 or not ICE_CHARS.match(parts[0]):
        raise Refused("bad_sdp", "a candidate's foundation is 1-32 characters of [A-Za-z0-9+/]")
    _int(parts[1], 1, 256, "a candidate's component id")
    if parts[2].lower() not in ("udp", "tcp"):
        raise Refused("bad_sdp", f"candidate transport {parts[2][:16]!r} is not udp or tcp")
    _int(parts[3], 1, 2**31 - 1, "a candidate's priority")
    _check_address(parts[4], "a candidate's address")
    _int(parts[5], 0, 65535, "a candidate's port")
    if parts[7] not in CANDIDATE_TYPES:
        raise Refused("bad_sdp", f"candidate type {parts[7][:16]!r} is not one of {', '.join(CANDIDATE_TYPES)}")


def _check_fingerprint(value: str) -> None:
    parts = value.split()
    if len(parts) != 2:
        raise Refused("bad_sdp", "a=fingerprint must be 'hash-function fingerprint'")
    algorithm, digest = parts[0].lower(), parts[1]
    if algorithm not in HASH_BYTES:
        raise Refused("bad_sdp", f"fingerprint hash {algorithm[:16]!r} is not one of {', '.join(HASH_BYTES)}")
    octets = digest.split(":")
    if len(octets) != HASH_BYTES[algorithm] or not all(re.fullmatch(r"[0-9A-Fa-f]{2}", o) for o in octets):
        raise Refused("bad_sdp", f"a {algorithm} fingerprint is {HASH_BYTES[algorithm]} hex octets separated by ':'")


def _check_attribute(name: str, value: str, section: MediaSection | None) -> None:
    """One a= line; ``section`` is None at session level."""
    payload = section is not None and section.kind in ("audio", "video")
    if name == "fingerprint":
        _check_fingerprint(value)
    elif name == "candidate":
        check_candidate(value)
    elif name == "ice-ufrag":
        if not 4 <= len(value) <= 256 or not ICE_CHARS.match(value):
            raise Refused("bad_sdp", "ice-ufrag must be 4-256 characters of [A-Za-z0-9+/]")
    elif name == "ice-pwd":
        if not 22 <= len(value) <= 256 or not ICE_CHARS.match(value):
            raise Refused("bad_sdp", "ice-pwd must be 22-256 characters of [A-Za-z0-9+/]")
    elif name in ("rtpmap", "fmtp", "rtcp-fb") and payload:
        pt = value.split(" ", 1)[0]
        if not (name == "rtcp-fb" and pt == "*"):
            _int(pt, 0, 127, f"a={name} payload type")
        if name == "rtpmap" and not re.fullmatch(r"\d+ [^/\s]+/\d{1,6}(/\d{1,2})?", value):
            raise Refused("bad_sdp", "a=rtpmap must be 'payload-type encoding/clock-rate[/channels]'")
    elif name == "extmap":
        ident = value.split(" ", 1)[0].split("/", 1)[0]
        _int(ident, 1, 255, "a=extmap id")  # RFC 8285: 1-14 one-byte, 1-255 two-byte; 0 and above 255 never
        if " " not in value:
            raise Refused("bad_sdp", "a=extmap needs an extension URI")
    elif name == "ssrc":
        _int(value.split(" ", 1)[0], 0, UINT32, "a=ssrc")
    elif name == "ssrc-group":
        for ssrc in value.split()[1:]:
            _int(ssrc, 0, UINT32, "a=ssrc-group ssrc")
    elif name == "sctp-port":
        _int(value, 1, 65535, "a=sctp-port")
    elif name == "max-message-size":
        _int(value, 0, UINT32, "a=max-message-size")
    elif name == "mid":
        if not 1 <= len(value) <= 32 or not TOKEN.match(value):
            raise Refused("bad_sdp", "a=mid must be 1-32 token characters")
    elif name == "setup":
        if value not in ("actpass", "active", "passive"):
            raise Refused("bad_sdp", "a=setup must be actpass, active or passive")
    elif name == "rtcp":
        _int(value.split(" ", 1)[0], 0, 65535, "a=rtcp port")


def check_offer(sdp: str) -> Offer:
    """Check an offer's syntax and every field the answer depends on; returns its media sections.

    Refused: control characters (NUL included), lines that are not `x=value`, a missing or malformed o=, s= or t=, a
    media section that is not audio, video or application, a transport other than UDP/TLS/RTP/SAVPF (DTLS/SCTP for
    data channels), payload types outside 0-127, extmap ids outside 1-255, ssrcs outside 32 bits, an sctp-port
    outside 1-65535, a fingerprint with an unknown hash or the wrong length, ICE credentials outside RFC 8839's
    characters and lengths, candidates and c= lines that do not parse (or name no IP address or host name) and more
    than MAX_CANDIDATES of them, an rtpmap that is not 'pt encoding/clock[/channels]', duplicate mids, a BUNDLE
    group naming a mid that no section has, media without ICE credentials or a fingerprint, and an offer with no
    media at all."""
    if re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", sdp):
        raise Refused("bad_sdp", "the SDP contains control characters")
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    if not lines or lines[0] != "v=0":
        raise Refused("bad_sdp", "the SDP must start with v=0")
    session: dict[str, list[str]] = {}
    media: list[MediaSection] = []
    seen: set[str] = set()
    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=" or not "a" <= line[0] <= "z":
            raise Refused("bad_sdp", f"not an SDP line: {line[:40]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            parts = value.split()
            if len(parts) < 4:
                raise Refused("bad_sdp", "m= needs media, port, transport and formats")
            if parts[0] not in ("audio", "video", "application"):
                raise Refused("bad_sdp", f"media {parts[0][:16]!r} is not audio, video or application")
            if len(media) == MAX_MEDIA_SECTIONS:
                raise Refused("bad_sdp", f"more than {MAX_MEDIA_SECTIONS} media sections")
            port = _int(parts[1].split("/", 1)[0], 0, 65535, "m= port")
            if parts[0] == "application":
                if parts[2] not in SCTP_PROTOS:
                    raise Refused("bad_sdp", f"a data channel section uses {' or '.join(SCTP_PROTOS)}, "
                                  f"not {parts[2][:32]!r}")
            else:
                if parts[2] != RTP_PROTO:
                    raise Refused("bad_sdp", f"WebRTC media use {RTP_PROTO}, not {parts[2][:32]!r}")
                for pt in parts[3:]:
                    _int(pt, 0, 127, "m= payload type")
            media.append(MediaSection(parts[0], port))
            continue
        if kind not in seen and kind in "ost":
            seen.add(kind)
            if kind == "o":
                fields = value.split()
                if len(fields) != 6 or not fields[1].isdigit() or not fields[2].isdigit():
                    raise Refused("bad_sdp", "o= must be 'username sess-id sess-version nettype addrtype address'")
            elif kind == "t":
                fields = value.split()
                if len(fields) != 2 or not all(f.isdigit() for f in fields):
                    raise Refused("bad_sdp", "t= must be two integers (start and stop time)")
        elif kind in "ost":
            raise Refused("bad_sdp", f"more than one {kind}= line")
        if kind == "c":
            fields = value.split()
            if len(fields) != 3 or fields[0] != "IN" or fields[1] not in ("IP4", "IP6"):
                raise Refused("bad_sdp", "c= must be 'IN IP4|IP6 address'")
            _check_address(fields[2].split("/", 1)[0], "the c= address")
        if kind != "a":
            continue
        name, _, attr = value.partition(":")
        target = media[-1] if media else None
        _check_attribute(name, attr, target)
        if target is None:
            session.setdefault(name, []).append(attr)
            continue
        target.attributes.setdefault(name, []).append(attr)
        if name in DIRECTIONS:
            target.direction = name
        elif name == "mid":
            target.mid = attr
    candidates = sum(len(m.attributes.get("candidate", ())) for m in media) + len(session.get("candidate", ()))
    if candidates > MAX_CANDIDATES:
        raise Refused("bad_sdp", f"{candidates} ICE candidates; an offer has at most {MAX_CANDIDATES}")
    missing = [k for k in "ost" if k not in seen]
    if missing:
        raise Refused("bad_sdp", f"the SDP has no {', '.join(k + '=' for k in missing)} line")
    if not media:
        raise Refused("no_media", "the offer has no media sections (it must receive video)")
    mids = [m.mid for m in media if m.mid is not None]
    if len(mids) != len(set(mids)):
        raise Refused("bad_sdp", "two media sections share a mid")
    for group in session.get("group", []):
        semantics, *tags = group.split()
        unknown = [t for t in tags if t not in mids]
        if semantics == "BUNDLE" and unknown:
            raise Refused("bad_sdp", f"BUNDLE names mid {unknown[0][:32]!r}, which no media section has")
    for section in media:
        if section.rejected:
            continue
        for need in ("ice-ufrag", "ice-pwd", "fingerprint"):
            if need not in section.attributes and need not in session:
                raise Refused("bad_sdp", f"the {section.kind} section has no a={need} (nor has the session)")
    return Offer(media)
