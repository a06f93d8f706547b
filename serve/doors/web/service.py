"""The web page's reads: this key's tasks as `TaskView`s, and a live task's stream of events (its
view as it changes, and its previews as they come). Creating and canceling go through the
DashScope door, as any client's would."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

from cluster.images.encoding import MEDIA_TYPES
from cluster.storage.results import StorageError
from serve.doors.base import DoorService, close_previews
from serve.doors.web.protocol import ImageView, TaskPage, TaskView
from serve.edge.errors import ErrorKind, Failure, ServiceError
from serve.edge.http import Caller
from serve.tasks.store.record import TaskRecord

PAGE_SIZE = 24
WATCH_S = 1.0  # a followed task's record is read this often (one store read), for its progress


class WebService(DoorService):
    api = "web"

    async def task(self, caller: Caller, task_id: str) -> dict | Failure:
        record = await self.tasks.get(task_id, caller.key_id)
        if record is None:
            return ServiceError(ErrorKind.NOT_FOUND, f"task {task_id} does not exist or has expired")
        return self.view(record, caller.base_url).model_dump()

    async def events(self, caller: Caller, task_id: str) -> AsyncIterator[dict] | Failure:
        """A task's card, followed: see `_events`. Leaving the stream leaves the task running."""
        record = await self.tasks.get(task_id, caller.key_id)
        if record is None:
            return ServiceError(ErrorKind.NOT_FOUND, f"task {task_id} does not exist or has expired")
        return self._events(record, caller.base_url)

    async def _events(self, record: TaskRecord, base_url: str) -> AsyncIterator[dict]:
        """`task` (its view) at once and whenever it changes, read every `WATCH_S`; `preview` (a
        picture as a data URL), each once: pushed by the render as it comes when the task runs
        from this ingress (the same previews an OpenAI stream gets), else read from storage when
        the record names a new latest preview (a task submitted through another ingress replica).
        Ends after the task's last view."""
        previews = self.tasks.previews(record)
        media_type = MEDIA_TYPES[record.request.output_format]
        waiting: asyncio.Future | None = None
        last: dict | None = None
        sent: set[tuple[int, int]] = set()

        def preview(index: int, partial: int, data: bytes) -> dict:
            sent.add((index, partial))
            return {"type": "preview", "image_index": index, "partial_image_index": partial,
                    "data_url": f"data:{media_type};base64,{base64.b64encode(data).decode()}"}

        try:
            while True:
                view = self.view(record, base_url).model_dump()
                if view != last:
                    yield {"type": "task", "task": view}
                    last = view
                if record.terminal:
                    return
                waiting = waiting or asyncio.ensure_future(anext(previews))
                await asyncio.wait({waiting}, timeout=WATCH_S)
                if waiting.done():
                    index, partial, data = waiting.result()
                    waiting = None
                    if (index, partial) not in sent:
                        yield preview(index, partial, data)
                record = await self.tasks.get(record.task_id, record.key_id) or record
                note = record.preview
                if note is not None and (note.index, note.partial_image_index) not in sent:
                    try:
                        data = await asyncio.to_thread(self.tasks.storage.read, note.key)
                    except (FileNotFoundError, StorageError):
                        continue  # the task ended and its preview went with it: the next view says so
                    yield preview(note.index, note.partial_image_index, data)
        finally:
            await close_previews(previews, waiting)

    async def recent(self, caller: Caller) -> dict:
        records, total = await self.tasks.list(caller.key_id, page_size=PAGE_SIZE)
        return TaskPage(tasks=[self.view(r, caller.base_url) for r in records], total=total).model_dump()

    def view(self, record: TaskRecord, base_url: str) -> TaskView:
        request = record.request
        images = [ImageView(seed=o.seed, url=self.tasks.result_url(record, o.key, base_url) if o.key else None,
                            error=o.error().text() if o.code else None) for o in record.results]
        return TaskView(task_id=record.task_id, api=record.api, model=record.model, status=record.status.value,
                        prompt=request.prompt, negative_prompt=request.negative_prompt,
                        size=f"{request.width}*{request.height}", n=request.n, seed=request.seed,
                        steps=request.steps, guidance=request.guidance, submit_time=record.submit_time,
                        end_time=record.end_time, images=images,
                        error=record.error().text() if record.code else None, quality=request.quality,
                        mode=request.mode, strength=request.strength, output_format=request.output_format,
                        **self.live(record, base_url))
