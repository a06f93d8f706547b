"""The edge's failures, in one vocabulary with the core's.

A door's service answers with a body or a `Failure`:

- a `RenderError` (cluster/spec/errors.py) for anything about the render: a value the core or a
  door's parser refuses, a task that failed, timed out or was canceled. Its `ErrorCode` is the
  one the task record and the batch job carry.
- a `ServiceError` for what only the HTTP edge knows: no key, a rate limit, a body too large or
  not JSON, an unknown task, a task past canceling, a full queue or task store, a reused idempotency key
  (`ErrorKind`). A door's parser also uses it, with an `ErrorCode`, when its message already
  names the field as the door spells it (`fields.Invalid`).

Each door's `protocol.py` holds one table from `ErrorKind | ErrorCode` to its HTTP status and
its own code, and its router renders failures in its API's error shape. No service knows about
HTTP or FastAPI, and nothing matches an error by its text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cluster.spec.errors import ErrorCode, RenderError


class ErrorKind(StrEnum):
    """What can fail at the edge that is not a render: none of these is an `ErrorCode`."""

    UNAUTHENTICATED = "unauthenticated"  # missing or unknown API key
    RATE_LIMITED = "rate_limited"  # the key's rate limit, or its share of a queue; carries retry_after_s
    BODY_TOO_LARGE = "body_too_large"
    MALFORMED = "malformed"  # not JSON, or not the expected shape
    QUEUE_FULL = "queue_full"  # the model's queue is at capacity; carries retry_after_s
    STORE_FULL = "store_full"  # the task store is at its bound: no new task until old ones expire
    NOT_FOUND = "not_found"  # unknown task, expired task, or another key's task
    NOT_CANCELABLE = "not_cancelable"  # the task is past the point where it can be canceled
    CONFLICT = "conflict"  # an Idempotency-Key reused with another request body


Reason = ErrorKind | ErrorCode  # what a door's error table is keyed by
REASONS: tuple[Reason, ...] = (*ErrorKind, *ErrorCode)  # every key each table must have


@dataclass(frozen=True)
class ServiceError:
    """A failure at the edge; `message` is whole (it names the field as the door spells it)."""

    kind: Reason
    message: str
    param: str | None = None  # the request field at fault, when one is
    retry_after_s: int | None = None

    @classmethod
    def invalid(cls, message: str, param: str | None = None) -> "ServiceError":
        return cls(ErrorCode.INVALID_PARAMETER, message, param)


Failure = ServiceError | RenderError  # what a door's service answers with instead of a body


def reason(failure: Failure) -> Reason:
    return failure.kind if isinstance(failure, ServiceError) else failure.code


def message(failure: Failure) -> str:
    return failure.message if isinstance(failure, ServiceError) else failure.text()


@dataclass(frozen=True)
class WireError:
    """What a door's table maps a reason to."""

    status: int
    code: str


def retry_headers(failure: Failure) -> dict[str, str]:
    retry_after = failure.retry_after_s if isinstance(failure, ServiceError) else None
    return {"Retry-After": str(retry_after)} if retry_after else {}
