"""`ServiceError`: a request-level failure as a value, in one vocabulary for every door.

The task layer, the HTTP gate and the façade services return these; each façade's
`protocol.py` holds a table from `ErrorKind` to its own HTTP status and error code, and its
router renders them in its API's error shape. No service knows about HTTP or FastAPI.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Mapping

from cluster.spec.errors import ErrorCode, RenderError


class ErrorKind(StrEnum):
    UNAUTHENTICATED = "unauthenticated"  # missing or unknown API key
    RATE_LIMITED = "rate_limited"  # the key's rate limit; carries retry_after_s
    BODY_TOO_LARGE = "body_too_large"
    MALFORMED = "malformed"  # not JSON, or not the expected shape
    INVALID = "invalid"  # a parameter out of range or of the wrong type (names it)
    EMPTY_PROMPT = "empty_prompt"
    EMPTY_MODEL = "empty_model"
    MODEL_NOT_FOUND = "model_not_found"
    QUEUE_FULL = "queue_full"  # the model's queue is at capacity; carries retry_after_s
    NOT_FOUND = "not_found"  # unknown task, expired task, or another key's task
    NOT_CANCELABLE = "not_cancelable"  # the task is past the point where it can be canceled
    CONFLICT = "conflict"  # an Idempotency-Key reused with another request body
    TASK_FAILED = "task_failed"  # a synchronous call whose task ended FAILED
    TASK_CANCELED = "task_canceled"  # a synchronous call whose task was canceled meanwhile
    TIMEOUT = "timeout"  # a synchronous call whose task did not finish in time
    INTERNAL = "internal"


@dataclass(frozen=True)
class ServiceError:
    kind: ErrorKind
    message: str
    param: str | None = None  # the request field at fault, when one is
    retry_after_s: int | None = None

    @classmethod
    def invalid(cls, message: str, param: str | None = None) -> "ServiceError":
        return cls(ErrorKind.INVALID, message, param)

    @classmethod
    def refused(cls, error: RenderError, names: Mapping[str, str]) -> "ServiceError":
        """A request the core refused (`ModelSpec.resolve`), its parameter named as the door's
        clients spell it (`names`: the core's name -> the door's; unnamed ones stay as they are)."""
        name = names.get(error.param, error.param) if error.param else None
        return cls(_REFUSED.get(error.code, ErrorKind.INVALID), error.text(name), name)


_REFUSED = {ErrorCode.EMPTY_PROMPT: ErrorKind.EMPTY_PROMPT, ErrorCode.MODEL_NOT_FOUND: ErrorKind.MODEL_NOT_FOUND}


@dataclass(frozen=True)
class WireError:
    """What a façade's table maps an `ErrorKind` to."""

    status: int
    code: str


def retry_headers(error: ServiceError) -> dict[str, str]:
    return {"Retry-After": str(error.retry_after_s)} if error.retry_after_s else {}
