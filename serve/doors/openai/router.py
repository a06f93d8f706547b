"""OpenAI routes: HTTP in, `OpenAIService` calls, OpenAI-shaped JSON out. The Images API, and the
Files API for batch input (`serve/files/store.py`, blocking storage calls run in threads)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from serve.doors.openai.protocol import ERRORS, error_body
from serve.doors.openai.service import EditUpload, OpenAIService
from serve.edge.errors import ErrorKind, ServiceError
from serve.edge.http import Caller, Door, read_body
from serve.edge.sse import event_stream
from serve.files.store import FileObject, UploadTooLarge

door = Door(service=OpenAIService, errors=ERRORS, error_body=error_body, prefix="/v1")
MAX_FORM_FIELDS = 64
MAX_PAGE = 10_000  # OpenAI's `limit` on a files list: 1..10,000


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


@door.route("POST", "/files")
async def create_file(service: OpenAIService, caller: Caller, request: Request):
    """A multipart upload (`file`, `purpose`), streamed to storage as it arrives."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return ServiceError(ErrorKind.MALFORMED, "files takes multipart/form-data", "file")
    files = service.files
    too_large = ServiceError(ErrorKind.BODY_TOO_LARGE, f"file is larger than {files.limits.max_bytes} bytes", "file")
    declared = request.headers.get("content-length") or "0"
    if declared.isdigit() and int(declared) > files.upload_limit:
        return too_large
    with files.uploading(caller.key_id) as refused:
        if refused:
            return refused
        try:
            form = await MultiPartParser(request.headers, files.counted(request.stream()), max_files=1,
                                         max_fields=MAX_FORM_FIELDS).parse()
        except UploadTooLarge:
            return too_large
        except MultiPartException as exc:
            return ServiceError(ErrorKind.MALFORMED, f"multipart body: {exc.message}")
        try:
            upload, purpose = form.get("file"), form.get("purpose")
            if not isinstance(upload, UploadFile):
                return ServiceError.invalid("file is required, as a file part", "file")
            if not isinstance(purpose, str):
                return ServiceError.invalid("purpose is required (batch), as a text field", "purpose")
            created = await asyncio.to_thread(files.create, caller.key_id, upload.file,
                                              upload.filename or "upload.jsonl", purpose)
            return created.model_dump() if isinstance(created, FileObject) else created
        finally:
            await form.close()


@door.route("GET", "/files")
async def list_files(service: OpenAIService, caller: Caller, request: Request):
    query = request.query_params
    limit = query.get("limit", "10000")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE:
        return ServiceError.invalid(f"limit must be 1..{MAX_PAGE}", "limit")
    if query.get("order", "desc") not in ("asc", "desc"):
        return ServiceError.invalid("order must be asc or desc", "order")
    if query.get("purpose") not in (None, "batch"):
        return {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
    records, more = await asyncio.to_thread(service.files.page, caller.key_id, int(limit), query.get("after"),
                                            query.get("order", "desc") == "desc")
    data = [r.model_dump() for r in records]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": more}


@door.route("GET", "/files/{file_id}")
async def retrieve_file(service: OpenAIService, caller: Caller, request: Request):
    found = await asyncio.to_thread(service.files.get, caller.key_id, request.path_params["file_id"])
    return found.model_dump() if isinstance(found, FileObject) else found


@door.route("GET", "/files/{file_id}/content")
async def file_content(service: OpenAIService, caller: Caller, request: Request):
    chunks = await asyncio.to_thread(service.files.content, caller.key_id, request.path_params["file_id"])
    if isinstance(chunks, ServiceError):
        return chunks
    return StreamingResponse(_in_threads(chunks), media_type="application/octet-stream")


@door.route("DELETE", "/files/{file_id}")
async def delete_file(service: OpenAIService, caller: Caller, request: Request):
    return await asyncio.to_thread(service.files.delete, caller.key_id, request.path_params["file_id"])


async def _in_threads(chunks) -> AsyncIterator[bytes]:
    """A blocking iterator's chunks, each read in a thread (storage reads block)."""
    done = object()
    while (chunk := await asyncio.to_thread(next, chunks, done)) is not done:
        yield chunk


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
