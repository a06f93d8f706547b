"""DashScope routes: HTTP in, `DashScopeService` calls, DashScope-shaped JSON out."""

from __future__ import annotations

from fastapi import Request

from serve.doors.dashscope.protocol import ERRORS, error_body
from serve.doors.dashscope.service import DashScopeService
from serve.edge.http import Caller, Door

door = Door(service=DashScopeService, errors=ERRORS, error_body=error_body, prefix="/api/v1")


def _sync(request: Request) -> bool:
    return request.headers.get("x-dashscope-async", "").lower() != "enable"


@door.route("POST", "/services/aigc/text2image/image-synthesis", json_body=True, trailing_slash=True)
async def create_text2image(service: DashScopeService, caller: Caller, request: Request):
    return await service.create(caller, _sync(request), edit_route=False)


@door.route("POST", "/services/aigc/image2image/image-synthesis", json_body=True, trailing_slash=True)
async def create_image2image(service: DashScopeService, caller: Caller, request: Request):
    return await service.create(caller, _sync(request), edit_route=True)


@door.route("GET", "/tasks/{task_id}", trailing_slash=True)
async def fetch_task(service: DashScopeService, caller: Caller, request: Request):
    return await service.fetch(caller, request.path_params["task_id"])


@door.route("POST", "/tasks/{task_id}/cancel", trailing_slash=True)
async def cancel_task(service: DashScopeService, caller: Caller, request: Request):
    return await service.cancel(caller, request.path_params["task_id"])


@door.route("GET", "/tasks", trailing_slash=True)
async def list_tasks(service: DashScopeService, caller: Caller, request: Request):
    return await service.list(caller, dict(request.query_params))


@door.route("GET", "/webhooks/secret", trailing_slash=True)
async def webhook_secret(service: DashScopeService, caller: Caller, request: Request):
    """The caller's own webhook signing secret (every door's webhooks are signed with it)."""
    return service.tasks.webhook_secret(caller.key_id)
