"""AceData Flux images wire shapes (shared/contracts/acedata.md) and its error-code table.

Request bodies are parsed in `service.py` (each field checked by hand so that an error names
it); responses are modelled here.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel

from cluster.spec.errors import ErrorCode
from serve.doors.base import LiveTask
from serve.edge.errors import ErrorKind, Failure, Reason, WireError, message, reason

ERRORS: dict[Reason, WireError] = {
    ErrorKind.UNAUTHENTICATED: WireError(401, "invalid_token"),
    ErrorKind.RATE_LIMITED: WireError(429, "too_many_requests"),
    ErrorKind.BODY_TOO_LARGE: WireError(413, "bad_request"),
    ErrorKind.MALFORMED: WireError(400, "bad_request"),
    ErrorKind.QUEUE_FULL: WireError(503, "service_unavailable"),
    ErrorKind.STORE_FULL: WireError(503, "service_unavailable"),
    ErrorKind.NOT_FOUND: WireError(404, "not_found"),
    ErrorKind.NOT_CANCELABLE: WireError(400, "bad_request"),
    ErrorKind.CONFLICT: WireError(409, "conflict"),
    ErrorCode.INVALID_PARAMETER: WireError(400, "bad_request"),
    ErrorCode.EMPTY_PROMPT: WireError(400, "bad_request"),
    ErrorCode.EMPTY_MODEL: WireError(400, "bad_request"),
    ErrorCode.MODEL_NOT_FOUND: WireError(400, "bad_request"),
    ErrorCode.MODEL_UNAVAILABLE: WireError(503, "service_unavailable"),
    ErrorCode.MODEL_LOAD_FAILED: WireError(500, "api_error"),
    ErrorCode.OUT_OF_MEMORY: WireError(500, "api_error"),
    ErrorCode.TIMEOUT: WireError(500, "api_error"),
    ErrorCode.CANCELED: WireError(400, "bad_request"),
    ErrorCode.INTERNAL: WireError(500, "api_error"),
}

ACTIONS = {"generate": "generate", "edit": "edit", "edits": "edit"}  # the SDK sends `edit`
DEFAULT_MODEL = "flux-dev"
# The core's parameter names as AceData bodies spell them.
PARAM_NAMES = {"n": "count", "image": "image_url", "mask": "mask_image_url"}
# What a task keeps of the client's body (retrieve returns it): the fields this door reads.
CLIENT_FIELDS = frozenset({"action", "model", "prompt", "size", "count", "seed", "image_url", "callback_url", "async",
                           "loras", "quality", "mask_image_url", "strength", "output_format", "output_quality",
                           "partial_images"})
# Where each kind of model is asked for (a model asked for with the other action is refused).
SERVED_AT = {True: "use action edit", False: "use action generate"}


def trace_id() -> str:
    return str(uuid.uuid4())


class Image(BaseModel):
    prompt: str
    image_url: str
    seed: int
    timings: dict[str, float]


class ImagesBody(BaseModel):
    """The synchronous answer, the callback body and a finished task's `response`."""

    success: bool = True
    task_id: str
    trace_id: str
    data: list[Image]
    loras: list[dict[str, Any]] | None = None  # an extension: the adapters applied (path, sha256, scale)


class Accepted(BaseModel):
    """The asynchronous answer."""

    task_id: str
    trace_id: str


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    success: bool = False
    error: ErrorDetail
    trace_id: str
    task_id: str | None = None


class TaskItem(LiveTask):
    """One task as `retrieve` shows it. `response` is always present (null while the task
    runs): without it the SDK mistakes `request.image_url` of an edit for a result. The live
    fields (`LiveTask`) are extensions."""

    id: str
    created_at: float
    finished_at: float | None = None
    request: Any
    response: dict[str, Any] | None  # `final_body`: an ImagesBody or an ErrorBody, as sent
    trace_id: str
    status: str


class TaskBatch(BaseModel):
    items: list[TaskItem]
    count: int


def error_body(failure: Failure, task_id: str | None = None) -> dict:
    return ErrorBody(error=ErrorDetail(code=ERRORS[reason(failure)].code, message=message(failure)),
                     trace_id=trace_id(), task_id=task_id).model_dump(exclude_none=True)
