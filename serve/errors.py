"""`ApiError`: a request-level failure as a value. Services return it; routers map it to HTTP
with their API's error shape."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ApiError:
    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def invalid(cls, message: str) -> "ApiError":
        return cls(400, "InvalidParameter", message)


INVALID_API_KEY = ApiError(401, "InvalidApiKey", "Invalid API-key provided.")
