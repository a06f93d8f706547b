"""Step progress (cluster/engine/progress.py): reported on the first and last step and at most every
interval between, and a canceled batch stops at the next step."""

from __future__ import annotations

import pytest

from cluster.engine.progress import Canceled, StepReporter


class Pipeline:
    num_timesteps = None


def run(reporter: StepReporter, steps: int) -> None:
    for index in range(steps):
        reporter(Pipeline(), index, None, {})


def test_first_and_last_steps_are_reported_and_none_between_within_the_interval():
    reports = []
    run(StepReporter(50, reports.append, interval_s=3600), 50)
    assert [(r.step, r.steps) for r in reports] == [(1, 50), (50, 50)]


def test_every_step_is_reported_with_no_interval_and_times_rise():
    reports = []
    run(StepReporter(5, reports.append, interval_s=0), 5)
    assert [r.step for r in reports] == [1, 2, 3, 4, 5]
    assert all(a.elapsed_s <= b.elapsed_s for a, b in zip(reports, reports[1:]))
    assert reports[-1].step_s == pytest.approx(reports[-1].elapsed_s / 5)


def test_a_pipeline_that_runs_fewer_steps_says_how_many():
    reports = []
    pipeline = Pipeline()
    pipeline.num_timesteps = 3  # img2img strength: fewer steps than asked
    reporter = StepReporter(10, reports.append, interval_s=3600)
    for index in range(3):
        reporter(pipeline, index, None, {})
    assert (reports[-1].step, reports[-1].steps) == (3, 3)


def test_cancel_stops_at_the_next_step():
    canceled = {"now": False}
    reporter = StepReporter(10, lambda _: None, lambda: canceled["now"], interval_s=0)
    reporter(Pipeline(), 0, None, {})
    canceled["now"] = True
    with pytest.raises(Canceled):
        reporter(Pipeline(), 1, None, {})
