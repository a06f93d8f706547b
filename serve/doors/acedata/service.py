"""The AceData Flux images API: parse its bodies into task-layer calls, render records in its
shapes. No web framework, no task logic; methods return bodies or `Failure`s.

Vocabulary owned here: `action` generate / edit (`edits` accepted), provider model names through
the config's alias table (`flux-pro` -> a configured model), and sizes as `WxH` (any size the
model renders) or an aspect ratio `W:H` (the nearest size the model renders, about its native
area: one megapixel for FLUX and SDXL).
"""

from __future__ import annotations

import re

from cluster.spec.catalogue import ModelSpec
from cluster.spec.errors import ErrorCode, RenderError
from cluster.spec.request import RenderRequest
from serve.doors.acedata.protocol import (
    ACTIONS, CLIENT_FIELDS, DEFAULT_MODEL, PARAM_NAMES, SERVED_AT, Accepted, Image, ImagesBody, TaskBatch, TaskItem,
    error_body,
)
from serve.doors.base import Created, DoorService, lora_view
from serve.edge import fields
from serve.edge.errors import ErrorKind, Failure, ServiceError
from serve.edge.fields import Invalid
from serve.edge.http import Caller
from serve.tasks.service import Submission
from serve.tasks.store.record import TaskRecord, TaskStatus

_RATIO = re.compile(r"^\s*(\d{1,6})\s*:\s*(\d{1,6})\s*$")  # longer sides are no aspect ratio anyone means
MAX_BATCH_IDS = 100


class AceDataService(DoorService):
    api = "acedata"
    takes_callbacks = True

    # --- POST /flux/images ----------------------------------------------------------------------

    async def images(self, caller: Caller) -> dict | Failure:
        created = await self.submit(self._parse(caller))
        if not isinstance(created, Created):
            return created
        record = created.record
        if created.submission.callback_url or fields.boolean(caller.body, "async"):  # answered now
            return Accepted(task_id=record.task_id, trace_id=record.trace_id).model_dump()
        finished = await self.tasks.wait_for_images(record, "retrieve it with POST /flux/tasks", PARAM_NAMES)
        return finished if isinstance(finished, RenderError) else self.final_body(finished, caller.base_url)

    async def _parse(self, caller: Caller) -> Submission:
        """Kinds are checked here, naming AceData's fields; values by the core, once."""
        body = fields.json_object(caller.body)
        action = ACTIONS.get(fields.text(body, "action") or "generate")
        if action is None:
            raise Invalid(f"action must be generate or edit, got {body.get('action')!r}", "action")
        spec = self.tasks.model_for(fields.text(body, "model") or DEFAULT_MODEL, action == "edit", SERVED_AT)
        if isinstance(spec, RenderError):
            raise Invalid.of(spec)
        width, height = _size(spec, fields.text(body, "size"))
        count = fields.integer(body, "count", floats=True)  # the SDK types `count` as a number
        if action == "edit" and count not in (None, 1):
            raise Invalid("count applies to action generate only (an edit renders one image)", "count")
        image = mask = None
        prompt = fields.text(body, "prompt") or ""
        if action == "edit" and prompt.strip():  # an edit without a prompt is refused before any fetch
            url = fields.text(body, "image_url")
            if not url:
                raise Invalid("image_url is required for action edit", "image_url")
            image = await self.tasks.input_image(url, "image_url")
            if not isinstance(image, bytes):
                raise Invalid.of(image)
            # An extension: white where the image is repainted, of the image's size (an inpaint).
            if (mask_url := fields.text(body, "mask_image_url")) is not None:
                mask = await self.tasks.input_image(mask_url, "mask_image_url")
                if isinstance(mask, bytes):
                    mask = await self.tasks.input_mask(mask, "white", image, "mask_image_url")
                if not isinstance(mask, bytes):
                    raise Invalid.of(mask)
        elif "mask_image_url" in body:
            raise Invalid("mask_image_url applies to action edit only (with its image_url)", "mask_image_url")
        callback = fields.text(body, "callback_url")
        fields.boolean(body, "async")  # a kind check: `images` reads it once the task is in
        request = RenderRequest(model=spec.name, prompt=prompt, width=width, height=height,
                                n=1 if count is None else count, seed=fields.integer(body, "seed"), init_image=image,
                                mask=mask, strength=fields.number(body, "strength"),
                                loras=fields.loras(body, "loras"), quality=fields.text(body, "quality"),
                                output_format=fields.text(body, "output_format"),
                                output_quality=fields.integer(body, "output_quality", floats=True),
                                partial_images=fields.integer(body, "partial_images", floats=True))
        return Submission(api=self.api, key_id=caller.key_id, spec=spec, request=request, base_url=caller.base_url,
                          callback_url=callback, client_body={k: v for k, v in body.items() if k in CLIENT_FIELDS},
                          sizes="render", param_names=PARAM_NAMES)

    # --- POST /flux/tasks -----------------------------------------------------------------------

    async def retrieve(self, caller: Caller) -> dict | Failure:
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
        return TaskItem(id=record.task_id, created_at=record.submit_time, finished_at=record.end_time,
                        request=record.client_body, response=response, trace_id=record.trace_id,
                        status=record.status.value.lower(), **self.live(record, base_url))

    def webhook_body(self, record: TaskRecord) -> dict:
        return self.final_body(record)

    def final_body(self, record: TaskRecord, base_url: str | None = None) -> dict:
        """A finished task's body: the synchronous answer, or the error body (also what its
        callback receives)."""
        images = [Image(prompt=record.request.prompt, image_url=self.tasks.result_url(record, o.key, base_url),
                        seed=o.seed, timings={"inference": round(o.inference_s, 3)})
                  for o in record.results if o.key]
        if record.status == TaskStatus.SUCCEEDED and images:
            loras = lora_view(record)
            return ImagesBody(task_id=record.task_id, trace_id=record.trace_id, data=images,
                              loras=loras).model_dump(exclude=None if loras else {"loras"})
        if record.status == TaskStatus.CANCELED:
            failure = RenderError(ErrorCode.CANCELED, "the task was canceled")
        else:
            failure = (record.error() or RenderError(ErrorCode.INTERNAL, "rendering failed")).named(PARAM_NAMES)
        return error_body(failure, record.task_id)


def _size(spec: ModelSpec, size: str | None) -> tuple[int | None, int | None]:
    if size is None:
        return None, None
    if ratio := _RATIO.match(size):
        chosen = spec.size_for_aspect(int(ratio[1]), int(ratio[2]))
        if isinstance(chosen, RenderError):
            raise Invalid(chosen.text(), "size")
        return chosen
    return fields.size(size, "size", "WxH (e.g. 1024x1024) or an aspect ratio (e.g. 16:9)")
