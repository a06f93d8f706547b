"""The web page: `GET /` (one static page, no build step), its files, and the reads it makes
beyond the API doors (recent tasks, a task, a task's events). Errors use the DashScope shape, the door the page creates tasks through."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from serve.doors.dashscope.protocol import ERRORS, error_body
from serve.doors.web.service import WebService
from serve.edge.http import Caller, Door
from serve.edge.sse import event_stream

STATIC = Path(__file__).parent / "static"
page_router = APIRouter()  # the page itself, at /
# Errors in the DashScope shape: the page creates and cancels tasks through that door.
door = Door(service=WebService, errors=ERRORS, error_body=error_body, prefix="/web")  # its reads, at /web
# StaticFiles serves only files under STATIC (it refuses paths that leave it).
static_files = StaticFiles(directory=STATIC)


@page_router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    # The page holds no data: the key is typed in the browser, and every read carries it.
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})


@door.route("GET", "/api/tasks")
async def recent(service: WebService, caller: Caller, request: Request):
    return await service.recent(caller)


@door.route("GET", "/api/tasks/{task_id}")
async def task(service: WebService, caller: Caller, request: Request):
    return await service.task(caller, request.path_params["task_id"])


@door.route("GET", "/api/tasks/{task_id}/events")
async def events(service: WebService, caller: Caller, request: Request):
    """A task's card as Server-Sent Events (`task`, `preview`), until it ends."""
    answer = await service.events(caller, request.path_params["task_id"])
    return event_stream(answer, request) if isinstance(answer, AsyncIterator) else answer
