"""What the web page reads: one task with its parameters, progress and images (a page-side view;
the API doors keep their own shapes)."""

from __future__ import annotations

from pydantic import BaseModel

from serve.doors.base import LiveTask


class ImageView(BaseModel):
    seed: int
    url: str | None = None
    error: str | None = None


class TaskView(LiveTask):
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
    images: list[ImageView] = []
    error: str | None = None
    quality: str = "lossless"
    mode: str = "text"  # text, image (image to image), inpaint or edit
    strength: float | None = None
    output_format: str = "png"


class TaskPage(BaseModel):
    tasks: list[TaskView]
    total: int
