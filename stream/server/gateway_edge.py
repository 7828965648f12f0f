"""The gateway's WHEP and WHIP routes (stream/server/whep.py, whip.py): each request checked here as a single process
checks it, then forwarded, signed, to a worker: a WHEP player placed as any session is (a viewer of a live channel
on the channel's worker), a WHIP publisher on the best worker with room (or its channel's, when it comes back);
their PATCH and DELETE go to the worker that holds them, and a worker's answer comes back with the headers the
protocols give meaning to (Location, ETag, Accept-Patch)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from stream.server.http import ApiError, read_body
from stream.server.service import checked_offer
from stream.server.webrtc_http import MAX_FRAGMENT, SDP_TYPE, WHEP_PATHS, WHIP_PATHS, add_protocol_routes, read_sdp
from stream.server.whep import choice_from_query
from stream.server.whip import checked_publish_offer

PASSED_BACK = ("Content-Type", "Location", "ETag", "Accept-Patch")


def _passed_on(status: int, data: bytes, headers: dict[str, str]) -> web.Response:
    return web.Response(status=status, body=data,
                        headers={name: headers[name] for name in PASSED_BACK if name in headers})


def _resource_id(_data: bytes, headers: dict[str, str]) -> str:
    return headers["Location"].rsplit("/", 1)[1]


def add_edge_routes(app: web.Application, key: web.AppKey[Any]) -> None:
    """WHEP and WHIP on the gateway's app, whose Gateway is `app[key]`."""

    async def whep_offer(request: web.Request) -> web.StreamResponse:
        choice_from_query(request)
        sdp = await read_sdp(request)
        await asyncio.to_thread(checked_offer, {"sdp": sdp, "type": "offer"})
        gateway = request.app[key]
        status, data, headers = await gateway.open_session(request, request.match_info["title"],
                                                           request.path_qs, sdp.encode(), SDP_TYPE, _resource_id)
        return _passed_on(status, data, headers)

    async def forward(request: web.Request, worker: Any) -> tuple[int, bytes, dict[str, str]]:
        """A PATCH or DELETE on a session's resource, to its worker."""
        gateway = request.app[key]
        body = await read_body(request) if request.method == "PATCH" else b""
        if len(body) > MAX_FRAGMENT:
            raise ApiError(413, "request_entity_too_large", f"a fragment is at most {MAX_FRAGMENT} bytes")
        passed = {"If-Match": request.headers["If-Match"]} if "If-Match" in request.headers else {}
        try:
            return await gateway._exchange(worker, request.method, request.path, body, gateway.owner(request),
                                           timeout=10.0, content_type=request.content_type, passed=passed)
        except (aiohttp.ClientError, TimeoutError):
            raise ApiError(502, "worker_unreachable", "the session's worker did not answer") from None

    async def whep_resource(request: web.Request) -> web.StreamResponse:
        gateway = request.app[key]
        worker = gateway.session_of(request)
        status, data, headers = await forward(request, worker)
        if request.method == "DELETE" and status == 200:
            worker.sessions.discard(request.match_info["sid"])
            gateway._forget(request.match_info["sid"], "ended")
        return _passed_on(status, data, headers)

    async def whip_publish(request: web.Request) -> web.StreamResponse:
        gateway = request.app[key]
        name = request.match_info["channel"]
        sdp = await read_sdp(request)
        await asyncio.to_thread(checked_publish_offer, sdp)
        if gateway.draining:
            raise ApiError(503, "draining", "the server is shutting down and takes no new publishers")
        placed = gateway.channels.get(name)
        candidates = [gateway.workers[placed]] if placed in gateway.workers else gateway.place(None)
        if not candidates:
            raise ApiError(503, "busy", "every session worker is full")
        worker, owner = candidates[0], gateway.owner(request)
        try:
            status, data, headers = await gateway._exchange(worker, "POST", request.path, sdp.encode(), owner,
                                                            content_type=SDP_TYPE)
        except (aiohttp.ClientError, TimeoutError):
            raise ApiError(502, "worker_unreachable", "the worker did not answer") from None
        if status == 201:
            gateway.channels[name] = worker.name
            gateway.publishers[_resource_id(data, headers)] = (worker.name, owner)
        return _passed_on(status, data, headers)

    async def whip_resource(request: web.Request) -> web.StreamResponse:
        gateway = request.app[key]
        placed = gateway.publishers.get(request.match_info["pid"])
        worker = gateway.workers.get(placed[0]) if placed is not None else None
        if placed is None or worker is None or (placed[1] != gateway.owner(request) and not gateway.access.open):
            raise ApiError(404, "unknown_session", "no such publisher for this key")
        status, data, headers = await forward(request, worker)
        if request.method == "DELETE" and status == 200:
            gateway.publishers.pop(request.match_info["pid"], None)
            gateway.channels.pop(request.match_info["channel"], None)
        return _passed_on(status, data, headers)

    add_protocol_routes(app, WHEP_PATHS, whep_offer, whep_resource, whep_resource)
    add_protocol_routes(app, WHIP_PATHS, whip_publish, whip_resource, whip_resource)
