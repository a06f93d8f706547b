"""The dispatcher (serve/tasks/dispatch/dispatcher.py) without Ray: a real SQLite store and real storage, and
a FAKE replica handle whose stream starts, progresses, finishes, raises or hangs as a test says.

Each case waits for the event it names (a status, a stream's cancel), never for a fixed time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import AsyncIterator, Callable

import pytest
from ray.exceptions import TaskCancelledError

from cluster.spec.config import ServeConfig
from cluster.spec.errors import ErrorCode
from cluster.spec.request import RenderResult, ResolvedRequest
from cluster.storage.results import Storage
from serve.replica.render_events import Finished, Progress, RenderEvent, Started
from serve.tasks.dispatch.capacity import ModelCapacity
from serve.tasks.dispatch.dispatcher import Dispatcher, QueueFull
from serve.tasks.dispatch.fair_queue import FairSlots
from serve.tasks.store.record import TaskRecord, TaskStatus
from serve.tasks.store.sqlite import SQLiteTaskStore
from tests.factories import resolved_request, task_record

PNG = b"\x89PNG fake"  # what the FAKE replica returns as image bytes (storage does not decode them)

Behaviour = Callable[[ResolvedRequest, "FakeStream"], AsyncIterator[RenderEvent]]


class FakeStream:
    """A replica call as `handle.options(stream=True).render_events.remote()` returns it."""

    def __init__(self, behaviour: Behaviour, request: ResolvedRequest):
        self.request = request
        self.canceled = asyncio.Event()
        self._events = behaviour(request, self)

    def __aiter__(self) -> "FakeStream":
        return self

    async def __anext__(self) -> RenderEvent:
        following = asyncio.ensure_future(self._events.__anext__())
        canceled = asyncio.ensure_future(self.canceled.wait())
        done, _ = await asyncio.wait({following, canceled}, return_when=asyncio.FIRST_COMPLETED)
        if following not in done:
            following.cancel()
            raise TaskCancelledError()  # what Serve raises in a canceled call
        canceled.cancel()
        return following.result()

    def cancel(self) -> None:
        self.canceled.set()


class FakeHandle:
    """A model deployment's handle: each call runs the next behaviour (the last one repeats)."""

    def __init__(self, *behaviours: Behaviour):
        self.behaviours = list(behaviours)
        self.streams: list[FakeStream] = []

    def options(self, stream: bool) -> "FakeHandle":
        assert stream
        return self

    @property
    def render_events(self) -> "FakeHandle":
        return self

    def remote(self, request: ResolvedRequest) -> FakeStream:
        behaviour = self.behaviours.pop(0) if len(self.behaviours) > 1 else self.behaviours[0]
        self.streams.append(FakeStream(behaviour, request))
        return self.streams[-1]


def results(request: ResolvedRequest) -> list[RenderResult]:
    return [RenderResult(request_id=request.request_id, request_index=0, index=i, seed=request.seed + i,
                         width=request.width, height=request.height, image=PNG, batch_size=request.n)
            for i in range(request.n)]


async def finishes(request: ResolvedRequest, stream: FakeStream) -> AsyncIterator[RenderEvent]:
    yield Started(batch_size=request.n)
    for step in (1, 2):
        await asyncio.sleep(0)
        yield Progress(step=step, steps=2, eta_s=0.1 * (2 - step))
    yield Finished(results(request))


async def dies(request: ResolvedRequest, stream: FakeStream) -> AsyncIterator[RenderEvent]:
    raise RuntimeError("the replica died")
    yield  # an async generator


async def hangs(request: ResolvedRequest, stream: FakeStream) -> AsyncIterator[RenderEvent]:
    yield Started(batch_size=1)
    await asyncio.Event().wait()


class SlowStorage(Storage):
    """Storage whose writes wait until `release` is set (to cancel while files are written)."""

    def __init__(self, root: str):
        super().__init__(root)
        self.writing = threading.Event()
        self.release = threading.Event()

    def write(self, key: str, data: bytes) -> None:
        self.writing.set()
        assert self.release.wait(10), "the test never released the write"
        super().write(key, data)


def settings(**changes) -> ServeConfig:
    return ServeConfig(**({"lease_s": 0.6, "max_attempts": 2, "task_deadline_s": 30.0} | changes))


async def until(predicate, timeout_s: float = 10.0, every_s: float = 0.01):
    """Poll until `predicate()` (sync or async) is truthy; returns its value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(every_s)
    raise AssertionError(f"not true within {timeout_s} s")


def dispatcher(tmp_path, handle: FakeHandle, storage: Storage | None = None, **changes) -> Dispatcher:
    store = SQLiteTaskStore(tmp_path / "tasks.sqlite")
    return Dispatcher(store, storage or Storage(str(tmp_path / "results")), {"flux-schnell": handle},
                      settings(**changes), {"flux-schnell": ModelCapacity(1, 2, 1, 1)})


def new_task(**request) -> TaskRecord:
    return task_record(request=resolved_request(**request))


def test_a_task_runs_to_success_through_running_with_progress(tmp_path):
    async def scenario():
        handle = FakeHandle(finishes)
        d = dispatcher(tmp_path, handle)
        record = new_task(n=2, seed=7)
        await d.submit(record)
        final = await d.wait(record.task_id, 10)
        assert final.status == TaskStatus.SUCCEEDED and final.batch_size == 2
        assert [(o.index, o.seed) for o in final.results] == [(0, 7), (1, 8)]
        assert all(d.storage.read(o.key) == PNG for o in final.results)
        assert final.progress.step == final.progress.steps == 2 and final.scheduled_time is not None
        sent = handle.streams[0].request
        assert sent.request_id == record.task_id and sent.seed == 7  # the resolved request, as stored

    asyncio.run(scenario())


def ended(tmp_path, handle: "FakeHandle", change=lambda record: None, **settings) -> TaskRecord:
    """One task submitted to a dispatcher over `handle` (`change`d first), once it ended."""
    async def scenario() -> TaskRecord:
        d = dispatcher(tmp_path, handle, **settings)
        record = new_task()
        change(record)
        await d.submit(record)
        return await d.wait(record.task_id, 10)

    return asyncio.run(scenario())


def test_a_task_whose_input_was_never_written_fails_at_once_saying_so(tmp_path):
    handle = FakeHandle(finishes)
    # Its ingress died between storing the record and writing the input.
    final = ended(tmp_path, handle, lambda r: setattr(r, "init_image_key", f"tasks/{r.task_id}/input"))
    assert final.status == TaskStatus.FAILED and final.code == ErrorCode.INTERNAL
    assert "input image was lost" in final.message and final.attempts == 1 and not handle.streams


def test_a_replica_that_dies_is_retried_and_the_task_succeeds(tmp_path):
    handle = FakeHandle(dies, finishes)
    final = ended(tmp_path, handle)
    assert final.status == TaskStatus.SUCCEEDED and final.attempts == 2 and len(handle.streams) == 2


def test_a_model_that_stays_down_fails_retryable_after_max_attempts(tmp_path):
    final = ended(tmp_path, FakeHandle(dies), max_attempts=1)
    assert final.status == TaskStatus.FAILED and final.code == ErrorCode.MODEL_UNAVAILABLE
    assert final.code.retryable and "after 1 attempts" in final.message


def test_a_hanging_replica_ends_failed_at_the_deadline_and_its_call_is_canceled(tmp_path):
    handle = FakeHandle(hangs)
    final = ended(tmp_path, handle, lambda r: setattr(r, "deadline", time.time() + 0.5))
    assert final.status == TaskStatus.FAILED and final.code == ErrorCode.TIMEOUT
    assert handle.streams[0].canceled.is_set()  # the replica drops what nobody will read


def test_cancel_while_streaming_cancels_the_replica_call_and_stores_nothing(tmp_path):
    async def scenario():
        handle = FakeHandle(hangs)
        d = dispatcher(tmp_path, handle)
        record = new_task()
        await d.submit(record)
        await until(lambda: _status_is(d, record.task_id, TaskStatus.RUNNING))
        canceled = await d.store.transition(record.task_id, {TaskStatus.RUNNING}, status=TaskStatus.CANCELED)
        d.stop(record.task_id)
        d.ended(canceled)
        await until(lambda: handle.streams[0].canceled.is_set())
        await until(lambda: not d._background)  # the run ended
        final = await d.store.get(record.task_id)
        assert final.status == TaskStatus.CANCELED and final.results == [] and final.attempts == 1
        assert not d.storage.exists(f"tasks/{record.task_id}")

    asyncio.run(scenario())


def test_a_cancel_while_files_are_written_deletes_them(tmp_path):
    async def scenario():
        storage = SlowStorage(str(tmp_path / "results"))
        d = dispatcher(tmp_path, FakeHandle(finishes), storage=storage)
        record = new_task(n=2)
        await d.submit(record)
        await asyncio.to_thread(storage.writing.wait, 10)  # the first file is being written
        # Another ingress cancels it now (its transition wins; this one's finish must not).
        assert await d.store.transition(record.task_id, {TaskStatus.RUNNING}, status=TaskStatus.CANCELED)
        storage.release.set()
        await until(lambda: not d._background)
        final = await d.store.get(record.task_id)
        assert final.status == TaskStatus.CANCELED and final.results == []
        assert not storage.exists(f"tasks/{record.task_id}/0.png")
        assert not storage.exists(f"tasks/{record.task_id}/1.png")

    asyncio.run(scenario())


def test_a_task_whose_dispatcher_died_is_recovered_by_another(tmp_path):
    async def scenario():
        d = dispatcher(tmp_path, FakeHandle(finishes))
        orphan = new_task()
        orphan.status, orphan.owner, orphan.lease_until, orphan.attempts = (
            TaskStatus.RUNNING, "dispatcher-dead", time.time() - 1, 1)
        await d.store.create(orphan)
        d.start()
        final = await until(lambda: _terminal(d, orphan.task_id))
        assert final.status == TaskStatus.SUCCEEDED and final.attempts == 2 and final.owner == d.owner

    asyncio.run(scenario())


def test_a_full_queue_refuses_before_storing(tmp_path):
    async def scenario():
        d = dispatcher(tmp_path, FakeHandle(hangs), max_queued_per_model=1)
        d._queues["flux-schnell"].slots = FairSlots(0)  # no replica slot frees up
        first = new_task()
        await d.submit(first)
        with pytest.raises(QueueFull):
            await d.submit(new_task())
        assert d.queue_depth("flux-schnell") == 1 and await d.store.get(first.task_id) is not None

    asyncio.run(scenario())


def test_each_ingress_replica_keeps_its_part_of_the_queue_bounds(tmp_path):
    async def scenario():
        d = dispatcher(tmp_path, FakeHandle(hangs), max_queued_per_key=5, max_queued_per_model=7, ingress_replicas=2)
        d._queues["flux-schnell"].slots = FairSlots(0)  # nothing starts
        for _ in range(3):  # ceil(5 / 2) for one key on this ingress
            await d.submit(task_record(key_id="flood", request=resolved_request()))
        with pytest.raises(QueueFull) as refused:
            await d.submit(task_record(key_id="flood", request=resolved_request()))
        assert refused.value.key == "flood"
        await d.submit(new_task())  # ceil(7 / 2) = 4 in all on this ingress
        with pytest.raises(QueueFull) as full:
            await d.submit(task_record(key_id="other", request=resolved_request()))
        assert full.value.key is None

    asyncio.run(scenario())


def test_one_key_has_a_bounded_share_of_the_queue_and_others_go_first(tmp_path):
    async def scenario():
        handle = FakeHandle(finishes)
        d = dispatcher(tmp_path, handle, max_queued_per_key=3)
        d._queues["flux-schnell"].slots = FairSlots(0)  # nothing starts until the test frees a slot
        flood = [task_record(key_id="flood", request=resolved_request()) for _ in range(3)]
        for record in flood:
            await d.submit(record)
        with pytest.raises(QueueFull) as refused:
            await d.submit(task_record(key_id="flood", request=resolved_request()))
        assert refused.value.key == "flood"
        other = task_record(key_id="other", request=resolved_request())
        await d.submit(other)  # another key is still accepted, and goes ahead of the flood's backlog
        await asyncio.sleep(0)
        d._queues["flux-schnell"].slots.release()
        d._queues["flux-schnell"].slots.release()
        for record in [other, *flood]:
            await until(lambda: _terminal(d, record.task_id))
        sent = [stream.request.request_id for stream in handle.streams]
        assert sent.index(other.task_id) <= 1  # sent to the replicas first or second, not fourth

    asyncio.run(scenario())


async def _status_is(d: Dispatcher, task_id: str, status: TaskStatus) -> bool:
    record = await d.store.get(task_id)
    return record is not None and record.status == status


async def _terminal(d: Dispatcher, task_id: str) -> TaskRecord | None:
    record = await d.store.get(task_id)
    return record if record is not None and record.terminal else None
