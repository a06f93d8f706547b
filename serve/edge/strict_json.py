"""Request bodies as JSON, refused at parse time when no door could use them.

Python's parser accepts things no client means and that fail later, deep in a door (a 500) or
in the store: `NaN` and `Infinity` literals, numbers beyond any range (`1e999` is infinity,
a 5000-digit integer), lone UTF-16 surrogates (`"\\ud800"`: no encoder takes them), and nesting
so deep that walking it recurses without bound. Each is a `MalformedJson` here, which the edge
answers with the door's 400.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 32  # the deepest body any door takes is 3 levels; extra fields get some room
MAX_INTEGER = 2**63  # larger magnitudes fit no field (seeds are 0..2**31-1)


class MalformedJson(ValueError):
    """Not JSON a door can take; the message says why."""


def _constant(name: str) -> Any:
    raise MalformedJson(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MalformedJson(f"number {text[:32]} is out of range")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > 19:  # checked before converting: a huge literal costs time to convert
        raise MalformedJson(f"number {text[:32]}... is out of range")
    value = int(text)
    if abs(value) >= MAX_INTEGER:
        raise MalformedJson(f"number {text} is out of range")
    return value


def parse(body: bytes) -> Any:
    """The parsed body (None for an empty one), or `MalformedJson`."""
    try:
        value = json.loads(body or b"null", parse_constant=_constant, parse_float=_float, parse_int=_int)
    except MalformedJson:
        raise
    except RecursionError:
        raise MalformedJson(f"nested deeper than {MAX_DEPTH} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise MalformedJson(f"not valid JSON: {exc}") from None
    _check(value)
    return value


def _check(value: Any) -> None:
    """Depth and strings, without recursion (a deep body must not exhaust the stack here)."""
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise MalformedJson(f"nested deeper than {MAX_DEPTH} levels")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            todo.extend((child, depth + 1) for child in children)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise MalformedJson("a string holds a lone UTF-16 surrogate (not valid Unicode)") from None
