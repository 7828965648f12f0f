"""The gateway's signature on what it sends a session worker: a worker never acts on a request the gateway did not
sign. The signature is an HMAC-SHA256, under the fleet's secret, of the method, the path with its query, the owner
(a hash of the API key that made the request, never the key itself), a timestamp, a random nonce (two identical
requests in the same millisecond are still signed apart, so a worker's replay guard refuses only true replays) and
the body's sha256; a worker accepts it within `MAX_SKEW_S` of its own clock."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

SIGNATURE = "X-Recast-Signature"
OWNER = "X-Recast-Owner"
MAX_SKEW_S = 30.0
SECRET_BYTES = 32


class BadSignature(Exception):
    """A request a worker must refuse: unsigned, signed with another secret, stale, or altered."""


def new_secret() -> str:
    return secrets.token_hex(SECRET_BYTES)


def owner_of(api_key: str) -> str:
    """What a worker knows of the key that owns a session: enough to tell keys apart, useless to make requests."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _mac(secret: str, method: str, path: str, owner: str, stamp: str, nonce: str, body: bytes) -> str:
    message = "\n".join((method.upper(), path, owner, stamp, nonce, hashlib.sha256(body).hexdigest())).encode()
    return hmac.new(bytes.fromhex(secret), message, hashlib.sha256).hexdigest()


def sign(secret: str, method: str, path: str, owner: str, body: bytes = b"", now: float | None = None
         ) -> dict[str, str]:
    """The headers that make a request to a worker one the worker trusts."""
    stamp, nonce = f"{time.time() if now is None else now:.3f}", secrets.token_hex(8)
    return {SIGNATURE: f"v1,{stamp},{nonce},{_mac(secret, method, path, owner, stamp, nonce, body)}", OWNER: owner}


def verify(secret: str, method: str, path: str, headers: dict[str, str] | object, body: bytes,
           now: float | None = None) -> str:
    """The owner a signed request speaks for; raises BadSignature for anything the gateway did not sign just now."""
    get = getattr(headers, "get")  # noqa: B009  (a dict or aiohttp's CIMultiDict)
    value, owner = get(SIGNATURE, ""), get(OWNER, "")
    parts = value.split(",")
    version, stamp, nonce, mac = parts if len(parts) == 4 else ("", "", "", "")
    if version != "v1" or not stamp or not nonce or not mac or not owner or len(owner) > 64:
        raise BadSignature("the request is not signed by the gateway")
    try:
        when = float(stamp)
    except ValueError:
        raise BadSignature("the signature's timestamp is not a number") from None
    if abs((time.time() if now is None else now) - when) > MAX_SKEW_S:
        raise BadSignature("the signature is stale")
    if not hmac.compare_digest(mac, _mac(secret, method, path, owner, stamp, nonce, body)):
        raise BadSignature("the signature does not match")
    return str(owner)
