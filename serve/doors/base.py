"""What every door's service is, written once: a door is its protocol table, its field names and
its answer shapes.

- `DoorService.submit`: the create skeleton. The door's parser turns its body into a
  `Submission` (raising `Invalid` for a field it cannot read, which becomes the answer); the
  submission goes to the task layer, once (`Once`: a retried call joins its first task) or
  plainly; what comes back is the `Created` task or the `Failure` to answer with.
- `LiveTask`: what every door shows of a live task beside its own fields (place in the queue,
  progress, seconds left, adapters), one pydantic model that a door's task shape extends, filled
  by `LiveTask.fields_of(record)`.
- `webhook_body`: a door whose clients may ask for a callback renders its task body for it; the
  others take no `callback_url`.

Each door is a folder (router, protocol, service) and one line in `serve/doors/registry.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel

from serve.edge.errors import Failure, ServiceError
from serve.edge.fields import Invalid
from serve.tasks.service import Once, Submission, TaskService
from serve.tasks.store.record import StepCount, TaskRecord, TaskStatus


@dataclass(frozen=True)
class Created:
    """A create call that became a task (or joined an earlier one)."""

    submission: Submission
    record: TaskRecord


class DoorService:
    api: ClassVar[str]  # the door's name: records keep it, and webhooks take this door's shape by it
    takes_callbacks: ClassVar[bool] = False  # whether a submission may carry a callback_url

    def __init__(self, tasks: TaskService):
        self.tasks = tasks

    async def submit(self, parsing: Awaitable[Submission], once: Once | None = None) -> Created | Failure:
        """Parse (the door's `Invalid` is its answer), then submit: once, or plainly."""
        try:
            submission = await parsing
        except Invalid as invalid:
            return invalid.error
        if submission.callback_url and not self.takes_callbacks:
            return ServiceError.invalid(f"callback_url is not taken on the {self.api} API", "callback_url")
        record = await (self.tasks.submit_once(submission, once) if once else self.tasks.submit(submission))
        return record if not isinstance(record, TaskRecord) else Created(submission, record)

    def live(self, record: TaskRecord, base_url: str | None) -> dict[str, Any]:
        """`LiveTask.fields_of(record)`, with the signed URL of its latest preview while it runs."""
        preview = record.preview if record.status == TaskStatus.RUNNING else None
        url = self.tasks.result_url(record, preview.key, base_url) if preview else None
        return LiveTask.fields_of(record, url)

    def webhook_body(self, record: TaskRecord) -> dict:
        """The body this door's task sends to its callback (doors that take callbacks)."""
        raise NotImplementedError(f"the {self.api} door takes no callbacks")


class LiveTask(BaseModel):
    """A task while it lives, as every door shows it (extensions of each API's task shape):
    its place in its model's queue while PENDING (1: starts next), denoising steps done of all
    its steps and the seconds left while RUNNING, and its adapters (path and scale; sha256 once
    rendered)."""

    queue_position: int | None = None
    progress: StepCount | None = None
    eta_s: float | None = None
    loras: list[dict[str, Any]] | None = None
    preview_url: str | None = None  # while RUNNING, its latest preview (`partial_images`)

    @classmethod
    def fields_of(cls, record: TaskRecord, preview_url: str | None = None) -> dict[str, Any]:
        """The live fields of `record` (as values, not a model), for a door's shape that extends
        `LiveTask`: `TaskOutput(task_id=..., **LiveTask.fields_of(record))`."""
        progress = record.progress
        return {"queue_position": record.queue_position,
                "progress": progress.steps_only() if progress else None,
                "eta_s": progress.eta_left(time.time()) if progress else None,
                "loras": lora_view(record), "preview_url": preview_url}


def lora_view(record: TaskRecord) -> list[dict] | None:
    """The adapters of a task as the doors show them: path, sha256 and scale once rendered,
    path and scale before (None for a task without adapters)."""
    if record.loras:
        return [lora.as_dict() for lora in record.loras]
    if record.request.loras:
        return [{"path": lora.path, "scale": lora.scale} for lora in record.request.loras]
    return None


async def close_previews(previews: AsyncIterator, waiting: asyncio.Future | None) -> None:
    """End a followed task's previews (`TaskService.previews`): the preview still awaited first,
    then the stream itself, which lets its listener go."""
    if waiting is not None:
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await waiting
    await previews.aclose()
