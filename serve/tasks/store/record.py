"""The task record: what a task is, stored as JSON by every backend."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, field_validator

from cluster.spec.errors import ErrorCode, RenderError
from cluster.spec.loras import AppliedLora
from cluster.spec.request import ResolvedRequest


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
    code: ErrorCode | None = None
    message: str | None = None  # with `param`: what follows the parameter's name (`RenderError`)
    param: str | None = None  # the core's name of the parameter at fault, when one is
    inference_s: float = 0.0  # wall time of the batch the image was rendered in

    def error(self) -> RenderError | None:
        return RenderError(self.code, self.message or "", self.param) if self.code else None


class StepCount(BaseModel):
    """Denoising steps done of all the steps a task's images take (what the doors show)."""

    step: int
    steps: int


class TaskProgress(StepCount):
    """How far a RUNNING task is, and the time left at the step time measured so far (encoding
    and storing not counted) when the replica reported it."""

    eta_s: float
    updated_at: float

    def eta_left(self, now: float) -> float:
        """The ETA as of `now`: the time since the report has passed."""
        return round(max(0.0, self.eta_s - (now - self.updated_at)), 2)

    def steps_only(self) -> StepCount:
        return StepCount(step=self.step, steps=self.steps)


class PreviewNote(BaseModel):
    """The latest preview of a RUNNING task (`partial_images`): which image, which preview, and
    the file that holds it (overwritten by the next)."""

    index: int
    partial_image_index: int
    key: str


class DeliveryState(StrEnum):
    PENDING = "pending"  # not sent yet, or sent and due to be retried
    DELIVERED = "delivered"
    GAVE_UP = "gave_up"  # every attempt failed until the retry window closed


class WebhookDelivery(BaseModel):
    """Where the final body of a task goes, and how that went. Changing it never changes the
    task itself."""

    url: str
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    last_status: int | None = None  # HTTP status of the last attempt (None: no answer)
    last_error: str | None = None
    next_attempt_at: float = 0.0
    delivered_at: float | None = None
    sender: str | None = None  # the ingress sending it now, until `sending_until`
    sending_until: float = 0.0


class TaskRecord(BaseModel):
    """One create call. `version` increases on every write (compare-and-set)."""

    task_id: str
    model: str
    status: TaskStatus = TaskStatus.PENDING
    key_id: str = ""  # which API key created it (a hash, never the key); only it sees the task
    api: str = "dashscope"  # the door that created it (its name): its body shape is used for webhooks
    request: ResolvedRequest  # what is rendered: defaults filled, seed chosen, no image bytes
    client_body: Any = None  # the client's request as sent (AceData's retrieve returns it)
    base_url: str = ""  # the address the client reached us at (absolute URLs in webhooks)
    trace_id: str = ""
    init_image_key: str | None = None  # the input image (an edit, image to image, inpaint), in storage
    mask_key: str | None = None  # an inpaint's canonical mask, in storage
    webhook: WebhookDelivery | None = None
    submit_time: float
    scheduled_time: float | None = None
    end_time: float | None = None
    progress: TaskProgress | None = None  # from RUNNING on (steps done of steps, once it ends)
    batch_size: int | None = None  # images in the device batch it started in, other tasks' too
    preview: PreviewNote | None = None  # while RUNNING, when it asked for previews
    # While PENDING: 1 + the PENDING tasks of its model submitted before it. Counted when the
    # record is read for a client (`TaskService`), never stored: it changes without a write.
    queue_position: int | None = Field(None, exclude=True)
    results: list[ImageOutcome] = Field(default_factory=list)
    loras: list[AppliedLora] = Field(default_factory=list)  # adapters applied (by content hash), once rendered
    code: ErrorCode | None = None  # whole-task failure: the core's `RenderError`, kept whole
    message: str | None = None
    param: str | None = None
    attempts: int = 0
    owner: str | None = None  # dispatcher holding the lease
    lease_until: float = 0.0
    deadline: float
    expires_at: float
    version: int = 0

    @field_validator("request")
    @classmethod
    def _no_image_bytes(cls, request: ResolvedRequest) -> ResolvedRequest:
        if request.init_image is not None or request.mask is not None:
            raise ValueError("input images and masks live in storage (init_image_key, mask_key), not in the record")
        return request

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def error(self) -> RenderError | None:
        """Why it failed: the task's own error, else its first failed image's."""
        if self.code is not None:
            return RenderError(self.code, self.message or "", self.param)
        return next((o.error() for o in self.results if o.code), None)
