"""The task record (serve/tasks/store/record.py): what a failed task says, the ETA as time passes,
and no image bytes ever in a record."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cluster.spec.errors import ErrorCode, RenderError
from serve.tasks.store.record import ImageOutcome, TaskProgress, TaskRecord, TaskStatus
from tests.factories import resolved_request, task_record


def test_a_task_fails_with_its_own_error_else_its_first_failed_images():
    own = task_record(status=TaskStatus.FAILED, code=ErrorCode.TIMEOUT, message="too slow")
    assert own.error() == RenderError(ErrorCode.TIMEOUT, "too slow") and own.terminal
    images = task_record(status=TaskStatus.SUCCEEDED, results=[
        ImageOutcome(index=0, seed=1, key="tasks/x/0.png"),
        ImageOutcome(index=1, seed=2, code=ErrorCode.INVALID_PARAMETER, message="cannot be decoded", param="image")])
    assert images.error() == RenderError.invalid("image", "cannot be decoded")
    assert task_record(status=TaskStatus.RUNNING).error() is None and not task_record().terminal


def test_the_eta_counts_down_from_the_replicas_report():
    progress = TaskProgress(step=2, steps=8, eta_s=6.0, updated_at=100.0)
    assert progress.eta_left(101.5) == 4.5 and progress.eta_left(200) == 0.0
    assert progress.steps_only().model_dump() == {"step": 2, "steps": 8}


def test_a_record_never_holds_image_bytes():
    with pytest.raises(ValidationError, match="input images and masks live in storage"):
        TaskRecord(**task_record().model_dump(exclude={"request"}), request=resolved_request(init_image=b"\x89PNG"))
