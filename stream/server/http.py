"""The HTTP rules the gateway and a single-process server share: JSON errors, API keys, bounded JSON bodies,
`Expect: 100-continue` answered by the size limit, and aiohttp's parser refusals logged on one line."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from stream.server.metrics import Counter
from stream.server.validate import Refused, decode_utf8, parse_json

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024
MAX_SDP = 128 * 1024
BODY_TIMEOUT_S = 10.0  # a request body must arrive within this; a client trickling it is cut off (408)
CLIENT_GONE = 499  # nginx's status for a request whose client went away; counted, never sent
STATIC = Path(__file__).resolve().parent / "static"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


class ApiError(Exception):
    """A caller's mistake found deep in a handler; the middleware answers it with `error(...)`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class ClientGone(Exception):
    """The client closed the connection before its request was read: nothing to answer, nothing went wrong."""


class ParserRejections(logging.Filter):
    """aiohttp answers requests its HTTP parser refuses (a bad Content-Length, a 20 KB header line, too many
    headers) with 400 itself, but logs each as an error with a traceback; here they become one warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            first = str(exc.message).strip().splitlines()[0] if str(exc.message).strip() else type(exc).__name__
            record.msg, record.args = "refused a malformed request (%s %s): %s", (exc.code, type(exc).__name__,
                                                                                   first[:120])
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_PARSER_REJECTIONS = ParserRejections()


def quiet_parser_rejections() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if _PARSER_REJECTIONS not in server_log.filters:
        server_log.addFilter(_PARSER_REJECTIONS)


@dataclass(frozen=True)
class Access:
    """Who may call: the API keys (none: open access, only for `--demo` on a loopback address)."""

    api_keys: tuple[str, ...] = ()
    publish_keys: tuple[str, ...] = ()  # keys with the right to publish a live channel (WHIP), and nothing else

    @property
    def open(self) -> bool:
        return not self.api_keys


ACCESS = web.AppKey("access", Access)
REQUESTS = web.AppKey("requests", Counter)  # recast_http_requests_total of the app's registry
API_KEY = web.RequestKey("api_key", str)  # the key a request was authorised with ("open" without keys)
PUBLIC_PATHS = ("/", "/healthz")


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unknown"
    try:
        response = await handler(request)
    except ApiError as exc:
        response = error(exc.status, exc.code, str(exc))
    except ClientGone:
        log.info("request %s %s: the client went away before its body arrived", request.method, request.path)
        response = web.Response(status=CLIENT_GONE)  # counted; there is nobody to send it to
    except web.HTTPException as exc:
        if exc.status >= 400:
            response = error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        else:
            raise
    except Exception:
        log.exception("request %s %s failed", request.method, request.path)
        response = error(500, "internal", "internal error")
    request.app[REQUESTS].inc(route=route, status=str(response.status))
    return response


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    access = request.app[ACCESS]
    # a CORS preflight carries no credentials by design (and its answer grants nothing)
    preflight = request.method == "OPTIONS"
    if request.path in PUBLIC_PATHS or request.path.startswith("/static/") or access.open or preflight:
        request[API_KEY] = "open"
        return await handler(request)
    header = request.headers.get("Authorization", "")
    # aiohttp keeps bytes that are not UTF-8 as surrogates; they can never match a key, but must not raise
    given = header[7:].encode("utf-8", "surrogateescape") if header.startswith("Bearer ") else b""
    publishing = request.path.startswith("/whip/")
    matched = ""
    for key in access.publish_keys if publishing else access.api_keys:  # every key, in constant time each
        if hmac.compare_digest(given, key.encode()):
            matched = key
    if not matched:
        if publishing:
            return error(401, "unauthorized", "missing or wrong publish key (Authorization: Bearer KEY); "
                         "viewing keys cannot publish")
        return error(401, "unauthorized", "missing or wrong API key (Authorization: Bearer KEY)")
    request[API_KEY] = matched
    return await handler(request)


async def expect_within_limit(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue` is answered 413 at once when the announced body is over MAX_BODY, never 100 first
    (aiohttp's own handler says 100 to any size)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        return error(413, "request_entity_too_large", f"bodies are at most {MAX_BODY} bytes")
    if request.headers.get("Expect", "").lower() != "100-continue":
        return error(417, "expectation_failed", "the only expectation understood is 100-continue")
    if request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the 100 is not part of the response that follows
    return None


async def read_body(request: web.Request) -> bytes:
    """The raw body, arriving within BODY_TIMEOUT_S (its size is bounded by the app's client_max_size and by the
    Content-Length check in `json_object`)."""
    try:
        return await asyncio.wait_for(request.read(), BODY_TIMEOUT_S)
    except TimeoutError:
        raise ApiError(408, "body_timeout", f"the body did not arrive within {BODY_TIMEOUT_S:.0f} s") from None
    except (ConnectionError, EOFError) as err:
        raise ClientGone from err


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's body as a JSON object: `application/json` (any other type is 415, so that no web page can
    send it without a CORS preflight), at most MAX_BODY bytes arriving within BODY_TIMEOUT_S, UTF-8, nested at
    most MAX_JSON_DEPTH deep."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=request.content_length)
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "JSON bodies are sent as Content-Type: application/json")
    charset = (request.charset or "utf-8").lower().replace("_", "-")
    if charset not in ("utf-8", "utf8"):
        raise ApiError(415, "unsupported_charset", "JSON bodies are UTF-8 (charset=utf-8 or none)")
    raw = await read_body(request)
    try:
        body = parse_json(decode_utf8(raw, "the body"))
    except Refused as err:
        raise ApiError(400, err.code, f"the body must be a JSON object ({err})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    return body
