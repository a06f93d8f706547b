"""DashScope routes: HTTP in, `DashScopeService` calls, DashScope-shaped JSON out."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from serve.dashscope.service import DashScopeService, request_id
from serve.errors import INVALID_API_KEY, ApiError

router = APIRouter()


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse({"request_id": request_id(), "code": error.code, "message": error.message},
                        status_code=error.status, headers=error.headers)


def respond(result: dict | ApiError) -> JSONResponse:
    return error_response(result) if isinstance(result, ApiError) else JSONResponse(result)


def _service(request: Request) -> DashScopeService:
    return request.app.state.dashscope


def _caller(request: Request) -> str | ApiError:
    """The caller's key id, after authentication and rate limiting."""
    state = request.app.state
    key = state.api_keys.identify(request.headers.get("authorization"))
    if key is None:
        return INVALID_API_KEY
    wait = state.rate_limiter.take(key)
    if wait:
        return ApiError(429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later.",
                        {"Retry-After": state.rate_limiter.retry_after(wait)})
    return key


async def read_json(request: Request) -> Any | ApiError:
    limit = request.app.state.settings.max_body_bytes
    if int(request.headers.get("content-length") or 0) > limit:
        return ApiError(413, "InvalidParameter", f"request body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return ApiError(413, "InvalidParameter", f"request body is larger than {limit} bytes")
    try:
        return json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return ApiError.invalid(f"request body is not valid JSON: {exc}")


async def _create(request: Request, edit: bool) -> JSONResponse:
    caller = _caller(request)
    if isinstance(caller, ApiError):
        return error_response(caller)
    body = await read_json(request)
    if isinstance(body, ApiError):
        return error_response(body)
    sync = request.headers.get("x-dashscope-async", "").lower() != "enable"
    return respond(await _service(request).create(body, caller, sync, edit, str(request.base_url)))


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
    caller = _caller(request)
    return error_response(caller) if isinstance(caller, ApiError) else \
        respond(await _service(request).fetch(task_id, str(request.base_url)))


@router.post("/tasks/{task_id}/cancel")
@router.post("/tasks/{task_id}/cancel/")
async def cancel_task(task_id: str, request: Request) -> JSONResponse:
    caller = _caller(request)
    return error_response(caller) if isinstance(caller, ApiError) else \
        respond(await _service(request).cancel(task_id))


@router.get("/tasks")
@router.get("/tasks/")
async def list_tasks(request: Request) -> JSONResponse:
    caller = _caller(request)
    return error_response(caller) if isinstance(caller, ApiError) else \
        respond(await _service(request).list(dict(request.query_params), caller))
