"""OpenAI Images routes: HTTP in, `OpenAIService` calls, OpenAI-shaped JSON out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from serve.doors.openai.protocol import ERRORS, error_body
from serve.doors.openai.service import EditUpload, OpenAIService
from serve.edge.errors import ErrorKind, ServiceError
from serve.edge.http import Caller, Door, read_body
from serve.edge.sse import event_stream

door = Door(service=OpenAIService, errors=ERRORS, error_body=error_body, prefix="/v1")
MAX_FORM_FIELDS = 64


@door.route("POST", "/images/generations", json_body=True)
async def generations(service: OpenAIService, caller: Caller, request: Request):
    return _streamed(await service.generate(caller, request.headers.get("idempotency-key")), request)


@door.route("POST", "/images/edits")
async def edits(service: OpenAIService, caller: Caller, request: Request):
    upload = await _read_upload(request)
    if isinstance(upload, ServiceError):
        return upload
    return _streamed(await service.edit(caller, upload, request.headers.get("idempotency-key")), request)


@door.route("GET", "/models")
async def models(service: OpenAIService, caller: Caller, request: Request):
    return service.models()


def _streamed(answer, request: Request):
    """A streamed answer's events as Server-Sent Events; any other answer as it is."""
    return event_stream(answer, request) if isinstance(answer, AsyncIterator) else answer


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
