"""The edge's failures (serve/edge/errors.py): edge kinds and the core's codes in one vocabulary,
each failure read the same way whichever it is."""

from __future__ import annotations

from cluster.spec.errors import ErrorCode, RenderError
from serve.edge.errors import REASONS, ErrorKind, ServiceError, message, reason, retry_headers


def test_the_edge_repeats_none_of_the_cores_codes():
    assert not {kind.value for kind in ErrorKind} & {code.value for code in ErrorCode}
    assert len(REASONS) == len(ErrorKind) + len(ErrorCode)


def test_a_failure_reads_the_same_whether_the_edge_or_the_core_made_it():
    limited = ServiceError(ErrorKind.RATE_LIMITED, "slow down", retry_after_s=7)
    assert (reason(limited), message(limited), retry_headers(limited)) == (ErrorKind.RATE_LIMITED, "slow down",
                                                                          {"Retry-After": "7"})
    refused = RenderError.invalid("parameters.size", "must be W*H")
    assert (reason(refused), message(refused), retry_headers(refused)) == (ErrorCode.INVALID_PARAMETER,
                                                                          "parameters.size must be W*H", {})
    typed = ServiceError.invalid("n must be an integer", "n")
    assert (reason(typed), message(typed), typed.param) == (ErrorCode.INVALID_PARAMETER, "n must be an integer", "n")
