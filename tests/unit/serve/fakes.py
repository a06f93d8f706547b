"""The task layer without Ray: a real SQLite store and real storage, with a FAKE dispatcher that
finishes each task at once (solid-colour PNGs) or refuses it, as a test asks."""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from cluster.spec.config import RaydiantConfig
from cluster.storage.results import Storage
from serve.doors.acedata.service import AceDataService
from serve.doors.dashscope.service import DashScopeService
from serve.doors.openai.service import OpenAIService
from serve.edge.http import Caller
from serve.tasks.dispatch.dispatcher import QueueFull, create_with_files
from serve.tasks.service import TaskService
from serve.tasks.store.base import StoreFull
from serve.tasks.store.record import ImageOutcome, TaskRecord, TaskStatus
from serve.tasks.store.sqlite import SQLiteTaskStore

CONFIG = {
    "models": {"flux-schnell": {"source": "fake:flux"}, "flux-dev": {"source": "fake:flux"},
               "stable-diffusion-xl": {"source": "fake:sdxl"}, "flux-kontext": {"source": "fake:flux-kontext"}},
    "serve": {"model_aliases": {"flux-pro": "flux-dev", "flux-kontext-pro": "flux-kontext"}},
}


# Names the tests use, answered without DNS (nothing is ever sent to these addresses here).
NAMES = {"example.com": ["93.184.216.34"], "receiver.example": ["93.184.216.35"], "inside.example": ["10.1.2.3"]}


async def static_resolver(host: str, port: int) -> list[str]:
    if host not in NAMES:
        raise OSError(f"unknown host {host}")
    return NAMES[host]


def png(width: int = 64, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class FakeDispatcher:
    """Finishes tasks the moment they are submitted: SUCCEEDED with one PNG per image, or FAILED
    when `fail_with` is set; raises QueueFull when `full`, StoreFull when `store_full`."""

    store: SQLiteTaskStore
    storage: Storage
    full: bool = False
    store_full: bool = False  # the task store is at its bound (tests/integration/test_task_store.py: a real one)
    broken: bool = False  # the store fails when the task is created
    fail_with: tuple[str, str] | None = None
    hold: bool = False  # leave tasks PENDING (to test cancel)
    ended_records: list[TaskRecord] = field(default_factory=list)
    submitted: list[TaskRecord] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)  # tasks whose running render was told to stop

    async def submit(self, record: TaskRecord, write_files=None) -> None:
        if self.full:
            raise QueueFull(record.model)
        if self.store_full:
            raise StoreFull("the task store is 95% full")
        if self.broken:
            raise ConnectionError("the task store is unreachable")
        self.submitted.append(record)
        await create_with_files(self.store, record, write_files)
        if self.hold:
            return
        now = time.time()
        if self.fail_with:
            code, message = self.fail_with
            await self.store.transition(record.task_id, {TaskStatus.PENDING}, status=TaskStatus.FAILED, code=code,
                                        message=message, end_time=now)
            return
        outcomes = []
        for index in range(record.request.n):
            key = f"tasks/{record.task_id}/{index}.png"
            self.storage.write(key, png(record.request.width, record.request.height))
            outcomes.append(ImageOutcome(index=index, seed=record.request.seed + index, key=key, inference_s=0.25))
        await self.store.transition(record.task_id, {TaskStatus.PENDING}, status=TaskStatus.SUCCEEDED,
                                    results=outcomes, scheduled_time=now, end_time=now)

    async def wait(self, task_id: str, timeout_s: float) -> TaskRecord | None:
        return await self.store.get(task_id)

    def ended(self, record: TaskRecord | None) -> None:
        if record is not None:
            self.ended_records.append(record)

    def stop(self, task_id: str) -> None:
        self.stopped.append(task_id)

    def listen(self, task_id: str) -> asyncio.Queue:
        """Previews pushed here: none (a held task renders, if at all, from another ingress)."""
        return asyncio.Queue()

    def unlisten(self, task_id: str, queue: asyncio.Queue) -> None:
        return None


@dataclass
class Doors:
    tasks: TaskService
    dispatcher: FakeDispatcher
    dashscope: DashScopeService
    acedata: AceDataService
    openai: OpenAIService
    storage: Storage


def doors(tmp_path: Path, **serve_settings) -> Doors:
    config = RaydiantConfig.model_validate(CONFIG | {"serve": CONFIG["serve"] | serve_settings})
    storage = Storage(str(tmp_path / "results"), signing_key=b"test-signing-key", public_url="http://testserver")
    dispatcher = FakeDispatcher(SQLiteTaskStore(tmp_path / "tasks.sqlite"), storage)
    tasks = TaskService(config.specs(), dispatcher, storage, config.serve,  # type: ignore[arg-type]
                        resolver=static_resolver)
    return Doors(tasks, dispatcher, DashScopeService(tasks), AceDataService(tasks), OpenAIService(tasks), storage)


def caller(body=None, key_id: str = "key-a") -> Caller:
    return Caller(key_id=key_id, body=body, base_url="http://testserver/")
