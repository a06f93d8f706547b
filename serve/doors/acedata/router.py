"""AceData routes: HTTP in, `AceDataService` calls, AceData-shaped JSON out."""

from __future__ import annotations

from fastapi import APIRouter, Request

from serve.doors.acedata.protocol import ERRORS, error_body
from serve.doors.acedata.service import AceDataService
from serve.edge.http import Caller, Door

router = APIRouter()
door = Door(service="acedata", errors=ERRORS, error_body=error_body, prefix="/flux")


@door.route(router, "POST", "/images", json_body=True)
async def images(service: AceDataService, caller: Caller, request: Request):
    return await service.images(caller)


@door.route(router, "POST", "/tasks", json_body=True)
async def tasks(service: AceDataService, caller: Caller, request: Request):
    return await service.retrieve(caller)
