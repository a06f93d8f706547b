"""DashScope routes: HTTP in, `DashScopeService` calls, DashScope-shaped JSON out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from serve.dashscope.protocol import ERRORS
from serve.dashscope.service import DashScopeService, request_id
from serve.errors import ServiceError, retry_headers
from serve.http import admit

router = APIRouter()


def error_response(error: ServiceError) -> JSONResponse:
    wire = ERRORS[error.kind]
    return JSONResponse({"request_id": request_id(), "code": wire.code, "message": error.message},
                        status_code=wire.status, headers=retry_headers(error))


def respond(result: dict | ServiceError) -> JSONResponse:
    return error_response(result) if isinstance(result, ServiceError) else JSONResponse(result)


def _service(request: Request) -> DashScopeService:
    return request.app.state.dashscope


async def _create(request: Request, edit: bool) -> JSONResponse:
    caller = await admit(request, json_body=True)
    if isinstance(caller, ServiceError):
        return error_response(caller)
    sync = request.headers.get("x-dashscope-async", "").lower() != "enable"
    return respond(await _service(request).create(caller, sync, edit))


@router.post("/services/aigc/text2image/image-synthesis")
@router.post("/services/aigc/text2image/image-synthesis/")
async def create_text2image(request: Request) -> JSONResponse:
    return await _create(request, edit=False)


@router.post("/services/aigc/image2image/image-synthesis")
@router.post("/services/aigc/image2image/image-synthesis/")
async def create_image2image(request: Request) -> JSONResponse:
    return await _create(request, edit=True)


@router.get("/tasks/{task_id}")
@router.get("/tasks/{task_id}/")
async def fetch_task(task_id: str, request: Request) -> JSONResponse:
    caller = await admit(request)
    if isinstance(caller, ServiceError):
        return error_response(caller)
    return respond(await _service(request).fetch(caller, task_id))


@router.post("/tasks/{task_id}/cancel")
@router.post("/tasks/{task_id}/cancel/")
async def cancel_task(task_id: str, request: Request) -> JSONResponse:
    caller = await admit(request)
    if isinstance(caller, ServiceError):
        return error_response(caller)
    return respond(await _service(request).cancel(caller, task_id))


@router.get("/tasks")
@router.get("/tasks/")
async def list_tasks(request: Request) -> JSONResponse:
    caller = await admit(request)
    if isinstance(caller, ServiceError):
        return error_response(caller)
    return respond(await _service(request).list(caller, dict(request.query_params)))
