"""The web page's reads: this key's tasks as `TaskView`s. Creating and canceling go through the
DashScope door, as any client's would."""

from __future__ import annotations

from serve.doors.base import DoorService
from serve.doors.web.protocol import ImageView, TaskPage, TaskView
from serve.edge.errors import ErrorKind, Failure, ServiceError
from serve.edge.http import Caller
from serve.tasks.store.record import TaskRecord

PAGE_SIZE = 24


class WebService(DoorService):
    api = "web"

    async def task(self, caller: Caller, task_id: str) -> dict | Failure:
        record = await self.tasks.get(task_id, caller.key_id)
        if record is None:
            return ServiceError(ErrorKind.NOT_FOUND, f"task {task_id} does not exist or has expired")
        return self.view(record, caller.base_url).model_dump()

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
