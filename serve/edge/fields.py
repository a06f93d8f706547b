"""Readers of request fields, shared by every door: each returns the field's value (None when
absent) or raises `Invalid` naming the field, so a door's parse step reads a body top to bottom
and catches `Invalid` once. They check kinds only; ranges are the core's (`ModelSpec.resolve`).
"""

from __future__ import annotations

from typing import Any

from cluster.spec.catalogue import parse_size
from cluster.spec.errors import ErrorCode, RenderError
from cluster.spec.loras import LoraRef, read_lora_list
from serve.edge.errors import ErrorKind, Failure, Reason, ServiceError
from serve.edge.errors import message as failure_message


class Invalid(Exception):
    """A field that cannot be read; `error` is the answer (the door renders it in its shape)."""

    def __init__(self, message: str, param: str | None = None, reason: Reason = ErrorCode.INVALID_PARAMETER):
        super().__init__(message)
        self.error: Failure = ServiceError(reason, message, param)

    @classmethod
    def of(cls, failure: Failure) -> "Invalid":
        """A failure found while parsing (a model not served, an image that cannot be fetched)."""
        invalid = cls(failure_message(failure), failure.param)
        invalid.error = failure
        return invalid


def _label(name: str, where: str | None) -> str:
    return f"{where}.{name}" if where else name


def json_object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise Invalid("request body must be a JSON object", None, ErrorKind.MALFORMED)
    return body


def text(container: dict, name: str, where: str | None = None) -> str | None:
    value = container.get(name)
    if value is not None and not isinstance(value, str):
        raise Invalid(f"{_label(name, where)} must be a string, got {value!r}", name)
    return value


def boolean(container: dict, name: str, where: str | None = None) -> bool | None:
    value = container.get(name)
    if value is not None and not isinstance(value, bool):
        raise Invalid(f"{_label(name, where)} must be a boolean, got {value!r}", name)
    return value


def integer(container: dict, name: str, where: str | None = None, *, floats: bool = False,
            strings: bool = False) -> int | None:
    """An integer. `floats`: also 2.0 (SDKs that type a count as a number); `strings`: also "2"
    (multipart sends every field as text)."""
    value = container.get(name)
    if value is None:
        return None
    if strings and isinstance(value, str):
        value = _from_text(value, int, name, where)
    whole = isinstance(value, int) or (floats and isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole:
        raise Invalid(f"{_label(name, where)} must be an integer, got {value!r}", name)
    return int(value)


def number(container: dict, name: str, where: str | None = None, *, strings: bool = False) -> float | None:
    """A number (`strings`: digits in a string count, as multipart sends them)."""
    value = container.get(name)
    if value is None:
        return None
    if strings and isinstance(value, str):
        value = _from_text(value, float, name, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(f"{_label(name, where)} must be a number, got {value!r}", name)
    return float(value)


def _from_text(value: str, kind: type, name: str, where: str | None) -> Any:
    try:
        return kind(value)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise Invalid(f"{_label(name, where)} must be {what}, got {value!r}", name) from None


def size(value: str, name: str, forms: str) -> tuple[int, int]:
    """`W*H` or `WxH` as (width, height); `forms` says what the door accepts, for the error."""
    parsed = parse_size(value)
    if parsed is None:
        raise Invalid(f"{name} must be {forms}, got {value!r}", name.rsplit(".", 1)[-1])
    return parsed


def loras(container: dict, name: str, where: str | None = None, *, text_json: bool = False) -> tuple[LoraRef, ...]:
    """`[{"path": ..., "scale": ...}, ...]` (scale defaults to 1), read by the core's one reader
    (`read_lora_list`). `text_json`: the list may come as JSON text (multipart forms send every
    field as text); a JSON body must send a list."""
    value = container.get(name)
    if value is None:
        return ()
    label = _label(name, where)
    if isinstance(value, str) and not text_json:
        raise Invalid(f"{label} must be a list of {{path, scale}} objects", name)
    refs = read_lora_list(value)
    if isinstance(refs, RenderError):
        raise Invalid(refs.text(label), name)
    return refs
