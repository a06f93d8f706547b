"""What the web page reads: one task with its parameters, progress and images (a page-side view;
the API doors keep their own shapes)."""

from __future__ import annotations

from pydantic import BaseModel

from serve.tasks.store.record import StepCount


class ImageView(BaseModel):
    seed: int
    url: str | None = None
    error: str | None = None


class TaskView(BaseModel):
    task_id: str
    api: str  # the door that created it
    model: str
    status: str
    prompt: str
    negative_prompt: str | None
    size: str  # W*H
    n: int
    seed: int
    steps: int
    guidance: float
    submit_time: float
    end_time: float | None
    queue_position: int | None = None
    progress: StepCount | None = None
    eta_s: float | None = None
    images: list[ImageView] = []
    error: str | None = None
    loras: list[dict] | None = None  # path, scale, and sha256 once rendered
    quality: str = "lossless"


class TaskPage(BaseModel):
    tasks: list[TaskView]
    total: int
