"""The shared field readers (serve/edge/fields.py): kinds checked, the field named, ranges left to
the core."""

from __future__ import annotations

import pytest

from cluster.spec.errors import ErrorCode
from serve.edge import fields
from serve.edge.errors import ErrorKind
from serve.edge.fields import Invalid


def refused(read, *args, **kwargs) -> Invalid:
    with pytest.raises(Invalid) as caught:
        read(*args, **kwargs)
    return caught.value


def test_absent_fields_read_as_none():
    for read in (fields.text, fields.integer, fields.number, fields.boolean):
        assert read({}, "x") is None and read({"x": None}, "x") is None


def test_integers_are_strict_unless_a_door_says_otherwise():
    assert fields.integer({"n": 2}, "n") == 2
    for value in (2.0, "2", True, 1.5):
        error = refused(fields.integer, {"n": value}, "n", "parameters").error
        assert (error.kind, error.param) == (ErrorCode.INVALID_PARAMETER, "n")
        assert error.message == f"parameters.n must be an integer, got {value!r}"
    assert fields.integer({"count": 2.0}, "count", floats=True) == 2  # an SDK that types counts as numbers
    assert fields.integer({"n": "3"}, "n", strings=True) == 3  # multipart sends text
    assert refused(fields.integer, {"n": 2.5}, "n", floats=True).error.param == "n"
    assert refused(fields.integer, {"n": "two"}, "n", strings=True).error.message == "n must be an integer, got 'two'"


def test_numbers_texts_booleans():
    assert fields.number({"g": 3}, "g") == 3.0 and fields.number({"g": "3.5"}, "g", strings=True) == 3.5
    assert refused(fields.number, {"g": True}, "g").error.message == "g must be a number, got True"
    assert refused(fields.text, {"p": 3}, "p", "input").error.message == "input.p must be a string, got 3"
    assert refused(fields.boolean, {"a": "yes"}, "a").error.message == "a must be a boolean, got 'yes'"


def test_sizes_and_objects():
    assert fields.size("1024*768", "size", "W*H") == (1024, 768) and fields.size("512x512", "size", "WxH") == (512, 512)
    error = refused(fields.size, "big", "parameters.size", "W*H, e.g. 1024*1024").error
    assert error.param == "size" and error.message == "parameters.size must be W*H, e.g. 1024*1024, got 'big'"
    assert refused(fields.json_object, [1]).error.kind == ErrorKind.MALFORMED
    assert fields.json_object({"a": 1}) == {"a": 1}
