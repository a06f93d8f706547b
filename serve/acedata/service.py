"""The AceData Flux images API: parse its bodies into task-layer calls, render records in its
shapes. No web framework, no task logic; methods return bodies or `ServiceError`s.

Vocabulary owned here: `action` generate / edit (`edits` accepted), provider model names through
the config's alias table (`flux-pro` -> a configured model), and sizes as `WxH` (any size the
model renders) or an aspect ratio `W:H` (the nearest size the model renders, about its native
area: one megapixel for FLUX and SDXL).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from cluster.models import ModelSpec, parse_size
from cluster.request import RenderError, RenderRequest
from serve.acedata.protocol import (
    ACTIONS, DEFAULT_MODEL, ERRORS, Accepted, ErrorBody, ErrorDetail, Image, ImagesBody, TaskBatch, TaskItem,
)
from serve.errors import ErrorKind, ServiceError
from serve.http import Caller
from serve.tasks.record import TaskRecord, TaskStatus
from serve.tasks.service import Submission, TaskService

API = "acedata"
_RATIO = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
MAX_BATCH_IDS = 100


def trace_id() -> str:
    return str(uuid.uuid4())


def error_body(error: ServiceError, task_id: str | None = None) -> dict:
    return ErrorBody(error=ErrorDetail(code=ERRORS[error.kind].code, message=error.message), trace_id=trace_id(),
                     task_id=task_id).model_dump(exclude_none=True)


class _Invalid(Exception):
    def __init__(self, message: str, param: str, kind: ErrorKind = ErrorKind.INVALID):
        self.error = ServiceError(kind, message, param)


class AceDataService:
    def __init__(self, tasks: TaskService):
        self.tasks = tasks

    # --- POST /flux/images ----------------------------------------------------------------------

    async def images(self, caller: Caller) -> dict | ServiceError:
        try:
            submission, answer_now = await self._parse(caller)
        except _Invalid as invalid:
            return invalid.error
        record = await self.tasks.submit(submission)
        if isinstance(record, ServiceError):
            return record
        if answer_now:
            return Accepted(task_id=record.task_id, trace_id=record.trace_id).model_dump()
        finished = await self.tasks.wait(record)
        if not finished.terminal:
            return ServiceError(ErrorKind.TIMEOUT, f"task {record.task_id} did not finish within the synchronous "
                                                   f"wait; retrieve it with POST /flux/tasks")
        body = self.final_body(finished, caller.base_url)
        if body.get("success"):
            return body
        return ServiceError(ErrorKind.TASK_FAILED, body["error"]["message"])

    async def _parse(self, caller: Caller) -> tuple[Submission, bool]:
        body = caller.body
        if not isinstance(body, dict):
            raise _Invalid("request body must be a JSON object", "body", ErrorKind.MALFORMED)
        action = ACTIONS.get(_text(body, "action") or "generate")
        if action is None:
            raise _Invalid(f"action must be generate or edit, got {body.get('action')!r}", "action")
        prompt = _text(body, "prompt")
        if not prompt or not prompt.strip():
            raise _Invalid("prompt must not be empty", "prompt", ErrorKind.EMPTY_PROMPT)
        spec = self.tasks.model(_text(body, "model") or DEFAULT_MODEL)
        if isinstance(spec, ServiceError):
            raise _Invalid(spec.message, "model", spec.kind)
        if spec.edit != (action == "edit"):
            needs = "an editing model (e.g. flux-kontext-pro)" if action == "edit" else "a generating model"
            raise _Invalid(f"action {action} needs {needs}; {body.get('model') or DEFAULT_MODEL} is not one", "model")
        width, height = _size(spec, _text(body, "size"))
        count = _count(body.get("count"), spec, action)
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise _Invalid(f"seed must be an integer, got {seed!r}", "seed")
        image = None
        if action == "edit":
            url = _text(body, "image_url")
            if not url:
                raise _Invalid("image_url is required for action edit", "image_url")
            image = await self.tasks.input_image(url, "image_url")
            if isinstance(image, ServiceError):
                raise _Invalid(image.message, "image_url")
        callback = _text(body, "callback_url")
        asynchronous = body.get("async", False)
        if not isinstance(asynchronous, bool):
            raise _Invalid(f"async must be a boolean, got {asynchronous!r}", "async")
        request = RenderRequest(model=spec.name, prompt=prompt, width=width, height=height, n=count, seed=seed,
                                init_image=image)
        submission = Submission(api=API, key_id=caller.key_id, request=request, base_url=caller.base_url,
                                callback_url=callback, client_body=body, sizes="render")
        return submission, asynchronous or bool(callback)

    # --- POST /flux/tasks -----------------------------------------------------------------------

    async def retrieve(self, caller: Caller) -> dict | ServiceError:
        body = caller.body
        if not isinstance(body, dict):
            return ServiceError(ErrorKind.MALFORMED, "request body must be a JSON object")
        action = body.get("action") or "retrieve"
        if action == "retrieve":
            task_id = body.get("id")
            if not isinstance(task_id, str) or not task_id:
                return ServiceError.invalid("id must be a task id", "id")
            record = await self.tasks.get(task_id, caller.key_id)
            if record is None:
                return ServiceError(ErrorKind.NOT_FOUND, f"task {task_id} does not exist or has expired")
            return self.task_item(record, caller.base_url).model_dump(mode="json")
        if action == "retrieve_batch":
            ids = body.get("ids")
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > MAX_BATCH_IDS:
                return ServiceError.invalid(f"ids must be a list of at most {MAX_BATCH_IDS} task ids", "ids")
            items = [self.task_item(record, caller.base_url) for task_id in ids
                     if (record := await self.tasks.get(task_id, caller.key_id)) is not None]
            return TaskBatch(items=items, count=len(items)).model_dump(mode="json")
        return ServiceError.invalid(f"action must be retrieve or retrieve_batch, got {action!r}", "action")

    # --- rendering a record ---------------------------------------------------------------------

    def task_item(self, record: TaskRecord, base_url: str | None = None) -> TaskItem:
        response = self.final_body(record, base_url) if record.terminal else None
        progress = record.progress
        return TaskItem(id=record.task_id, created_at=record.submit_time, finished_at=record.end_time,
                        request=record.client_body, response=response, trace_id=record.trace_id,
                        status=record.status.value.lower(), queue_position=record.queue_position,
                        progress=progress.steps_only() if progress else None,
                        eta_s=progress.eta_left(time.time()) if progress else None)

    def final_body(self, record: TaskRecord, base_url: str | None = None) -> dict:
        """A finished task's body: the synchronous answer, or the error body (also what its
        callback receives)."""
        images = [Image(prompt=record.request.prompt, image_url=self.tasks.result_url(record, o.key, base_url),
                        seed=o.seed, timings={"inference": round(o.inference_s, 3)})
                  for o in record.results if o.key]
        if record.status == TaskStatus.SUCCEEDED and images:
            return ImagesBody(task_id=record.task_id, trace_id=record.trace_id, data=images).model_dump()
        if record.status == TaskStatus.CANCELED:
            failure = ServiceError(ErrorKind.TASK_FAILED, "the task was canceled")
        else:
            failure = ServiceError(ErrorKind.TASK_FAILED, f"{record.code}: {record.message}")
        return error_body(failure, record.task_id)


def _text(body: dict, name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise _Invalid(f"{name} must be a string, got {value!r}", name)
    return value


def _size(spec: ModelSpec, size: str | None) -> tuple[int | None, int | None]:
    if size is None:
        return None, None
    if ratio := _RATIO.match(size):
        chosen = spec.size_for_aspect(int(ratio[1]), int(ratio[2]))
        if isinstance(chosen, RenderError):
            raise _Invalid(chosen.message, "size")
        return chosen
    if (parsed := parse_size(size)) is None:
        raise _Invalid(f"size must be WxH (e.g. 1024x1024) or an aspect ratio (e.g. 16:9), got {size!r}", "size")
    return parsed


def _count(value: Any, spec: ModelSpec, action: str) -> int:
    if value is None:
        return 1
    # The SDK types `count` as a number: 2.0 is two images.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise _Invalid(f"count must be a whole number, got {value!r}", "count")
    if action == "edit" and value != 1:
        raise _Invalid("count applies to action generate only (an edit renders one image)", "count")
    if not 1 <= value <= spec.max_n:
        raise _Invalid(f"count must be 1..{spec.max_n} for model {spec.name}, got {int(value)}", "count")
    return int(value)
