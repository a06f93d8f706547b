"""DashScope image synthesis: the logic behind the routes, with no web framework.

Every method returns a response body or an `ApiError`; `router.py` maps them to HTTP.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

from cluster.config import ServeConfig
from cluster.models import ModelSpec, parse_size
from cluster.request import RenderError, RenderRequest, ResolvedRequest
from cluster.storage import Storage
from serve.dashscope.protocol import TIME_FORMAT, TaskBody, TaskList, TaskListItem, TaskOutput
from serve.errors import ApiError
from serve.fetch import FetchError, fetch_image
from serve.tasks.dispatch import Dispatcher, QueueFull
from serve.tasks.record import TaskRecord, TaskStatus

_INT, _NUMBER, _BOOL, _TEXT = "an integer", "a number", "a boolean", "a string"


def request_id() -> str:
    return str(uuid.uuid4())


def format_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts)
    return f"{moment.strftime(TIME_FORMAT)}.{moment.microsecond // 1000:03d}"


def _typed(container: dict, name: str, kind: str, where: str) -> Any:
    """The value of `name`, checked against `kind`; raises ApiError naming the field."""
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
        raise _Invalid(ApiError.invalid(f"{where}.{name} must be {kind}, got {value!r}"))
    return value


class _Invalid(Exception):
    def __init__(self, error: ApiError):
        self.error = error


class DashScopeService:
    def __init__(self, specs: dict[str, ModelSpec], dispatcher: Dispatcher, storage: Storage,
                 settings: ServeConfig):
        self.specs = specs
        self.dispatcher = dispatcher
        self.storage = storage
        self.settings = settings

    # --- create -------------------------------------------------------------------------------

    async def create(self, body: Any, key_id: str, sync: bool, edit_route: bool, base_url: str) -> dict | ApiError:
        try:
            spec, request = await self._parse(body, edit_route)
        except _Invalid as invalid:
            return invalid.error
        resolved = spec.resolve(request, sizes="api")
        if isinstance(resolved, RenderError):
            return ApiError(400, resolved.code, resolved.message)
        record = self._record(resolved, key_id)
        if request.init_image is not None:  # stored beside the results; the record stays small
            record.init_image_key = f"tasks/{record.task_id}/input"
            await asyncio.to_thread(self.storage.write, record.init_image_key, request.init_image)
        try:
            await self.dispatcher.submit(record)
        except QueueFull:
            return ApiError(503, "ServiceUnavailable", f"model {spec.name} is at capacity; retry later",
                            {"Retry-After": "5"})
        if not sync:
            return {"request_id": request_id(),
                    "output": {"task_id": record.task_id, "task_status": TaskStatus.PENDING.value}}
        finished = await self.dispatcher.wait(record.task_id, self.settings.sync_timeout_s)
        return self._body(finished or record, base_url)

    async def _parse(self, body: Any, edit_route: bool) -> tuple[ModelSpec, RenderRequest]:
        if not isinstance(body, dict):
            raise _Invalid(ApiError.invalid("request body must be a JSON object"))
        model = body.get("model")
        if not model:
            raise _Invalid(ApiError(400, "BadRequest.EmptyModel", "model must not be empty"))
        if not isinstance(model, str):
            raise _Invalid(ApiError.invalid(f"model must be a string, got {model!r}"))
        spec = self.specs.get(model)
        if spec is None:
            raise _Invalid(ApiError(404, "ModelNotFound", f"model {model} is not served here; "
                                                          f"available: {', '.join(self.specs)}"))
        if spec.edit != edit_route:
            route = "image2image" if spec.edit else "text2image"
            raise _Invalid(ApiError.invalid(f"model {model} is served at /services/aigc/{route}/image-synthesis"))
        inputs = body.get("input")
        if not isinstance(inputs, dict):
            raise _Invalid(ApiError(400, "BadRequest.EmptyInput", "input must be an object with a prompt"))
        prompt = _typed(inputs, "prompt", _TEXT, "input")
        if not prompt or not prompt.strip():
            raise _Invalid(ApiError(400, "BadRequest.EmptyInput", "input.prompt must not be empty"))
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            raise _Invalid(ApiError.invalid("parameters must be an object"))
        width = height = None
        if (size := _typed(params, "size", _TEXT, "parameters")) is not None:
            parsed = parse_size(size)
            if parsed is None:
                raise _Invalid(ApiError.invalid(f"parameters.size must look like W*H, got {size!r}"))
            width, height = parsed
        n = _typed(params, "n", _INT, "parameters")
        _typed(params, "offload", _BOOL, "parameters")  # accepted; offload is a deployment setting
        metadata = _typed(params, "add_sampling_metadata", _BOOL, "parameters")
        request = RenderRequest(
            model=model, prompt=prompt,
            negative_prompt=_typed(inputs, "negative_prompt", _TEXT, "input"),
            width=width, height=height,
            steps=_typed(params, "steps", _INT, "parameters"),
            guidance=_typed(params, spec.guidance_name, _NUMBER, "parameters"),
            seed=_typed(params, "seed", _INT, "parameters"),
            n=1 if n is None else n,
            add_sampling_metadata=True if metadata is None else metadata,
            init_image=await self._input_image(inputs) if spec.edit else None,
        )
        return spec, request

    async def _input_image(self, inputs: dict) -> bytes:
        url = _typed(inputs, "image_url", _TEXT, "input") or _typed(inputs, "base_image_url", _TEXT, "input")
        if not url:
            raise _Invalid(ApiError.invalid("input.image_url is required for image editing"))
        try:
            return await fetch_image(url, self.settings.max_image_bytes, self.settings.allow_private_fetch)
        except FetchError as exc:
            raise _Invalid(ApiError.invalid(f"input.image_url: {exc}")) from None

    def _record(self, resolved: ResolvedRequest, key_id: str) -> TaskRecord:
        now = time.time()
        fields = {k: getattr(resolved, k) for k in ("model", "prompt", "negative_prompt", "width", "height",
                                                     "steps", "guidance", "seed", "n", "add_sampling_metadata")}
        return TaskRecord(task_id=str(uuid.uuid4()), model=resolved.model, key_id=key_id, request=fields,
                          submit_time=now, deadline=now + self.settings.task_deadline_s,
                          expires_at=now + self.settings.retention_s)

    # --- fetch / cancel / list ----------------------------------------------------------------

    async def fetch(self, task_id: str, base_url: str) -> dict:
        record = await self.dispatcher.store.get(task_id)
        if record is None:
            return {"request_id": request_id(),
                    "output": {"task_id": task_id, "task_status": TaskStatus.UNKNOWN.value}}
        return self._body(record, base_url)

    async def cancel(self, task_id: str) -> dict | ApiError:
        canceled = await self.dispatcher.store.transition(task_id, {TaskStatus.PENDING},
                                                          status=TaskStatus.CANCELED, end_time=time.time())
        if canceled is not None:
            return {"request_id": request_id()}
        record = await self.dispatcher.store.get(task_id)
        if record is None:
            return ApiError(404, "InvalidParameter", f"task {task_id} does not exist or has expired")
        return ApiError(400, "UnsupportedOperation",
                        f"only PENDING tasks can be canceled; task {task_id} is {record.status.value}")

    async def list(self, query: dict[str, str], key_id: str) -> dict | ApiError:
        try:
            page_no = int(query.get("page_no") or 1)
            page_size = int(query.get("page_size") or 10)
            start = _parse_compact_time(query.get("start_time"))
            end = _parse_compact_time(query.get("end_time"))
        except ValueError as exc:
            return ApiError.invalid(str(exc))
        if page_no < 1 or not 1 <= page_size <= 100:
            return ApiError.invalid("page_no must be >= 1 and page_size 1..100")
        records, total = await self.dispatcher.store.list(
            key_id=key_id, status=query.get("status") or None, model=query.get("model_name") or None,
            start=start, end=end, page_no=page_no, page_size=page_size)
        items = [TaskListItem(task_id=r.task_id, task_status=r.status.value, model_name=r.model,
                              submit_time=format_time(r.submit_time), scheduled_time=format_time(r.scheduled_time),
                              end_time=format_time(r.end_time)) for r in records]
        return TaskList(request_id=request_id(), tasks=items, data=items, total=total, page_no=page_no,
                        page_size=page_size).model_dump(exclude_none=True)

    # --- rendering a record ---------------------------------------------------------------------

    def _body(self, record: TaskRecord, base_url: str) -> dict:
        output = TaskOutput(task_id=record.task_id, task_status=record.status.value,
                            submit_time=format_time(record.submit_time),
                            scheduled_time=format_time(record.scheduled_time),
                            end_time=format_time(record.end_time))
        usage = None
        if record.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED) and record.results:
            expiry = max(1, int(min(self.settings.url_expiry_s, record.expires_at - time.time())))
            output.results = [
                {"url": self.storage.url(o.key, expiry, base_url), "seed": o.seed} if o.key
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
