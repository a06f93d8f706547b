"""The core's error vocabulary (cluster/spec/errors.py)."""

from __future__ import annotations

from cluster.spec.errors import ErrorCode, RenderError, first_line


def test_retryable_codes_are_those_a_later_try_can_change():
    assert {c for c in ErrorCode if c.retryable} == {
        ErrorCode.MODEL_UNAVAILABLE, ErrorCode.MODEL_LOAD_FAILED, ErrorCode.OUT_OF_MEMORY, ErrorCode.TIMEOUT,
        ErrorCode.INTERNAL}


def test_records_written_with_dashscope_codes_still_read():
    assert ErrorCode("InternalError.Timeout") is ErrorCode.TIMEOUT
    assert ErrorCode("BadRequest.EmptyInput") is ErrorCode.EMPTY_PROMPT
    assert ErrorCode("timeout") is ErrorCode.TIMEOUT


def test_a_parameter_error_is_named_as_the_door_spells_it():
    error = RenderError.invalid("n", "must be 1..4 for model flux-dev, got 5")
    assert error.text() == "n must be 1..4 for model flux-dev, got 5"
    assert error.text("count") == "count must be 1..4 for model flux-dev, got 5"
    assert RenderError(ErrorCode.INTERNAL, "boom").text("ignored") == "boom"


def test_first_line():
    assert first_line(ValueError("one\ntwo")) == "one" and first_line(KeyError()) == "KeyError"
