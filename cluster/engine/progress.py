"""Denoising progress of one batch: which step it is at, reported at most a few times a second.

The pipeline's step callback runs on the device's thread between two steps, so what it does
must be cheap: `StepReporter` reads a clock and, when a report is due, hands a small record to
the caller (which moves it to another thread). It is also where a render stops early: a batch
whose every image was canceled raises `Canceled` at the next step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

REPORT_INTERVAL_S = 0.25  # at most four reports a second per batch


class Canceled(Exception):
    """Every image of the batch was canceled; the pipeline stops at the next step."""


@dataclass(frozen=True)
class StepProgress:
    """Batch progress after `step` of `steps` denoising steps, `elapsed_s` after the first began."""

    step: int
    steps: int
    elapsed_s: float

    @property
    def step_s(self) -> float:
        """Measured time per step so far."""
        return self.elapsed_s / self.step if self.step else 0.0


class StepReporter:
    """The pipeline's `callback_on_step_end` for one batch.

    `report(progress)` is called on the first step, at most every `interval_s` after it, and on
    the last step; `canceled()` is asked at every step and stops the render when it says so.
    """

    def __init__(self, steps: int, report: Callable[[StepProgress], None],
                 canceled: Callable[[], bool] = lambda: False, interval_s: float = REPORT_INTERVAL_S):
        self.steps = steps
        self.report = report
        self.canceled = canceled
        self.interval_s = interval_s
        self.started = time.perf_counter()
        self._last_report = float("-inf")

    def __call__(self, pipeline, step_index: int, _timestep, callback_kwargs: dict) -> dict:
        if self.canceled():
            raise Canceled()
        now = time.perf_counter()
        step = step_index + 1
        # Pipelines that run fewer steps than asked (img2img strength) say how many they run.
        steps = getattr(pipeline, "num_timesteps", None) or self.steps
        if step >= steps or now - self._last_report >= self.interval_s:
            self._last_report = now
            self.report(StepProgress(step, steps, now - self.started))
        return callback_kwargs
