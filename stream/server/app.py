"""`recast serve`: the aiohttp app of DESIGN.md 3.4 - titles, casts, sessions and WebRTC signalling, the preview
page, /healthz and /metrics. Blocking work (decode, dlib, recast) runs in each session's worker thread."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from stream.casts.cast import Cast
from stream.server import whep, whip
from stream.server.http import (
    ACCESS,
    API_KEY,
    MAX_BODY,
    REQUESTS,
    STATIC,
    Access,
    auth,
    error,
    expect_within_limit,
    json_errors,
    json_object,
    quiet_parser_rejections,
)
from stream.server.service import SERVICE, ServerConfig, Service, admit, negotiate, session_of
from stream.server.titles import Title
from stream.server.webrtc_http import cors_for_players


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html")


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.StreamResponse:
    service: Service = request.app[SERVICE]
    return web.Response(text=service.metrics.render(), content_type="text/plain", charset="utf-8")


async def list_titles(request: web.Request) -> web.StreamResponse:
    service: Service = request.app[SERVICE]
    casts = list(service.casts.values())
    cast_ids = [c.cast_id for c in casts]
    return web.json_response([t.describe(casts) for t in service.titles.values()]
                             + [c.describe(cast_ids) for c in service.channels.values()])


async def list_casts(request: web.Request) -> web.StreamResponse:
    service: Service = request.app[SERVICE]
    return web.json_response([{"id": c.cast_id, "kind": c.kind, "source": c.source,
                               "engine": service.casting.engine_of(c.cast_id),
                               "thumbnail": f"/api/casts/{c.cast_id}/thumbnail.jpg"} for c in service.casts.values()])


async def cast_thumbnail(request: web.Request) -> web.StreamResponse:
    service: Service = request.app[SERVICE]
    data = service.casting.thumbnails.get(request.match_info["cast"])
    if data is None:
        return error(404, "not_found", f"no cast {request.match_info['cast']!r}")
    return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


async def create_session(request: web.Request) -> web.StreamResponse:
    service: Service = request.app[SERVICE]
    body = await json_object(request)
    camera = body.get("camera") is True and "title" not in body
    if not camera and not (isinstance(body.get("title"), str) and "camera" not in body):
        return error(400, "bad_request", 'give {"title": ID} or {"camera": true}')
    session = admit(service, request[API_KEY], None if camera else body["title"])
    return web.json_response({"session": session.id}, status=201)


async def offer(request: web.Request) -> web.StreamResponse:
    session_of(request)  # an unknown session is refused before its body is read
    body = await json_object(request)
    # the body took time to arrive: the session may have ended meanwhile (DELETE, the reaper; an ended session is
    # out of the table), so it is looked up again
    session = session_of(request)
    local = await negotiate(request.app[SERVICE], session, body)
    return web.json_response({"sdp": local.sdp, "type": local.type})


async def delete_session(request: web.Request) -> web.StreamResponse:
    service: Service = request.app[SERVICE]
    session = session_of(request)
    await service.close(session.id, "hangup")
    return web.Response(status=204)


def build_app(config: ServerConfig, titles: dict[str, Title], casts: Sequence[Cast],
              authorise: Any = auth) -> web.Application:
    """The service's app; `authorise` is the middleware that says who a request speaks for (`auth`: API keys;
    a session worker's: the gateway's signature, stream/server/worker.py)."""
    quiet_parser_rejections()
    app = web.Application(middlewares=[cors_for_players, json_errors, authorise], client_max_size=MAX_BODY)
    service = Service(config, titles, casts)
    app[SERVICE] = service
    app[ACCESS] = Access(config.api_keys, config.publish_keys)
    app[REQUESTS] = service.metrics.requests
    app.on_startup.append(service.start)
    app.on_shutdown.append(service.stop)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/titles", list_titles)
    app.router.add_get("/api/casts", list_casts)
    app.router.add_get("/api/casts/{cast}/thumbnail.jpg", cast_thumbnail)
    app.router.add_post("/api/sessions", create_session, expect_handler=expect_within_limit)
    app.router.add_post("/api/sessions/{sid}/offer", offer, expect_handler=expect_within_limit)
    app.router.add_delete("/api/sessions/{sid}", delete_session)
    whep.add_routes(app)
    whip.add_routes(app)
    return app
