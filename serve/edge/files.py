"""Serves result files behind HMAC-signed, expiring URLs: local files themselves; on an object
store whose signing credentials are a session's, a redirect to a short presigned URL (an object
store with long-lived keys presigns its URLs itself, and none comes here)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from cluster.storage.results import media_type

router = APIRouter()


def _refuse(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": "AccessDenied" if status == 403 else "NotFound", "message": message},
                        status_code=status)


@router.get("/files/{key:path}")
async def get_file(key: str, request: Request, expires: int = 0, signature: str = "") -> Response:
    storage = request.app.state.storage
    if not storage.served_here:  # the object store presigns its URLs: this route signs none for it
        return _refuse(404, "no such file (results are served by the object store)")
    if (problem := storage.url_problem(key, expires, signature)) is not None:
        return _refuse(403, "the URL has expired" if problem == "expired" else "the URL signature is invalid")
    if not storage.is_local:  # signed now, with the session's current credentials
        url = await asyncio.to_thread(storage.redirect_url, key, expires)
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    try:
        data = await asyncio.to_thread(storage.read, key)
    except (FileNotFoundError, IsADirectoryError):
        return _refuse(404, "no such file (it may have expired)")
    return Response(data, media_type=media_type(key), headers={"Cache-Control": "private, max-age=3600"})
