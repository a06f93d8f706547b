"""DashScope image-synthesis wire models (shared/contracts/dashscope.md).

Request bodies are parsed by hand in `service.py` (unknown parameters must pass through and
wrong types must become `InvalidParameter` naming the field), so only responses are modelled.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel

from cluster.spec.catalogue import ModelSpec
from cluster.spec.errors import ErrorCode
from serve.doors.base import LiveTask
from serve.edge.errors import ErrorKind, Failure, Reason, WireError, message, reason

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# What a task keeps of the client's body (the rest of a body is never stored).
CLIENT_FIELDS = ("model", "input", "parameters")


def request_id() -> str:
    return str(uuid.uuid4())

# Every failure in DashScope's vocabulary (HTTP status, `code`): the edge's, and the core's codes,
# which are also a failed task's or image's `output.code` / `results[i].code`.
ERRORS: dict[Reason, WireError] = {
    ErrorKind.UNAUTHENTICATED: WireError(401, "InvalidApiKey"),
    ErrorKind.RATE_LIMITED: WireError(429, "Throttling.RateQuota"),
    ErrorKind.BODY_TOO_LARGE: WireError(413, "InvalidParameter"),
    ErrorKind.MALFORMED: WireError(400, "InvalidParameter"),
    ErrorKind.QUEUE_FULL: WireError(503, "ServiceUnavailable"),
    ErrorKind.STORE_FULL: WireError(503, "ServiceUnavailable"),
    ErrorKind.NOT_FOUND: WireError(404, "InvalidParameter"),
    ErrorKind.NOT_CANCELABLE: WireError(400, "UnsupportedOperation"),
    ErrorKind.CONFLICT: WireError(409, "Conflict"),
    ErrorCode.INVALID_PARAMETER: WireError(400, "InvalidParameter"),
    ErrorCode.EMPTY_PROMPT: WireError(400, "BadRequest.EmptyInput"),
    ErrorCode.EMPTY_MODEL: WireError(400, "BadRequest.EmptyModel"),
    ErrorCode.MODEL_NOT_FOUND: WireError(404, "ModelNotFound"),
    ErrorCode.MODEL_UNAVAILABLE: WireError(503, "InternalError.Unavailable"),
    ErrorCode.MODEL_LOAD_FAILED: WireError(500, "InternalError.ModelLoad"),
    ErrorCode.OUT_OF_MEMORY: WireError(500, "InternalError.OutOfMemory"),
    ErrorCode.TIMEOUT: WireError(500, "InternalError.Timeout"),
    ErrorCode.CANCELED: WireError(400, "TaskCanceled"),
    ErrorCode.INTERNAL: WireError(500, "InternalError"),
}


def param_names(spec: ModelSpec) -> dict[str, str]:
    """The core's parameter names as DashScope bodies spell them (guidance is `scale` for SD)."""
    return {"prompt": "input.prompt", "negative_prompt": "input.negative_prompt", "image": "input.image_url",
            "size": "parameters.size", "steps": "parameters.steps", "n": "parameters.n", "seed": "parameters.seed",
            "guidance": f"parameters.{spec.guidance_name}", "loras": "parameters.loras",
            "quality": "parameters.quality", "mask": "input.mask_image_url", "strength": "parameters.strength",
            "output_format": "parameters.output_format", "output_quality": "parameters.output_quality",
            "partial_images": "parameters.partial_images"}


def error_body(failure: Failure) -> dict:
    return {"request_id": request_id(), "code": ERRORS[reason(failure)].code, "message": message(failure)}


class TaskOutput(LiveTask):
    """A task's `output`; the live fields (`LiveTask`) are extensions: the SDKs keep unknown keys."""

    task_id: str
    task_status: str  # always present: the SDK raises KeyError without it
    submit_time: str | None = None
    scheduled_time: str | None = None
    end_time: str | None = None
    results: list[dict[str, Any]] | None = None
    task_metrics: dict[str, int] | None = None
    code: str | None = None  # whole-task failure only (inside output, never top level)
    message: str | None = None


class TaskBody(BaseModel):
    request_id: str
    output: TaskOutput
    usage: dict[str, int] | None = None


class TaskListItem(BaseModel):
    task_id: str
    task_status: str
    model_name: str
    submit_time: str
    scheduled_time: str | None = None
    end_time: str | None = None


class TaskList(BaseModel):
    """`GET /tasks`: a page of the key's tasks, under both names the SDK versions read."""

    request_id: str
    tasks: list[TaskListItem]  # the v2 client reads `tasks`
    data: list[TaskListItem]
    total: int
    page_no: int
    page_size: int


class ErrorBody(BaseModel):
    request_id: str
    code: str
    message: str
