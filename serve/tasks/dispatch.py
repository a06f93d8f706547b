"""`Dispatcher`: runs tasks on the model deployments and makes sure none is lost or stuck.

- Each model has a bounded queue: a task waits PENDING for a slot (cancelable), then becomes
  RUNNING and is sent to the model deployment. A full queue refuses new tasks (503).
- The dispatcher holds a lease on every task it owns and renews it. When a dispatcher (the
  ingress replica) dies, its leases run out and any other dispatcher claims those tasks and
  runs them again; results go to the same storage keys, so a re-render overwrites, never
  duplicates.
- A task whose model replica dies is retried up to `max_attempts`; a task past its deadline
  ends FAILED with a retryable code. Nothing stays PENDING or RUNNING forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from cluster.config import ServeConfig
from cluster.request import RenderResult, as_render_request
from cluster.storage import Storage
from serve import metrics
from serve.tasks.periodic import every
from serve.tasks.record import ImageOutcome, TaskRecord, TaskStatus
from serve.tasks.store import TaskStore

log = logging.getLogger(__name__)

RETRYABLE_TIMEOUT = "InternalError.Timeout"
RETRYABLE_UNAVAILABLE = "InternalError.Unavailable"


class QueueFull(Exception):
    """The model's queue is at capacity."""


class _Done(asyncio.Event):
    """Set when a task run by this dispatcher ends; carries its final record, so a waiting
    synchronous call needs no read of the store."""

    record: TaskRecord | None = None


@dataclass
class _ModelQueue:
    slots: asyncio.Semaphore
    waiting: int = 0


class Dispatcher:
    def __init__(self, store: TaskStore, storage: Storage, handles: dict[str, Any], settings: ServeConfig,
                 concurrency: dict[str, int]):
        self.store = store
        self.storage = storage
        self.handles = handles
        self.settings = settings
        self.owner = f"dispatcher-{uuid.uuid4().hex[:12]}"
        self._queues = {m: _ModelQueue(asyncio.Semaphore(concurrency[m])) for m in handles}
        self._owned: set[str] = set()
        self._done: dict[str, _Done] = {}
        self._background: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []
        # Told of every task that reaches a terminal status here (webhook deliveries hang on it).
        self.on_end: Callable[[TaskRecord], None] = lambda record: None

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._loops = [every(self.settings.lease_s / 3, self._renew_leases),
                       every(self.settings.lease_s / 2, self._recover),
                       every(60.0, self._purge)]

    # --- submission ---------------------------------------------------------------------------

    def queue_depth(self, model: str) -> int:
        return self._queues[model].waiting

    async def submit(self, record: TaskRecord) -> None:
        """Store a new task and start it; raises QueueFull when the model's queue is full."""
        if self._queues[record.model].waiting >= self.settings.max_queued_per_model:
            raise QueueFull(record.model)
        record.owner, record.lease_until = self.owner, time.time() + self.settings.lease_s
        await self.store.create(record)
        self._start(record.task_id, record.model)

    def _start(self, task_id: str, model: str) -> None:
        # Counted as waiting from now (not from when its coroutine first runs), so a burst of
        # submissions cannot overshoot the queue bound.
        self._queues[model].waiting += 1
        metrics.queue_depth.set(self._queues[model].waiting, tags={"model": model})
        self._owned.add(task_id)
        self._done.setdefault(task_id, _Done())
        task = asyncio.create_task(self._run(task_id, model))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def wait(self, task_id: str, timeout_s: float) -> TaskRecord | None:
        """Wait until the task is terminal (or the timeout); returns its latest record."""
        event = self._done.get(task_id)
        if event is not None:
            try:
                await asyncio.wait_for(event.wait(), timeout_s)
            except asyncio.TimeoutError:
                pass
            if event.record is not None:
                return event.record
        return await self.store.get(task_id)

    # --- running ------------------------------------------------------------------------------

    async def _run(self, task_id: str, model: str) -> None:
        queue = self._queues[model]
        try:
            async with queue.slots:
                queue.waiting -= 1
                metrics.queue_depth.set(queue.waiting, tags={"model": model})
                await self._attempt(task_id, model)
        finally:
            self._owned.discard(task_id)
            # Waiters hold the event already; later waiters read the (terminal) record instead.
            event = self._done.pop(task_id, None)
            if event is not None:
                event.set()

    async def _attempt(self, task_id: str, model: str) -> None:
        while True:
            now = time.time()
            record = await self.store.update(task_id, lambda r: r.model_copy(update={
                "status": TaskStatus.RUNNING, "owner": self.owner, "lease_until": now + self.settings.lease_s,
                "scheduled_time": now, "attempts": r.attempts + 1}) if r.status == TaskStatus.PENDING else None)
            if record is None:
                return  # canceled, or finished elsewhere
            if record.deadline <= now:
                await self._fail(task_id, RETRYABLE_TIMEOUT, "the task did not finish before its deadline")
                return
            started = time.perf_counter()
            try:
                results = await asyncio.wait_for(self._render(record), record.deadline - now)
            except asyncio.TimeoutError:
                await self._fail(task_id, RETRYABLE_TIMEOUT, "the task did not finish before its deadline")
                return
            except Exception as exc:  # noqa: BLE001 - a replica died or Serve refused
                log.warning("task %s attempt %d failed: %s", task_id, record.attempts, exc)
                if record.attempts >= self.settings.max_attempts:
                    await self._fail(task_id, RETRYABLE_UNAVAILABLE,
                                     f"the model was unavailable after {record.attempts} attempts; retry later")
                    return
                await asyncio.sleep(min(2.0 ** record.attempts, 10.0))
                await self.store.transition(task_id, {TaskStatus.RUNNING}, status=TaskStatus.PENDING)
                continue
            metrics.render_latency_s.observe(time.perf_counter() - started, tags={"model": model})
            await self._finish(record, results)
            return

    async def _render(self, record: TaskRecord) -> list[RenderResult]:
        init_image = None
        if record.init_image_key:
            init_image = await asyncio.to_thread(self.storage.read, record.init_image_key)
        request = as_render_request(record.request, init_image=init_image, request_id=record.task_id)
        return await self.handles[record.model].render.remote(request)

    async def _finish(self, record: TaskRecord, results: list[RenderResult]) -> None:
        outcomes = []
        for result in results:
            if result.ok:
                key = f"tasks/{record.task_id}/{result.index}.png"
                await asyncio.to_thread(self.storage.write, key, result.image)
                outcomes.append(ImageOutcome(index=result.index, seed=result.seed, key=key,
                                             inference_s=result.inference_s))
                metrics.images_rendered.inc(tags={"model": record.model})
            else:
                outcomes.append(ImageOutcome(index=result.index, seed=result.seed, code=result.error.code,
                                             message=result.error.message))
                metrics.images_failed.inc(tags={"model": record.model, "code": result.error.code})
        succeeded = any(o.key for o in outcomes)
        first_error = next((o for o in outcomes if o.code), None)
        self.ended(await self.store.transition(
            record.task_id, {TaskStatus.RUNNING},
            status=TaskStatus.SUCCEEDED if succeeded else TaskStatus.FAILED,
            results=outcomes, end_time=time.time(),
            code=None if succeeded else first_error.code, message=None if succeeded else first_error.message))

    async def _fail(self, task_id: str, code: str, message: str) -> None:
        self.ended(await self.store.transition(task_id, {TaskStatus.PENDING, TaskStatus.RUNNING},
                                               status=TaskStatus.FAILED, code=code, message=message,
                                               end_time=time.time()))

    def ended(self, record: TaskRecord | None) -> None:
        """`record` just became terminal (None: the transition did not happen)."""
        if record is not None and record.terminal:
            if (event := self._done.get(record.task_id)) is not None:
                event.record = record
            self.on_end(record)

    # --- background jobs ----------------------------------------------------------------------

    async def _renew_leases(self) -> None:
        if self._owned:
            await self.store.renew(self.owner, list(self._owned), time.time() + self.settings.lease_s)

    async def _recover(self) -> None:
        """Claim tasks whose dispatcher died, and run them again (or fail them if too late)."""
        now = time.time()
        for record in await self.store.claim_expired(self.owner, now, now + self.settings.lease_s):
            if record.model not in self.handles:
                continue  # served by another application
            if record.deadline <= now or record.attempts >= self.settings.max_attempts:
                await self._fail(record.task_id, RETRYABLE_TIMEOUT,
                                 "the task was interrupted and could not finish in time; retry")
                continue
            log.info("recovering task %s (attempt %d)", record.task_id, record.attempts + 1)
            await self.store.transition(record.task_id, {TaskStatus.RUNNING, TaskStatus.PENDING},
                                        status=TaskStatus.PENDING)
            self._start(record.task_id, record.model)

    async def _purge(self) -> None:
        for task_id in await self.store.purge_expired(time.time()):
            await asyncio.to_thread(self.storage.delete_prefix, f"tasks/{task_id}")
