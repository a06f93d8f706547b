"""The web page: `GET /` (one static page, no build step), its files, and the two reads it makes
beyond the API doors. Errors use the DashScope shape, the door the page creates tasks through."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from serve.dashscope.router import error_response, respond
from serve.errors import ServiceError
from serve.http import admit
from serve.web.service import WebService

STATIC = Path(__file__).parent / "static"
router = APIRouter()
# StaticFiles serves only files under STATIC (it refuses paths that leave it).
static_files = StaticFiles(directory=STATIC)


def _service(request: Request) -> WebService:
    return request.app.state.web


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    # The page holds no data: the key is typed in the browser, and every read carries it.
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})


@router.get("/web/api/tasks")
async def recent(request: Request) -> JSONResponse:
    caller = await admit(request)
    if isinstance(caller, ServiceError):
        return error_response(caller)
    return JSONResponse(await _service(request).recent(caller))


@router.get("/web/api/tasks/{task_id}")
async def task(request: Request, task_id: str) -> JSONResponse:
    caller = await admit(request)
    if isinstance(caller, ServiceError):
        return error_response(caller)
    return respond(await _service(request).task(caller, task_id))
