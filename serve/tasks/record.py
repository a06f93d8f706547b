"""The task record: what a task is, stored as JSON by every backend."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    UNKNOWN = "UNKNOWN"


TERMINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED})


class ImageOutcome(BaseModel):
    """One image of a task: where its file is, or why it failed."""

    index: int
    seed: int
    key: str | None = None  # storage key of the PNG
    code: str | None = None
    message: str | None = None


class TaskRecord(BaseModel):
    """One create call. `version` increases on every write (compare-and-set)."""

    task_id: str
    model: str
    status: TaskStatus = TaskStatus.PENDING
    key_id: str = ""  # which API key created it (a hash, never the key)
    request: dict = Field(default_factory=dict)  # RenderRequest fields, seed chosen, no image bytes
    init_image_key: str | None = None
    submit_time: float
    scheduled_time: float | None = None
    end_time: float | None = None
    results: list[ImageOutcome] = Field(default_factory=list)
    code: str | None = None  # whole-task failure
    message: str | None = None
    attempts: int = 0
    owner: str | None = None  # dispatcher holding the lease
    lease_until: float = 0.0
    deadline: float
    expires_at: float
    version: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL
