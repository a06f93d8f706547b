"""OpenAI Images API wire shapes (shared/contracts/openai.md) and its error table.

Request bodies are parsed in `service.py` (each field checked so that an error names it);
answers and errors are modelled here. The SDK reads `body["error"]` of any error answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from cluster.spec.errors import ErrorCode
from serve.edge.errors import ErrorKind, Failure, Reason, message, reason

RESPONSE_FORMATS = ("url", "b64_json")
# OpenAI's own `quality` values choose among its models' options: taken, and rendered lossless.
# Ours ("lossless", "fast": cluster/engine/speed.py) share the field.
OPENAI_QUALITIES = frozenset({"standard", "hd", "low", "medium", "high", "auto"})
# Accepted and ignored: they choose among OpenAI's own models' options, which have no
# counterpart here. Their types are still checked (a 400 names the field), and nothing of them
# is kept beyond the bounded client body.
IGNORED_FIELDS: dict[str, type] = {"style": str, "user": str, "background": str, "moderation": str,
                                   "input_fidelity": str}
# A streamed call's events, by route (`stream=True`): `<prefix>.partial_image`, `<prefix>.completed`.
STREAM_PREFIX = {False: "image_generation", True: "image_edit"}
# Token counts have no meaning here: a streamed answer's `usage` says so with zeros.
NO_USAGE = {"input_tokens": 0, "input_tokens_details": {"image_tokens": 0, "text_tokens": 0}, "output_tokens": 0,
            "total_tokens": 0}
# The core's parameter names as this API spells them.
PARAM_NAMES = {"output_quality": "output_compression"}


@dataclass(frozen=True)
class OpenAIError:
    status: int
    type: str
    code: str | None = None


ERRORS: dict[Reason, OpenAIError] = {
    ErrorKind.UNAUTHENTICATED: OpenAIError(401, "invalid_request_error", "invalid_api_key"),
    ErrorKind.RATE_LIMITED: OpenAIError(429, "requests", "rate_limit_exceeded"),
    ErrorKind.BODY_TOO_LARGE: OpenAIError(413, "invalid_request_error", "request_too_large"),
    ErrorKind.MALFORMED: OpenAIError(400, "invalid_request_error"),
    ErrorKind.QUEUE_FULL: OpenAIError(503, "server_error", "overloaded"),
    ErrorKind.STORE_FULL: OpenAIError(503, "server_error", "overloaded"),
    ErrorKind.NOT_FOUND: OpenAIError(404, "invalid_request_error"),
    ErrorKind.NOT_CANCELABLE: OpenAIError(400, "invalid_request_error"),
    ErrorKind.CONFLICT: OpenAIError(409, "invalid_request_error", "idempotency_key_reused"),
    ErrorCode.INVALID_PARAMETER: OpenAIError(400, "invalid_request_error"),
    ErrorCode.EMPTY_PROMPT: OpenAIError(400, "invalid_request_error"),
    ErrorCode.EMPTY_MODEL: OpenAIError(400, "invalid_request_error"),
    ErrorCode.MODEL_NOT_FOUND: OpenAIError(404, "invalid_request_error", "model_not_found"),
    ErrorCode.MODEL_UNAVAILABLE: OpenAIError(503, "server_error", "model_unavailable"),
    ErrorCode.MODEL_LOAD_FAILED: OpenAIError(500, "server_error", "model_load_failed"),
    ErrorCode.OUT_OF_MEMORY: OpenAIError(500, "server_error", "out_of_memory"),
    # 5xx: the SDK retries, and the retry joins the same task (`TaskService.submit_once`).
    ErrorCode.TIMEOUT: OpenAIError(504, "server_error", "timeout"),
    # Not 5xx: the SDK would retry, and a canceled request must not render again.
    ErrorCode.CANCELED: OpenAIError(400, "invalid_request_error", "canceled"),
    ErrorCode.INTERNAL: OpenAIError(500, "server_error"),
}


class ImageData(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None  # the prompt as rendered, when it was shortened
    seed: int  # extension: image i of a request is seeded seed + i


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    output_format: str | None = None  # png, jpeg or webp: what every image of `data` is
    loras: list[dict[str, Any]] | None = None  # an extension: the adapters applied (path, sha256, scale)


def error_body(failure: Failure) -> dict:
    """`{"error": {message, type, param, code}}`: the SDK reads `body["error"]` of any error."""
    wire = ERRORS[reason(failure)]
    return {"error": {"message": message(failure), "type": wire.type, "param": failure.param, "code": wire.code}}


# Where each kind of model is asked for (a model asked for on the other route is refused).
SERVED_AT = {True: "use /v1/images/edits", False: "use /v1/images/generations"}


class ModelCard(BaseModel):
    """`GET /v1/models` entry, with what a form needs to offer the model's options (extensions)."""

    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "raydiant"
    alias_of: str | None = None
    edit: bool
    sizes: list[str] | None  # the sizes the APIs take; None: any size in the render rule
    default_size: str
    max_n: int
    min_steps: int
    max_steps: int
    default_steps: int
    guidance_name: str  # what DashScope calls it for this model: guidance or scale
    min_guidance: float
    max_guidance: float
    default_guidance: float
    max_loras: int = 0  # LoRA adapters a request may name (0: none)
    fast: bool = False  # whether quality "fast" (a step cache) renders faster than lossless here
    max_lora_scale: float = 0.0


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]
