"""The core's error vocabulary (cluster/spec/errors.py)."""

from __future__ import annotations

from cluster.spec.errors import ErrorCode, RenderError, first_line


def test_a_failure_is_the_callers_to_fix_or_ours_to_retry_and_a_cancel_neither():
    # A caller's value fails the same way every time: retrying it would only repeat the refusal.
    # Everything else that fails a request is ours, and a later try may succeed; except a cancel,
    # which the caller asked for (a batch rerun or a client's retry must not undo it).
    for code in ErrorCode:
        assert not (code.callers and code.retryable), code
        assert code.callers or code.retryable or code is ErrorCode.CANCELED, code
    assert not ErrorCode.CANCELED.callers and not ErrorCode.CANCELED.retryable


def test_an_error_named_for_a_door_keeps_its_code_and_message():
    error = RenderError.invalid("n", "must be 1..4")
    assert error.named({"n": "count"}) == RenderError.invalid("count", "must be 1..4")
    assert error.named({"steps": "parameters.steps"}) is error  # not a parameter the door renames
    assert RenderError(ErrorCode.INTERNAL, "boom").named({"n": "count"}).text() == "boom"


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
