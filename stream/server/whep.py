"""WHEP egress (draft-ietf-wish-whep): any WHEP player watches a title, the recast and the cast chosen in the query.

    POST    /whep/TITLE?recast=1&cast=ID   an SDP offer (application/sdp) -> 201, the answer, Location, ETag
    PATCH   /whep/TITLE/SESSION            trickled candidates (application/trickle-ice-sdpfrag) -> 204
    DELETE  /whep/TITLE/SESSION            the viewer leaves -> 200
    OPTIONS on either                      CORS preflight

A WHEP viewer is a session like any other (the same keys, limits, relay of baked renditions, `state` on the
`control` data channel when the player opens one), started and answered in one request. `recast` is 1 or 0
(default: 1, as a new session starts), `cast` a cast id of /api/casts (default: the service's first).
"""

from __future__ import annotations

import json

from aiohttp import web

from stream.server.http import API_KEY, ApiError
from stream.server.service import SERVICE, Service, admit, negotiate, session_of
from stream.server.sessions import Session
from stream.server.webrtc_http import (
    WHEP_PATHS,
    add_protocol_routes,
    created,
    entity_tag,
    read_fragment,
    read_sdp,
    trickle,
)

TRUE, FALSE = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


def choice_from_query(request: web.Request) -> list[dict[str, object]]:
    """The control messages that set the viewer's first choice from `?recast=` and `?cast=` (400 if malformed)."""
    messages: list[dict[str, object]] = []
    recast = request.query.get("recast")
    if recast is not None:
        if recast.lower() not in TRUE + FALSE:
            raise ApiError(400, "bad_request", "recast is 1 or 0")
        messages.append({"type": "recast", "enabled": recast.lower() in TRUE})
    cast = request.query.get("cast")
    if cast is not None:
        messages.append({"type": "cast", "track": "all", "cast": cast})
    return messages


async def _choose(service: Service, session: Session, messages: list[dict[str, object]]) -> None:
    for message in messages:
        reply = session.handle_control(json.dumps(message))
        if reply.get("type") == "error":
            await service.close(session.id, "bad_request")
            raise ApiError(400, str(reply["error"]), f"cannot start with {message}: {reply['message']}")


async def offer(request: web.Request) -> web.StreamResponse:
    service: Service = request.app[SERVICE]
    messages = choice_from_query(request)
    sdp = await read_sdp(request)
    title = request.match_info["title"]
    session = admit(service, request[API_KEY], title)
    await _choose(service, session, messages)
    local = await negotiate(service, session, {"sdp": sdp, "type": "offer"})
    return created(local.sdp, f"/whep/{title}/{session.id}", entity_tag(session.id))


def _resource(request: web.Request) -> Session:
    session = session_of(request)
    if session.watching != request.match_info["title"]:
        raise ApiError(404, "unknown_session", "no such session for this key")
    return session


async def patch(request: web.Request) -> web.StreamResponse:
    session = _resource(request)
    fragment = await read_fragment(request, entity_tag(session.id))
    session = _resource(request)  # it may have ended while the body arrived
    if session.pc is None:
        raise ApiError(409, "not_negotiated", "this session has no peer connection yet")
    await trickle(session.pc, fragment)
    return web.Response(status=204)


async def delete(request: web.Request) -> web.StreamResponse:
    service: Service = request.app[SERVICE]
    session = _resource(request)
    await service.close(session.id, "hangup")
    return web.Response(status=200)


def add_routes(app: web.Application) -> None:
    add_protocol_routes(app, WHEP_PATHS, offer, patch, delete)
