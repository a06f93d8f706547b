"""AceData routes: HTTP in, `AceDataService` calls, AceData-shaped JSON out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from serve.acedata.protocol import ERRORS
from serve.acedata.service import AceDataService, error_body
from serve.errors import ServiceError, retry_headers
from serve.http import admit

router = APIRouter()


def error_response(error: ServiceError) -> JSONResponse:
    return JSONResponse(error_body(error), status_code=ERRORS[error.kind].status, headers=retry_headers(error))


def respond(result: dict | ServiceError) -> JSONResponse:
    return error_response(result) if isinstance(result, ServiceError) else JSONResponse(result)


def _service(request: Request) -> AceDataService:
    return request.app.state.acedata


@router.post("/flux/images")
async def images(request: Request) -> JSONResponse:
    caller = await admit(request, json_body=True)
    if isinstance(caller, ServiceError):
        return error_response(caller)
    return respond(await _service(request).images(caller))


@router.post("/flux/tasks")
async def tasks(request: Request) -> JSONResponse:
    caller = await admit(request, json_body=True)
    if isinstance(caller, ServiceError):
        return error_response(caller)
    return respond(await _service(request).retrieve(caller))
