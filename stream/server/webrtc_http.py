"""What the WebRTC-HTTP protocols, WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep), share: an SDP offer posted as
`application/sdp` and answered `201 Created` with the answer, a `Location` for the session's resource and an
`ETag`; candidates trickled to that resource with `PATCH` as `application/trickle-ice-sdpfrag` (RFC 8840),
answered `204`; `DELETE` on it to end the session; `OPTIONS` and CORS headers so that a player or a publisher on
another origin can call.

Trickle ICE is supported; ICE restarts are not (aiortc cannot restart ICE): a `PATCH` that changes the ICE
credentials is answered `422 Unprocessable Content`, as RFC 9725 (4.3.1) asks of a session that supports one of
the two. A `PATCH` whose `If-Match` names another entity-tag is answered `412`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from aiortc import RTCIceCandidate, RTCPeerConnection
from aiortc.sdp import candidate_from_sdp

from stream.server.http import MAX_SDP, ApiError, Handler, read_body
from stream.server.validate import Refused, check_candidate

SDP_TYPE = "application/sdp"
FRAGMENT_TYPE = "application/trickle-ice-sdpfrag"
EXPOSED_HEADERS = "Location, ETag, Accept-Patch, Link"
MAX_FRAGMENT = 16 * 1024
MAX_FRAGMENT_CANDIDATES = 64


def cors(response: web.StreamResponse) -> web.StreamResponse:
    """A response any origin's script may read, its Location and ETag included."""
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    return response


@web.middleware
async def cors_for_players(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer under /whep/ and /whip/, errors included, readable by a player or publisher on another
    origin (the session API stays same-origin)."""
    response = await handler(request)
    if request.path.startswith(("/whep/", "/whip/")):
        cors(response)
    return response


ENDPOINT_METHODS, RESOURCE_METHODS = "POST, OPTIONS", "PATCH, DELETE, OPTIONS"


async def options_endpoint(request: web.Request) -> web.StreamResponse:
    """OPTIONS on a WHEP or WHIP endpoint."""
    return preflight(ENDPOINT_METHODS, accept_post=True)


async def options_resource(request: web.Request) -> web.StreamResponse:
    """OPTIONS on a session's resource."""
    return preflight(RESOURCE_METHODS, accept_post=False)


WHEP_PATHS = ("/whep/{title}", "/whep/{title}/{sid}")  # an endpoint, and a session's resource under it
WHIP_PATHS = ("/whip/{channel}", "/whip/{channel}/{pid}")


def add_protocol_routes(app: web.Application, paths: tuple[str, str], post: Handler, patch: Handler,
                        delete: Handler) -> None:
    """An endpoint's POST and a resource's PATCH and DELETE, with OPTIONS on both."""
    endpoint, resource = paths
    app.router.add_route("OPTIONS", endpoint, options_endpoint)
    app.router.add_post(endpoint, post)
    app.router.add_route("OPTIONS", resource, options_resource)
    app.router.add_patch(resource, patch)
    app.router.add_delete(resource, delete)


def preflight(methods: str, accept_post: bool) -> web.StreamResponse:
    """The answer to `OPTIONS` on an endpoint (`accept_post`) or on a session's resource."""
    response = web.Response(status=204, headers={
        "Access-Control-Allow-Methods": methods, "Allow": methods,
        "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
        "Access-Control-Max-Age": "86400"})
    if accept_post:
        response.headers["Accept-Post"] = SDP_TYPE
    else:
        response.headers["Accept-Patch"] = FRAGMENT_TYPE
    return response


async def _read_text(request: web.Request, content_type: str, limit: int, what: str) -> str:
    """A body of `content_type` (415 otherwise), at most `limit` bytes (413), UTF-8 (400)."""
    if request.content_type != content_type:
        raise ApiError(415, "unsupported_media_type", f"{what} is sent as Content-Type: {content_type}")
    raw = b""
    if request.content_length is None or request.content_length <= limit:
        raw = await read_body(request)
    if (request.content_length is not None and request.content_length > limit) or len(raw) > limit:
        raise ApiError(413, "request_entity_too_large", f"{what} is at most {limit} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad_sdp", f"{what} is UTF-8 text") from None


async def read_sdp(request: web.Request) -> str:
    """The posted offer: `application/sdp` (415 otherwise), at most MAX_SDP bytes (413), UTF-8 SDP (400)."""
    sdp = await _read_text(request, SDP_TYPE, MAX_SDP, "an offer")
    if not sdp.startswith("v=0"):
        raise ApiError(400, "bad_sdp", "an offer is SDP, starting with v=0")
    return sdp


def created(answer_sdp: str, location: str, etag: str) -> web.StreamResponse:
    """`201 Created`: the answer, where the session's resource is, and its entity-tag."""
    return web.Response(status=201, text=answer_sdp, content_type=SDP_TYPE, headers={
        "Location": location, "ETag": etag, "Accept-Patch": FRAGMENT_TYPE})


def entity_tag(session_id: str) -> str:
    """A session's entity-tag: its ICE credentials never change (no ICE restarts), so neither does it."""
    return f'"{session_id}"'


@dataclass
class Fragment:
    """A trickle-ice-sdpfrag: ICE credentials (present for a restart), candidates by m-line, end-of-candidates."""

    ufrag: str | None = None
    pwd: str | None = None
    candidates: list[tuple[str | None, int, str]] = field(default_factory=list)  # (mid, m-line index, candidate)
    ended: bool = False


def parse_fragment(text: str) -> Fragment:
    """RFC 8840's fragment: `a=ice-ufrag`, `a=ice-pwd`, then per `m=` line its `a=mid`, `a=candidate` and
    `a=end-of-candidates` lines; other lines are ignored. A malformed candidate raises Refused."""
    fragment = Fragment()
    mline, mid = -1, None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            mline, mid = mline + 1, None
        elif line.startswith("a=mid:"):
            mid = line[6:]
        elif line.startswith("a=ice-ufrag:"):
            fragment.ufrag = line[12:]
        elif line.startswith("a=ice-pwd:"):
            fragment.pwd = line[10:]
        elif line.startswith("a=candidate:"):
            check_candidate(line[12:])
            fragment.candidates.append((mid, max(mline, 0), line[12:]))
        elif line == "a=end-of-candidates":
            fragment.ended = True
    if len(fragment.candidates) > MAX_FRAGMENT_CANDIDATES:
        raise Refused("bad_sdp", f"at most {MAX_FRAGMENT_CANDIDATES} candidates a fragment")
    return fragment


async def read_fragment(request: web.Request, etag: str) -> Fragment:
    """A PATCH's fragment, its preconditions checked: If-Match (412), the content type (415), the size (413)."""
    wanted = request.headers.get("If-Match")
    if wanted is not None and wanted.strip() not in ("*", etag):
        raise ApiError(412, "precondition_failed", "If-Match names another entity-tag than this session's")
    try:
        return parse_fragment(await _read_text(request, FRAGMENT_TYPE, MAX_FRAGMENT, "a fragment"))
    except Refused as err:
        raise ApiError(400, err.code, f"cannot use this fragment: {err}") from None


def _remote_credentials(pc: RTCPeerConnection) -> tuple[str | None, str | None]:
    ufrag = pwd = None
    description = pc.remoteDescription
    for line in (description.sdp if description is not None else "").splitlines():
        if line.startswith("a=ice-ufrag:") and ufrag is None:
            ufrag = line[12:].strip()
        elif line.startswith("a=ice-pwd:") and pwd is None:
            pwd = line[10:].strip()
    return ufrag, pwd


async def trickle(pc: RTCPeerConnection, fragment: Fragment) -> None:
    """Give the peer connection the fragment's candidates; a fragment with new ICE credentials (an ICE restart)
    is refused with 422."""
    ufrag, pwd = _remote_credentials(pc)
    if (fragment.ufrag is not None and fragment.ufrag != ufrag) or (fragment.pwd is not None and fragment.pwd != pwd):
        raise ApiError(422, "ice_restart_unsupported", "this server takes trickled candidates but cannot restart "
                       "ICE; start a new session")
    for mid, mline, value in fragment.candidates:
        candidate: RTCIceCandidate = candidate_from_sdp(value)
        candidate.sdpMid, candidate.sdpMLineIndex = mid, mline
        await pc.addIceCandidate(candidate)
    if fragment.ended:
        await pc.addIceCandidate(None)
