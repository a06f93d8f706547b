"""OpenAI Images routes: HTTP in, `OpenAIService` calls, OpenAI-shaped JSON out."""

from __future__ import annotations

from typing import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from serve.errors import ErrorKind, ServiceError, retry_headers
from serve.http import admit, read_body
from serve.openai.protocol import ERRORS
from serve.openai.service import EditUpload, OpenAIService, error_body

router = APIRouter()
MAX_FORM_FIELDS = 64


def error_response(error: ServiceError) -> JSONResponse:
    return JSONResponse(error_body(error), status_code=ERRORS[error.kind].status, headers=retry_headers(error))


def respond(result: dict | ServiceError) -> JSONResponse:
    return error_response(result) if isinstance(result, ServiceError) else JSONResponse(result)


def _service(request: Request) -> OpenAIService:
    return request.app.state.openai


@router.post("/images/generations")
async def generations(request: Request) -> JSONResponse:
    caller = await admit(request, json_body=True)
    if isinstance(caller, ServiceError):
        return error_response(caller)
    return respond(await _service(request).generate(caller, request.headers.get("idempotency-key")))


@router.post("/images/edits")
async def edits(request: Request) -> JSONResponse:
    caller = await admit(request)
    if isinstance(caller, ServiceError):
        return error_response(caller)
    upload = await _read_upload(request)
    if isinstance(upload, ServiceError):
        return error_response(upload)
    return respond(await _service(request).edit(caller, upload, request.headers.get("idempotency-key")))


@router.get("/models")
async def models(request: Request) -> JSONResponse:
    caller = await admit(request)
    if isinstance(caller, ServiceError):
        return error_response(caller)
    return JSONResponse(_service(request).models())


async def _read_upload(request: Request) -> EditUpload | ServiceError:
    """The multipart body, read under the same size cap as every body, then parsed."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return ServiceError(ErrorKind.MALFORMED, "images/edits takes multipart/form-data", "image")
    body = await read_body(request, request.app.state.gate.max_body_bytes)
    if isinstance(body, ServiceError):
        return body

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(request.headers, chunks(), max_files=MAX_FORM_FIELDS,
                                     max_fields=MAX_FORM_FIELDS).parse()
    except MultiPartException as exc:
        return ServiceError(ErrorKind.MALFORMED, f"multipart body: {exc.message}")
    fields, images, mask = {}, [], None
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            data = await value.read()
            if name in ("image", "image[]"):
                images.append(data)
            elif name == "mask":
                mask = data
            else:
                return ServiceError.invalid(f"unexpected file field {name!r}", name)
        elif name in ("image", "image[]", "mask"):
            return ServiceError.invalid(f"{name} must be a file part, not text", name)
        elif name in fields:
            return ServiceError.invalid(f"field {name!r} is given twice", name)
        else:
            fields[name] = value
    return EditUpload(fields=fields, images=images, mask=mask)
