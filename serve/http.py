"""What every router shares: authentication, the per-key rate limit, and the capped JSON body.

A route calls `admit()` once and gets either the caller (key id, and the parsed body when
asked) or a `ServiceError` that its façade renders in its own error shape. No route
authenticates, counts or reads a body any other way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from serve.auth import ApiKeys
from serve.errors import ErrorKind, ServiceError
from serve.ratelimit import RateLimiter


@dataclass(frozen=True)
class Gate:
    keys: ApiKeys
    limiter: RateLimiter
    max_body_bytes: int


@dataclass(frozen=True)
class Caller:
    key_id: str  # a hash prefix of the key, never the key
    body: Any = None  # the parsed JSON body, when the route asked for it
    base_url: str = ""  # the address the client reached us at (for absolute result URLs)


async def admit(request: Request, json_body: bool = False) -> Caller | ServiceError:
    gate: Gate = request.app.state.gate
    key = gate.keys.identify(request.headers.get("authorization"))
    if key is None:
        return ServiceError(ErrorKind.UNAUTHENTICATED, "Invalid API-key provided.")
    wait_s = await gate.limiter.take(key)
    if wait_s:
        return ServiceError(ErrorKind.RATE_LIMITED, "Requests rate limit exceeded, please try again later.",
                            retry_after_s=wait_s)
    body = None
    if json_body:
        body = await read_json(request, gate.max_body_bytes)
        if isinstance(body, ServiceError):
            return body
    return Caller(key, body, str(request.base_url))


async def read_body(request: Request, limit: int) -> bytes | ServiceError:
    """The raw body, refused as soon as it passes `limit` (a lying Content-Length included)."""
    too_large = ServiceError(ErrorKind.BODY_TOO_LARGE, f"request body is larger than {limit} bytes")
    if int(request.headers.get("content-length") or 0) > limit:
        return too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return too_large
    return bytes(body)


async def read_json(request: Request, limit: int) -> Any | ServiceError:
    body = await read_body(request, limit)
    if isinstance(body, ServiceError):
        return body
    try:
        return json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return ServiceError(ErrorKind.MALFORMED, f"request body is not valid JSON: {exc}")
