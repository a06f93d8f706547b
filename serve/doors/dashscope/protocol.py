"""DashScope image-synthesis wire models (shared/contracts/dashscope.md).

Request bodies are parsed by hand in `service.py` (unknown parameters must pass through and
wrong types must become `InvalidParameter` naming the field), so only responses are modelled.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel

from cluster.spec.errors import ErrorCode
from cluster.spec.catalogue import ModelSpec
from serve.edge.errors import ErrorKind, ServiceError, WireError
from serve.tasks.store.record import StepCount

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# What a task keeps of the client's body (the rest of a body is never stored).
CLIENT_FIELDS = ("model", "input", "parameters")


def request_id() -> str:
    return str(uuid.uuid4())

# The task layer's errors in DashScope's vocabulary (HTTP status, `code`).
ERRORS: dict[ErrorKind, WireError] = {
    ErrorKind.UNAUTHENTICATED: WireError(401, "InvalidApiKey"),
    ErrorKind.RATE_LIMITED: WireError(429, "Throttling.RateQuota"),
    ErrorKind.BODY_TOO_LARGE: WireError(413, "InvalidParameter"),
    ErrorKind.MALFORMED: WireError(400, "InvalidParameter"),
    ErrorKind.INVALID: WireError(400, "InvalidParameter"),
    ErrorKind.EMPTY_PROMPT: WireError(400, "BadRequest.EmptyInput"),
    ErrorKind.EMPTY_MODEL: WireError(400, "BadRequest.EmptyModel"),
    ErrorKind.MODEL_NOT_FOUND: WireError(404, "ModelNotFound"),
    ErrorKind.QUEUE_FULL: WireError(503, "ServiceUnavailable"),
    ErrorKind.NOT_FOUND: WireError(404, "InvalidParameter"),
    ErrorKind.NOT_CANCELABLE: WireError(400, "UnsupportedOperation"),
    ErrorKind.CONFLICT: WireError(409, "Conflict"),
    ErrorKind.TASK_FAILED: WireError(500, "InternalError"),
    ErrorKind.TASK_CANCELED: WireError(400, "TaskCanceled"),
    ErrorKind.TIMEOUT: WireError(500, "InternalError.Timeout"),
    ErrorKind.INTERNAL: WireError(500, "InternalError"),
}

# The core's codes of a failed task or image (`output.code`, `results[i].code`) in DashScope's.
RESULT_CODES: dict[ErrorCode, str] = {
    ErrorCode.INVALID_PARAMETER: "InvalidParameter",
    ErrorCode.EMPTY_PROMPT: "BadRequest.EmptyInput",
    ErrorCode.MODEL_NOT_FOUND: "ModelNotFound",
    ErrorCode.MODEL_UNAVAILABLE: "InternalError.Unavailable",
    ErrorCode.MODEL_LOAD_FAILED: "InternalError.ModelLoad",
    ErrorCode.OUT_OF_MEMORY: "InternalError.OutOfMemory",
    ErrorCode.TIMEOUT: "InternalError.Timeout",
    ErrorCode.CANCELED: "TaskCanceled",
    ErrorCode.INTERNAL: "InternalError",
}


def param_names(spec: ModelSpec) -> dict[str, str]:
    """The core's parameter names as DashScope bodies spell them (guidance is `scale` for SD)."""
    return {"prompt": "input.prompt", "negative_prompt": "input.negative_prompt", "image": "input.image_url",
            "size": "parameters.size", "steps": "parameters.steps", "n": "parameters.n", "seed": "parameters.seed",
            "guidance": f"parameters.{spec.guidance_name}", "loras": "parameters.loras",
            "quality": "parameters.quality"}


def error_body(error: ServiceError) -> dict:
    return {"request_id": request_id(), "code": ERRORS[error.kind].code, "message": error.message}


class TaskOutput(BaseModel):
    task_id: str
    task_status: str  # always present: the SDK raises KeyError without it
    submit_time: str | None = None
    scheduled_time: str | None = None
    end_time: str | None = None
    results: list[dict[str, Any]] | None = None
    task_metrics: dict[str, int] | None = None
    code: str | None = None  # whole-task failure only (inside output, never top level)
    message: str | None = None
    # Extensions (the SDKs keep unknown keys): place in the model's queue while PENDING, then
    # denoising steps done and seconds left while RUNNING.
    queue_position: int | None = None
    progress: StepCount | None = None
    eta_s: float | None = None
    loras: list[dict[str, Any]] | None = None  # the adapters: path, scale, and sha256 once rendered


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
