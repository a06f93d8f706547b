"""DashScope image synthesis: parse DashScope bodies into task-layer calls and render records in
DashScope's shapes. No web framework, no task logic: every method returns a response body or a
`ServiceError`; `router.py` maps them to HTTP.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from cluster.models import parse_size
from cluster.request import RenderRequest
from serve.dashscope.protocol import TIME_FORMAT, TaskBody, TaskList, TaskListItem, TaskOutput
from serve.errors import ErrorKind, ServiceError
from serve.http import Caller
from serve.tasks.record import TaskRecord, TaskStatus
from serve.tasks.service import Submission, TaskService

API = "dashscope"
_INT, _NUMBER, _BOOL, _TEXT = "an integer", "a number", "a boolean", "a string"


def request_id() -> str:
    return str(uuid.uuid4())


def format_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts)
    return f"{moment.strftime(TIME_FORMAT)}.{moment.microsecond // 1000:03d}"


class _Invalid(Exception):
    def __init__(self, error: ServiceError):
        self.error = error


def _typed(container: dict, name: str, kind: str, where: str) -> Any:
    """The value of `name`, checked against `kind`; raises _Invalid naming the field."""
    value = container.get(name)
    if value is None:
        return None
    ok = {
        _INT: isinstance(value, int) and not isinstance(value, bool),
        _NUMBER: isinstance(value, (int, float)) and not isinstance(value, bool),
        _BOOL: isinstance(value, bool),
        _TEXT: isinstance(value, str),
    }[kind]
    if not ok:
        raise _Invalid(ServiceError.invalid(f"{where}.{name} must be {kind}, got {value!r}", name))
    return value


class DashScopeService:
    def __init__(self, tasks: TaskService):
        self.tasks = tasks

    # --- create -------------------------------------------------------------------------------

    async def create(self, caller: Caller, sync: bool, edit_route: bool) -> dict | ServiceError:
        try:
            submission = await self._parse(caller, edit_route)
        except _Invalid as invalid:
            return invalid.error
        record = await self.tasks.submit(submission)
        if isinstance(record, ServiceError):
            return record
        if not sync:
            return {"request_id": request_id(),
                    "output": {"task_id": record.task_id, "task_status": TaskStatus.PENDING.value}}
        return self.task_body(await self.tasks.wait(record), caller.base_url)

    async def _parse(self, caller: Caller, edit_route: bool) -> Submission:
        body = caller.body
        if not isinstance(body, dict):
            raise _Invalid(ServiceError(ErrorKind.MALFORMED, "request body must be a JSON object"))
        model = body.get("model")
        if not model:
            raise _Invalid(ServiceError(ErrorKind.EMPTY_MODEL, "model must not be empty", "model"))
        if not isinstance(model, str):
            raise _Invalid(ServiceError.invalid(f"model must be a string, got {model!r}", "model"))
        spec = self.tasks.model(model)
        if isinstance(spec, ServiceError):
            raise _Invalid(spec)
        if spec.edit != edit_route:
            route = "image2image" if spec.edit else "text2image"
            raise _Invalid(ServiceError.invalid(f"model {model} is served at /services/aigc/{route}/image-synthesis",
                                                "model"))
        inputs = body.get("input")
        if not isinstance(inputs, dict):
            raise _Invalid(ServiceError(ErrorKind.EMPTY_PROMPT, "input must be an object with a prompt", "input"))
        prompt = _typed(inputs, "prompt", _TEXT, "input")
        if not prompt or not prompt.strip():
            raise _Invalid(ServiceError(ErrorKind.EMPTY_PROMPT, "input.prompt must not be empty", "prompt"))
        params = body.get("parameters")
        params = {} if params is None else params  # v2 clients leave it out
        if not isinstance(params, dict):
            raise _Invalid(ServiceError.invalid("parameters must be an object", "parameters"))
        width = height = None
        if (size := _typed(params, "size", _TEXT, "parameters")) is not None:
            if (parsed := parse_size(size)) is None:
                raise _Invalid(ServiceError.invalid(f"parameters.size must look like W*H, got {size!r}", "size"))
            width, height = parsed
        n = _typed(params, "n", _INT, "parameters")
        _typed(params, "offload", _BOOL, "parameters")  # accepted; offload is a deployment setting
        metadata = _typed(params, "add_sampling_metadata", _BOOL, "parameters")
        request = RenderRequest(
            model=spec.name, prompt=prompt,
            negative_prompt=_typed(inputs, "negative_prompt", _TEXT, "input"),
            width=width, height=height,
            steps=_typed(params, "steps", _INT, "parameters"),
            guidance=_typed(params, spec.guidance_name, _NUMBER, "parameters"),
            seed=_typed(params, "seed", _INT, "parameters"),
            n=1 if n is None else n,
            add_sampling_metadata=True if metadata is None else metadata,
            init_image=await self._input_image(inputs) if spec.edit else None,
        )
        # An extension: DashScope has no webhooks; `parameters.callback_url` adds one.
        callback = _typed(params, "callback_url", _TEXT, "parameters")
        return Submission(api=API, key_id=caller.key_id, request=request, base_url=caller.base_url,
                          callback_url=callback, client_body=body)

    async def _input_image(self, inputs: dict) -> bytes:
        url = _typed(inputs, "image_url", _TEXT, "input") or _typed(inputs, "base_image_url", _TEXT, "input")
        if not url:
            raise _Invalid(ServiceError.invalid("input.image_url is required for image editing", "image_url"))
        image = await self.tasks.input_image(url, "input.image_url")
        if isinstance(image, ServiceError):
            raise _Invalid(image)
        return image

    # --- fetch / cancel / list ----------------------------------------------------------------

    async def fetch(self, caller: Caller, task_id: str) -> dict:
        record = await self.tasks.get(task_id, caller.key_id)
        if record is None:  # unknown, expired, or another key's: all read the same
            return {"request_id": request_id(),
                    "output": {"task_id": task_id, "task_status": TaskStatus.UNKNOWN.value}}
        return self.task_body(record, caller.base_url)

    async def cancel(self, caller: Caller, task_id: str) -> dict | ServiceError:
        canceled = await self.tasks.cancel(task_id, caller.key_id)
        return canceled if isinstance(canceled, ServiceError) else {"request_id": request_id()}

    async def list(self, caller: Caller, query: dict[str, str]) -> dict | ServiceError:
        try:
            page_no = int(query.get("page_no") or 1)
            page_size = int(query.get("page_size") or 10)
            start = _parse_compact_time(query.get("start_time"))
            end = _parse_compact_time(query.get("end_time"))
        except ValueError as exc:
            return ServiceError.invalid(str(exc))
        if page_no < 1 or not 1 <= page_size <= 100:
            return ServiceError.invalid("page_no must be >= 1 and page_size 1..100")
        records, total = await self.tasks.list(
            caller.key_id, status=query.get("status") or None, model=query.get("model_name") or None,
            start=start, end=end, page_no=page_no, page_size=page_size)
        items = [TaskListItem(task_id=r.task_id, task_status=r.status.value, model_name=r.model,
                              submit_time=format_time(r.submit_time), scheduled_time=format_time(r.scheduled_time),
                              end_time=format_time(r.end_time)) for r in records]
        return TaskList(request_id=request_id(), tasks=items, data=items, total=total, page_no=page_no,
                        page_size=page_size).model_dump(exclude_none=True)

    # --- rendering a record ---------------------------------------------------------------------

    def task_body(self, record: TaskRecord, base_url: str | None = None) -> dict:
        """The fetch body of a task (also what its webhook receives)."""
        output = TaskOutput(task_id=record.task_id, task_status=record.status.value,
                            submit_time=format_time(record.submit_time),
                            scheduled_time=format_time(record.scheduled_time),
                            end_time=format_time(record.end_time), queue_position=record.queue_position)
        if record.progress is not None:
            output.progress = record.progress.steps_only()
            output.eta_s = record.progress.eta_left(time.time())
        usage = None
        if record.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED) and record.results:
            output.results = [
                {"url": self.tasks.result_url(record, o.key, base_url), "seed": o.seed} if o.key
                else {"code": o.code, "message": o.message, "seed": o.seed}
                for o in record.results]
            succeeded = sum(1 for o in record.results if o.key)
            output.task_metrics = {"TOTAL": len(record.results), "SUCCEEDED": succeeded,
                                   "FAILED": len(record.results) - succeeded}
            usage = {"image_count": succeeded}
        if record.status == TaskStatus.FAILED:
            output.code, output.message = record.code, record.message
        return TaskBody(request_id=request_id(), output=output, usage=usage).model_dump(exclude_none=True)


def _parse_compact_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y%m%d%H%M%S").timestamp()
    except ValueError:
        raise ValueError(f"time {value!r} must look like YYYYMMDDhhmmss") from None
