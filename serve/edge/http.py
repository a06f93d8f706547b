"""What every router shares: the door skeleton, authentication, the per-key rate limit, and the
capped JSON body.

A door (one API: DashScope, AceData, OpenAI, the page's reads) declares its service class, error
table and error body once as a `Door`, and registers each route with `Door.route`: the route is
admitted (`admit()`: key, rate limit, body), its handler gets the door's service (one per app,
`app.state.services`, by the door's name) and the `Caller`, and whatever it returns (a body, a
`Failure`, a response) is answered in the door's shape. No route authenticates, counts or reads
a body any other way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from cluster.spec.errors import RenderError
from serve.edge import strict_json
from serve.edge.auth import ApiKeys
from serve.edge.errors import ErrorKind, Failure, Reason, ServiceError, reason, retry_headers
from serve.edge.ratelimit import RateLimiter


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
    # Found by the ingress's middleware already (serve/ingress.py `AnonymousLimit`), else here.
    key = getattr(request.state, "key_id", None) or gate.keys.identify(request.headers.get("authorization"))
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
    declared = request.headers.get("content-length") or "0"
    if not declared.isdigit():
        return ServiceError(ErrorKind.MALFORMED, "Content-Length must be a number of bytes")
    if int(declared) > limit:
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
        return strict_json.parse(body)
    except strict_json.MalformedJson as exc:
        return ServiceError(ErrorKind.MALFORMED, f"request body: {exc}")


class _HasStatus(Protocol):
    status: int


# A route's handler: (the door's service, the admitted caller, the request) -> an answer.
Handler = Callable[[Any, Caller, Request], Awaitable["dict | Failure | Response"]]


@dataclass(frozen=True)
class Door:
    """One API's face at the edge: its service, its error table and body, its routes."""

    service: type  # the door's service class (serve/doors/base.py `DoorService`); `service.api` names the door
    errors: Mapping[Reason, _HasStatus]  # each failure's HTTP status (and the door's own code)
    error_body: Callable[[Failure], dict]  # a failure in this API's shape
    prefix: str  # where its router is mounted (unhandled errors under it take its shape)
    router: APIRouter = field(default_factory=APIRouter)

    @property
    def name(self) -> str:
        return self.service.api

    def error_response(self, failure: Failure) -> JSONResponse:
        return JSONResponse(self.error_body(failure), status_code=self.errors[reason(failure)].status,
                            headers=retry_headers(failure))

    def respond(self, result: "dict | Failure | Response") -> Response:
        if isinstance(result, (ServiceError, RenderError)):
            return self.error_response(result)
        return result if isinstance(result, Response) else JSONResponse(result)

    def route(self, method: str, path: str, *, json_body: bool = False,
              trailing_slash: bool = False) -> Callable[[Handler], Handler]:
        """Register `handler(service, caller, request)` as an admitted route (path parameters
        are in `request.path_params`); `trailing_slash` also answers at `path/` (DashScope's
        SDKs send both)."""

        def register(handler: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                caller = await admit(request, json_body)
                if isinstance(caller, ServiceError):
                    return self.error_response(caller)
                return self.respond(await handler(request.app.state.services[self.name], caller, request))

            endpoint.__name__ = handler.__name__
            for each in (path, path + "/") if trailing_slash else (path,):
                self.router.add_api_route(each, endpoint, methods=[method], name=f"{handler.__name__}:{each}")
            return handler

        return register
