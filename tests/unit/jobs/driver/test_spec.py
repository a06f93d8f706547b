"""The job spec (jobs/driver/spec.py): validated before any work, and the error budget as a
count or a fraction."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jobs.driver.spec import JobSpec


def spec(**changes) -> JobSpec:
    return JobSpec(**({"input": "in.parquet", "output": "out"} | changes))


def test_the_error_budget_is_a_count_or_a_fraction():
    assert spec(max_errors=5).error_budget(1000) == 5
    assert spec(max_errors=0.1).error_budget(1000) == pytest.approx(100)
    assert spec(max_errors=0).error_budget(1000) == 0


@pytest.mark.parametrize("changes, words", [
    ({"concurrency": (3, 2)}, "1 <= MIN <= MAX"),
    ({"concurrency": (0, 2)}, "1 <= MIN <= MAX"),
    ({"format": "zip"}, "format"),
    ({"shard_size": 0}, "shard_size"),
    ({"batch_size": 0}, "batch_size"),
    ({"unknown": 1}, "unknown"),
])
def test_a_spec_that_cannot_run_is_refused_before_any_work(changes, words):
    with pytest.raises(ValidationError, match=words):
        spec(**changes)
