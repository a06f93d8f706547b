"""The job spec (jobs/driver/spec.py): validated before any work, the error budget as a count
or a fraction, and the work unit a job is cut into."""

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


def test_small_jobs_spread_over_every_actor_in_units_of_two_batches():
    assert spec(batch_size=4).unit_images(256, 2) == 8  # 32 units: 16 an actor
    assert spec(batch_size=4).unit_images(10, 4) == 8  # never under two batches


def test_large_jobs_take_bigger_units_up_to_32_batches():
    assert spec(batch_size=4).unit_images(10_000, 16) == 4 * 10  # ceil(10,000 / (16 actors * 16 units * 4))
    assert spec(batch_size=4).unit_images(10_000, 1) == 4 * 32  # 16 units of 625 images: capped
    assert spec(batch_size=4).unit_images(1_000_000, 16) == 4 * 32


def test_an_explicit_unit_size_wins():
    assert spec(batch_size=4, unit_size=3).unit_images(1_000_000, 16) == 3
