"""AceData routes: HTTP in, `AceDataService` calls, AceData-shaped JSON out."""

from __future__ import annotations

from fastapi import Request

from serve.doors.acedata.protocol import ERRORS, error_body
from serve.doors.acedata.service import AceDataService
from serve.edge.http import Caller, Door

door = Door(service=AceDataService, errors=ERRORS, error_body=error_body, prefix="/flux")


@door.route("POST", "/images", json_body=True)
async def images(service: AceDataService, caller: Caller, request: Request):
    return await service.images(caller)


@door.route("POST", "/tasks", json_body=True)
async def tasks(service: AceDataService, caller: Caller, request: Request):
    return await service.retrieve(caller)
