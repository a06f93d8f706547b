"""DashScope image synthesis: parse DashScope bodies into task-layer calls and render records in
DashScope's shapes. No web framework, no task logic: every method returns a response body or a
`Failure`; `router.py` maps them to HTTP.
"""

from __future__ import annotations

from datetime import datetime

from cluster.spec.errors import ErrorCode, RenderError
from cluster.spec.request import RenderRequest
from serve.doors.base import Created, DoorService
from serve.doors.dashscope.protocol import (
    CLIENT_FIELDS, ERRORS, TIME_FORMAT, TaskBody, TaskList, TaskListItem, TaskOutput, param_names, request_id,
)
from serve.edge import fields
from serve.edge.errors import Failure, ServiceError
from serve.edge.fields import Invalid
from serve.edge.http import Caller
from serve.tasks.service import Submission
from serve.tasks.store.record import TaskRecord, TaskStatus

MAX_PAGE_NO = 1_000_000  # a store's offset must stay a 64-bit integer


def _image_url(inputs: dict) -> str | None:
    return fields.text(inputs, "image_url", "input") or fields.text(inputs, "base_image_url", "input")


def format_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    moment = datetime.fromtimestamp(ts)
    return f"{moment.strftime(TIME_FORMAT)}.{moment.microsecond // 1000:03d}"


# Where each kind of model is created (a model asked for on the other route is refused).
SERVED_AT = {True: "it is served at /services/aigc/image2image/image-synthesis",
             False: "it is served at /services/aigc/text2image/image-synthesis"}


class DashScopeService(DoorService):
    api = "dashscope"
    takes_callbacks = True  # an extension: `parameters.callback_url`

    # --- create -------------------------------------------------------------------------------

    async def create(self, caller: Caller, sync: bool, edit_route: bool) -> dict | Failure:
        created = await self.submit(self._parse(caller, edit_route))
        if not isinstance(created, Created):
            return created
        if not sync:
            return {"request_id": request_id(),
                    "output": {"task_id": created.record.task_id, "task_status": TaskStatus.PENDING.value}}
        finished = await self.tasks.wait(created.record)
        error = finished.error() if finished.status == TaskStatus.FAILED else None
        if error is not None and error.code.callers:  # the caller's to fix: a 400, as at submission
            return error.named(created.submission.param_names)
        return self.task_body(finished, caller.base_url)

    async def _parse(self, caller: Caller, edit_route: bool) -> Submission:
        """Kinds are checked here, naming DashScope's fields; values by the core, once."""
        body = fields.json_object(caller.body)
        spec = self.tasks.model_for(fields.text(body, "model") or "", edit_route, SERVED_AT)
        if isinstance(spec, RenderError):
            raise Invalid.of(spec)
        inputs = body.get("input")
        if not isinstance(inputs, dict):
            raise Invalid("input must be an object with a prompt", "input", ErrorCode.EMPTY_PROMPT)
        params = body.get("parameters")
        params = {} if params is None else params  # v2 clients leave it out
        if not isinstance(params, dict):
            raise Invalid("parameters must be an object", "parameters")
        width = height = None
        if (size := fields.text(params, "size", "parameters")) is not None:
            width, height = fields.size(size, "parameters.size", "W*H, e.g. 1024*1024")
        n = fields.integer(params, "n", "parameters")
        fields.boolean(params, "offload", "parameters")  # accepted; offload is a deployment setting
        metadata = fields.boolean(params, "add_sampling_metadata", "parameters")
        prompt = fields.text(inputs, "prompt", "input") or ""
        # Not fetched for an empty prompt: the core refuses that first. An edit model needs an
        # image; any other takes one (image to image) and a mask with it (an inpaint).
        image = mask = None
        if prompt.strip() and (spec.edit or _image_url(inputs)):
            image = await self._input_image(inputs)
            if (mask_url := fields.text(inputs, "mask_image_url", "input")) is not None:
                mask = await self._mask(mask_url, image)
        elif fields.text(inputs, "mask_image_url", "input") is not None and prompt.strip():
            raise Invalid("input.mask_image_url needs input.image_url: the image it masks", "mask_image_url")
        request = RenderRequest(
            model=spec.name, prompt=prompt,
            negative_prompt=fields.text(inputs, "negative_prompt", "input"),
            width=width, height=height,
            steps=fields.integer(params, "steps", "parameters"),
            guidance=fields.number(params, spec.guidance_name, "parameters"),
            seed=fields.integer(params, "seed", "parameters"),
            n=1 if n is None else n,
            add_sampling_metadata=True if metadata is None else metadata,
            init_image=image, mask=mask,
            # Extensions.
            strength=fields.number(params, "strength", "parameters"),
            loras=fields.loras(params, "loras", "parameters"),
            quality=fields.text(params, "quality", "parameters"),
            output_format=fields.text(params, "output_format", "parameters"),
            output_quality=fields.integer(params, "output_quality", "parameters"),
            partial_images=fields.integer(params, "partial_images", "parameters"),  # previews: output.preview_url
        )
        # An extension: DashScope has no webhooks; `parameters.callback_url` adds one.
        callback = fields.text(params, "callback_url", "parameters")
        return Submission(api=self.api, key_id=caller.key_id, spec=spec, request=request, base_url=caller.base_url,
                          callback_url=callback, client_body={k: body[k] for k in CLIENT_FIELDS if k in body},
                          param_names=param_names(spec))

    async def _input_image(self, inputs: dict) -> bytes:
        url = _image_url(inputs)
        if not url:
            raise Invalid("input.image_url is required for image editing", "image_url")
        image = await self.tasks.input_image(url, "input.image_url")
        if not isinstance(image, bytes):
            raise Invalid.of(image)
        return image

    async def _mask(self, url: str, image: bytes) -> bytes:
        """An extension: `input.mask_image_url`, white where the image is repainted (as in
        DashScope's own mask edits), of the image's size."""
        mask = await self.tasks.input_image(url, "input.mask_image_url")
        if isinstance(mask, bytes):
            mask = await self.tasks.input_mask(mask, "white", image, "input.mask_image_url")
        if not isinstance(mask, bytes):
            raise Invalid.of(mask)
        return mask

    # --- fetch / cancel / list ----------------------------------------------------------------

    async def fetch(self, caller: Caller, task_id: str) -> dict:
        record = await self.tasks.get(task_id, caller.key_id)
        if record is None:  # unknown, expired, or another key's: all read the same
            return {"request_id": request_id(),
                    "output": {"task_id": task_id, "task_status": TaskStatus.UNKNOWN.value}}
        return self.task_body(record, caller.base_url)

    async def cancel(self, caller: Caller, task_id: str) -> dict | Failure:
        canceled = await self.tasks.cancel(task_id, caller.key_id)
        return canceled if isinstance(canceled, ServiceError) else {"request_id": request_id()}

    async def list(self, caller: Caller, query: dict[str, str]) -> dict | Failure:
        try:
            page_no = int(query.get("page_no") or 1)
            page_size = int(query.get("page_size") or 10)
            start = _parse_compact_time(query.get("start_time"))
            end = _parse_compact_time(query.get("end_time"))
        except ValueError as exc:
            return ServiceError.invalid(str(exc))
        if not 1 <= page_no <= MAX_PAGE_NO or not 1 <= page_size <= 100:
            return ServiceError.invalid(f"page_no must be 1..{MAX_PAGE_NO} and page_size 1..100")
        records, total = await self.tasks.list(
            caller.key_id, status=query.get("status") or None, model=query.get("model_name") or None,
            start=start, end=end, page_no=page_no, page_size=page_size)
        items = [TaskListItem(task_id=r.task_id, task_status=r.status.value, model_name=r.model,
                              submit_time=format_time(r.submit_time), scheduled_time=format_time(r.scheduled_time),
                              end_time=format_time(r.end_time)) for r in records]
        return TaskList(request_id=request_id(), tasks=items, data=items, total=total, page_no=page_no,
                        page_size=page_size).model_dump(exclude_none=True)

    # --- rendering a record ---------------------------------------------------------------------

    def webhook_body(self, record: TaskRecord) -> dict:
        return self.task_body(record)

    def task_body(self, record: TaskRecord, base_url: str | None = None) -> dict:
        """The fetch body of a task (also what its webhook receives)."""
        output = TaskOutput(task_id=record.task_id, task_status=record.status.value,
                            submit_time=format_time(record.submit_time),
                            scheduled_time=format_time(record.scheduled_time),
                            end_time=format_time(record.end_time), **self.live(record, base_url))
        usage = None
        if record.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED) and record.results:
            output.results = [
                {"url": self.tasks.result_url(record, o.key, base_url), "seed": o.seed} if o.key
                else {"code": ERRORS[o.code].code if o.code else None, "message": self._text(record, o.error()),
                      "seed": o.seed}
                for o in record.results]
            succeeded = sum(1 for o in record.results if o.key)
            output.task_metrics = {"TOTAL": len(record.results), "SUCCEEDED": succeeded,
                                   "FAILED": len(record.results) - succeeded}
            usage = {"image_count": succeeded}
        if record.status == TaskStatus.FAILED:
            output.code = ERRORS[record.code].code if record.code else None
            output.message = self._text(record, record.error()) if record.code else None
        return TaskBody(request_id=request_id(), output=output, usage=usage).model_dump(exclude_none=True)

    def _text(self, record: TaskRecord, error: RenderError | None) -> str | None:
        """An error's message, naming its parameter as DashScope bodies spell it."""
        if error is None:
            return None
        spec = self.tasks.specs.get(record.model)
        return error.text(param_names(spec).get(error.param) if spec and error.param else None)


def _parse_compact_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y%m%d%H%M%S").timestamp()
    except ValueError:
        raise ValueError(f"time {value!r} must look like YYYYMMDDhhmmss") from None
