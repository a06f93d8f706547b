"""The render core's error vocabulary: one `ErrorCode` enum, and `RenderError` values that carry it.

Everything that can fail a request or an image says so with a code from here: `ModelSpec.resolve`
(bad parameters), the engine (out of memory, a failed batch), model loading, the task layer
(deadlines, unavailable replicas) and the batch job. Each API door maps codes to its own
vocabulary in its protocol table; nothing matches errors by their text.

`retryable` says whether the same request can succeed later without a change by the caller: a
model that failed to load, a replica that was down, a deadline missed under load. A rerun of a
batch job redoes exactly the images whose code is retryable.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Mapping


class ErrorCode(StrEnum):
    INVALID_PARAMETER = "invalid_parameter"  # a value out of range or of the wrong kind (`param` names it)
    EMPTY_PROMPT = "empty_prompt"
    EMPTY_MODEL = "empty_model"  # no model named
    MODEL_NOT_FOUND = "model_not_found"  # not a configured model
    MODEL_UNAVAILABLE = "model_unavailable"  # configured, but no replica answered (Serve app down, replicas dying)
    MODEL_LOAD_FAILED = "model_load_failed"  # its weights could not be loaded (a download failed)
    OUT_OF_MEMORY = "out_of_memory"  # the device ran out of memory, even for one image
    TIMEOUT = "timeout"  # not finished before its deadline
    CANCELED = "canceled"  # canceled by its caller while it rendered
    INTERNAL = "internal"  # anything else that went wrong on our side

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE

    @property
    def callers(self) -> bool:
        """The caller's to fix (a value they sent): a door answers it as its 4xx, never as ours."""
        return self in _CALLERS

    @classmethod
    def _missing_(cls, value: object) -> "ErrorCode | None":
        # Task records and batch metadata written before this enum carried DashScope's codes.
        return _LEGACY.get(value) if isinstance(value, str) else None


_RETRYABLE = frozenset({ErrorCode.MODEL_UNAVAILABLE, ErrorCode.MODEL_LOAD_FAILED, ErrorCode.OUT_OF_MEMORY,
                        ErrorCode.TIMEOUT, ErrorCode.INTERNAL})
_CALLERS = frozenset({ErrorCode.INVALID_PARAMETER, ErrorCode.EMPTY_PROMPT, ErrorCode.EMPTY_MODEL,
                      ErrorCode.MODEL_NOT_FOUND})
_LEGACY = {
    "InvalidParameter": ErrorCode.INVALID_PARAMETER, "BadRequest.EmptyInput": ErrorCode.EMPTY_PROMPT,
    "ModelNotFound": ErrorCode.MODEL_NOT_FOUND, "ModelLoadError": ErrorCode.MODEL_LOAD_FAILED,
    "InternalError.OutOfMemory": ErrorCode.OUT_OF_MEMORY, "InternalError.Timeout": ErrorCode.TIMEOUT,
    "InternalError.Unavailable": ErrorCode.MODEL_UNAVAILABLE, "Canceled": ErrorCode.CANCELED,
    "InternalError": ErrorCode.INTERNAL,
}


@dataclass(frozen=True)
class RenderError:
    """Why a request or one image failed.

    With a `param` (in the core's terms: prompt, negative_prompt, size, steps, guidance, n, seed,
    image, model), `message` is what follows that parameter's name ("must be 1..4, got 5"), so
    that each door can name the field as its clients spell it (`text(name)`).
    """

    code: ErrorCode
    message: str
    param: str | None = None

    @classmethod
    def invalid(cls, param: str, message: str) -> "RenderError":
        return cls(ErrorCode.INVALID_PARAMETER, message, param)

    def named(self, names: Mapping[str, str]) -> "RenderError":
        """The same error, its parameter as a door's clients spell it (`names`: the core's name
        -> the door's; a parameter not in it keeps its name)."""
        if self.param is None or self.param not in names:
            return self
        return dataclasses.replace(self, param=names[self.param])

    def text(self, name: str | None = None) -> str:
        """The whole message, naming the parameter `name` (default: the core's name for it)."""
        if self.param is None:
            return self.message
        return f"{name or self.param} {self.message}"


def first_line(exc: BaseException) -> str:
    """An exception's first line: enough to name a failure in one line of a CLI or a record."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
