"""`Dispatcher`: runs tasks on the model deployments and makes sure none is lost or stuck.

- Each model has a bounded queue, and each API key a bounded share of it
  (`max_queued_per_key`), both split between the ingress replicas as the slots are: a task
  waits PENDING for a slot, given in fair order across keys weighted by cost
  (`fair_queue.py`), then is sent to the model deployment as a stream of events. The slots
  follow the replicas that run (`capacity.py`: what keeps them busy, and one replica's worth
  more while the deployment can grow), recounted every few seconds. A task
  stays PENDING while it waits inside a replica and becomes RUNNING only when the replica
  starts it (`Started`); its progress is written as it comes (a few times a second).
  A full queue refuses new tasks (503), a key's full share refuses that key's (429).
- A task canceled while it runs (on this ingress or another) has its replica call canceled: the
  replica drops its images from a shared batch or stops a batch of its own at the next step,
  and nothing of it is stored. This ingress sees another's cancel at the task's next progress
  write, or at the next lease renewal.
- The dispatcher holds a lease on every task it owns and renews it. When a dispatcher (the
  ingress replica) dies, its leases run out and any other dispatcher claims those tasks and
  runs them again; results go to the same storage keys, so a re-render overwrites, never
  duplicates.
- A task whose model replica dies is retried up to `max_attempts`; a task past its deadline
  ends FAILED with a retryable code. Nothing stays PENDING or RUNNING forever.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from ray.exceptions import TaskCancelledError

from cluster.images.encoding import EXTENSIONS
from cluster.spec.config import ServeConfig
from cluster.spec.errors import ErrorCode
from cluster.spec.loras import adapter_set_id
from cluster.spec.request import RenderResult
from cluster.storage.results import Storage
from serve import metrics
from serve.replica.render_events import Finished, Preview, RenderEvent, Started
from serve.tasks.dispatch.capacity import ModelCapacity
from serve.tasks.dispatch.fair_queue import FairSlots, cost_of
from serve.tasks.periodic import every
from serve.tasks.store.base import TaskStore
from serve.tasks.store.record import ImageOutcome, PreviewNote, TaskProgress, TaskRecord, TaskStatus

log = logging.getLogger(__name__)


def preview_key(record: TaskRecord, index: int, partial_image_index: int) -> str:
    """Where preview `partial_image_index` of image `index` of a task is kept (one file each)."""
    return f"tasks/{record.task_id}/preview-{index}-{partial_image_index}.{EXTENSIONS[record.request.output_format]}"


class QueueFull(Exception):
    """The model's queue is at capacity (`key` None), or this key's share of it is."""

    def __init__(self, model: str, key: str | None = None):
        super().__init__(model)
        self.model, self.key = model, key


class InputLost(Exception):
    """A task's input image is not in storage (never written, or removed)."""


class _Done(asyncio.Event):
    """Set when a task run by this dispatcher ends; carries its final record, so a waiting
    synchronous call needs no read of the store."""

    record: TaskRecord | None = None


@dataclass
class _ModelQueue:
    slots: FairSlots  # shared by keys, weighted by cost (fair_queue.py)
    waiting: int = 0  # from submission until a slot is taken
    waiting_by_key: Counter = dataclasses.field(default_factory=Counter)


async def create_with_files(store: TaskStore, record: TaskRecord,
                            write_files: Callable[[], Awaitable[None]] | None) -> None:
    """Store `record`, then run `write_files()`; when that fails, take the record back and raise:
    no file is ever without a record, and no record waits for a file that was never written."""
    await store.create(record)
    if write_files is not None:
        try:
            await write_files()
        except BaseException:
            await store.delete([record.task_id])
            raise


RECOUNT_S = 2.0  # how often the running replicas are counted to size the slots
STORE_REPORT_S = 15.0  # how often the task store's fullness is reported (a metric)


class Dispatcher:
    def __init__(self, store: TaskStore, storage: Storage, handles: dict[str, Any], settings: ServeConfig,
                 capacities: dict[str, ModelCapacity],
                 running_replicas: Callable[[], Awaitable[dict[str, int]]] | None = None):
        """`running_replicas()`: RUNNING replicas per model, as Serve sees them (None: the slots
        stay sized for each deployment's minimum)."""
        self.store = store
        self.storage = storage
        self.handles = handles
        self.settings = settings
        self.owner = f"dispatcher-{uuid.uuid4().hex[:12]}"
        self.capacities = capacities
        self.running_replicas = running_replicas
        # Each ingress replica's dispatcher keeps its part of the queue bounds, as with the slots:
        # Serve spreads requests over the ingress replicas, so the service as a whole holds about
        # what the config says (a key's requests all on one ingress are refused at its part).
        ingresses = settings.ingress_replicas
        self.max_waiting = math.ceil(settings.max_queued_per_model / ingresses)
        self.max_waiting_per_key = math.ceil(settings.max_queued_per_key / ingresses)
        self._queues = {m: _ModelQueue(FairSlots(capacities[m].slots())) for m in handles}
        self._owned: set[str] = set()
        self._done: dict[str, _Done] = {}
        self._streams: dict[str, Any] = {}  # task id -> its replica call, while it runs from here
        self._listeners: dict[str, set[asyncio.Queue]] = {}  # task id -> who hears its previews here
        self._canceled: set[str] = set()  # ids whose replica call `stop()` canceled
        self._background: set[asyncio.Task] = set()
        self._loops: list[asyncio.Task] = []
        # Told of every task that reaches a terminal status here (webhook deliveries hang on it).
        self.on_end: Callable[[TaskRecord], None] = lambda record: None

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._loops = [every(self.settings.lease_s / 3, self._renew_leases),
                       every(self.settings.lease_s / 2, self._recover),
                       every(60.0, self._purge),
                       every(STORE_REPORT_S, self._report_store)]
        if self.running_replicas is not None:
            self._loops.append(every(RECOUNT_S, self._size_slots))

    async def _size_slots(self) -> None:
        running = await self.running_replicas()  # type: ignore[misc]
        for model, queue in self._queues.items():
            if model in running:
                queue.slots.resize(self.capacities[model].slots(running[model]))

    # --- submission ---------------------------------------------------------------------------

    def queue_depth(self, model: str) -> int:
        return self._queues[model].waiting

    async def submit(self, record: TaskRecord, write_files: Callable[[], Awaitable[None]] | None = None) -> None:
        """Store a new task and start it; raises QueueFull when the model's queue is full.
        `write_files()` (the input image) runs once the record exists, so that no file is ever
        without a record; when it fails, the record is taken back and the error raised."""
        queue = self._queues[record.model]
        if queue.waiting >= self.max_waiting:
            raise QueueFull(record.model)
        if queue.waiting_by_key[record.key_id] >= self.max_waiting_per_key:
            raise QueueFull(record.model, record.key_id)
        record.owner, record.lease_until = self.owner, time.time() + self.settings.lease_s
        await create_with_files(self.store, record, write_files)
        self._start(record)

    def _start(self, record: TaskRecord) -> None:
        # Counted as waiting from now (not from when its coroutine first runs), so a burst of
        # submissions cannot overshoot the queue bounds.
        task_id, model, queue = record.task_id, record.model, self._queues[record.model]
        queue.waiting += 1
        queue.waiting_by_key[record.key_id] += 1
        metrics.queue_depth.set(queue.waiting, tags={"model": model})
        self._owned.add(task_id)
        self._done.setdefault(task_id, _Done())
        # A fresh context: created inside an HTTP request, the task would otherwise carry Serve's
        # request context, and Serve cancels a request's downstream calls when its client
        # disconnects, so a client that gave up (or an SDK about to retry) would kill the render.
        task = asyncio.create_task(self._run(task_id, model, record.key_id, cost_of(record.request),
                                             record.request.n),
                                   context=contextvars.Context())
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

    async def _run(self, task_id: str, model: str, key_id: str, cost: float, images: int) -> None:
        queue = self._queues[model]
        slot = 0  # slots held: one per image
        try:
            slot = await queue.slots.acquire(key_id, cost, images)
            queue.waiting -= 1
            queue.waiting_by_key[key_id] -= 1
            metrics.queue_depth.set(queue.waiting, tags={"model": model})
            await self._attempt(task_id, model)
        finally:
            if slot:
                queue.slots.release(slot)
            else:  # canceled while it waited for a slot
                queue.waiting -= 1
                queue.waiting_by_key[key_id] -= 1
            if queue.waiting_by_key.get(key_id, 0) <= 0:
                queue.waiting_by_key.pop(key_id, None)  # only keys with tasks waiting are kept
            self._owned.discard(task_id)
            # Waiters hold the event already; later waiters read the (terminal) record instead.
            event = self._done.pop(task_id, None)
            if event is not None:
                event.set()

    async def _attempt(self, task_id: str, model: str) -> None:
        while True:
            now = time.time()
            record = await self.store.update(task_id, lambda r: r.model_copy(update={
                "owner": self.owner, "lease_until": now + self.settings.lease_s,
                "attempts": r.attempts + 1, "progress": None}) if r.status == TaskStatus.PENDING else None)
            if record is None:
                return  # canceled, or finished elsewhere
            if record.deadline <= now:
                await self._fail(task_id, ErrorCode.TIMEOUT, "the task did not finish before its deadline")
                return
            started = time.perf_counter()
            try:
                results = await asyncio.wait_for(self._render(record), record.deadline - now)
            except asyncio.TimeoutError:
                await self._fail(task_id, ErrorCode.TIMEOUT, "the task did not finish before its deadline")
                return
            except InputLost:  # its ingress died between storing the record and writing the input
                await self._fail(task_id, ErrorCode.INTERNAL, "the input image was lost before the task started; "
                                                              "submit the task again")
                return
            except Exception as exc:  # noqa: BLE001 - a replica died or Serve refused
                log.warning("task %s attempt %d failed: %s", task_id, record.attempts, exc)
                if record.attempts >= self.settings.max_attempts:
                    await self._fail(task_id, ErrorCode.MODEL_UNAVAILABLE,
                                     f"the model was unavailable after {record.attempts} attempts; retry later")
                    return
                await asyncio.sleep(min(2.0 ** record.attempts, 10.0))
                await self.store.transition(task_id, {TaskStatus.RUNNING}, status=TaskStatus.PENDING,
                                            progress=None)
                continue
            if results is None:
                return  # canceled while it ran: nothing to store
            metrics.render_latency_s.observe(time.perf_counter() - started, tags={"model": model})
            await self._finish(record, results)
            return

    async def _render(self, record: TaskRecord) -> list[RenderResult] | None:
        """The task's results from a replica; None when the task was canceled meanwhile."""
        init_image = mask = None
        try:
            if record.init_image_key:
                init_image = await asyncio.to_thread(self.storage.read, record.init_image_key)
            if record.mask_key:
                mask = await asyncio.to_thread(self.storage.read, record.mask_key)
        except FileNotFoundError:
            raise InputLost() from None
        # The record holds the request as resolved at submission: the replica renders it as it is.
        request = dataclasses.replace(record.request, init_image=init_image, mask=mask, request_id=record.task_id)
        # Routed to a replica that holds the task's adapter set, when it has one (Serve's model
        # multiplexing, keyed by the set).
        options = {"multiplexed_model_id": adapter_set_id(request.loras)} if request.loras else {}
        stream = self.handles[record.model].options(stream=True, **options).render_events.remote(request)
        self._streams[record.task_id] = stream
        finished = False
        try:
            async for event in stream:
                if isinstance(event, Finished):
                    finished = True
                    return event.results
                if not await self._note(record, event):
                    return None
            raise RuntimeError("the replica's stream ended without results")
        except (asyncio.CancelledError, TaskCancelledError) as exc:
            if record.task_id in self._canceled:
                return None  # `stop()` canceled the call
            if isinstance(exc, TaskCancelledError):  # canceled by someone else: a failed attempt
                raise RuntimeError("the replica call was canceled") from exc
            raise
        finally:
            self._streams.pop(record.task_id, None)
            self._canceled.discard(record.task_id)
            if not finished:
                stream.cancel()  # the replica drops what nobody will read

    def listen(self, task_id: str) -> asyncio.Queue:
        """A queue of the task's `Preview`s from now on, while it renders from this ingress (a
        caller streaming its answer holds the task here: it was submitted here). `unlisten` it."""
        queue: asyncio.Queue = asyncio.Queue()
        self._listeners.setdefault(task_id, set()).add(queue)
        return queue

    def unlisten(self, task_id: str, queue: asyncio.Queue) -> None:
        listeners = self._listeners.get(task_id, set())
        listeners.discard(queue)
        if not listeners:
            self._listeners.pop(task_id, None)

    async def _note(self, record: TaskRecord, event: RenderEvent) -> bool:
        """Record a replica's event; False when the task is no longer live (canceled)."""
        now, task_id = time.time(), record.task_id
        if isinstance(event, Preview):
            for queue in self._listeners.get(task_id, ()):
                queue.put_nowait(event)
            key = preview_key(record, event.index, event.partial_image_index)
            await asyncio.to_thread(self.storage.write, key, event.image)
            changed = await self.store.transition(task_id, {TaskStatus.RUNNING}, preview=PreviewNote(
                index=event.index, partial_image_index=event.partial_image_index, key=key))
        elif isinstance(event, Started):
            changed = await self.store.transition(task_id, {TaskStatus.PENDING}, status=TaskStatus.RUNNING,
                                                  scheduled_time=now, batch_size=event.batch_size)
        else:
            changed = await self.store.transition(task_id, {TaskStatus.RUNNING}, progress=TaskProgress(
                step=event.step, steps=event.steps, eta_s=event.eta_s, updated_at=now))
        return changed is not None and task_id not in self._canceled

    def stop(self, task_id: str) -> None:
        """The task was just canceled: if its render runs from here, cancel the replica's call."""
        if (stream := self._streams.get(task_id)) is not None:
            self._canceled.add(task_id)
            stream.cancel()

    async def _finish(self, record: TaskRecord, results: list[RenderResult]) -> None:
        outcomes = []
        for result in results:
            if result.ok:
                key = f"tasks/{record.task_id}/{result.index}.{EXTENSIONS[record.request.output_format]}"
                await asyncio.to_thread(self.storage.write, key, result.image)
                outcomes.append(ImageOutcome(index=result.index, seed=result.seed, key=key,
                                             inference_s=result.inference_s))
                metrics.images_rendered.inc(tags={"model": record.model})
            else:
                outcomes.append(ImageOutcome(index=result.index, seed=result.seed, code=result.error.code,
                                             message=result.error.message, param=result.error.param))
                metrics.images_failed.inc(tags={"model": record.model, "code": result.error.code.value})
        succeeded = any(o.key for o in outcomes)
        first_error = next((o for o in outcomes if o.code), None)
        applied = next((list(r.loras) for r in results if r.loras), [])
        # From PENDING too: a request the replica refused outright never starts.
        ended = await self.store.transition(
            record.task_id, {TaskStatus.PENDING, TaskStatus.RUNNING},
            status=TaskStatus.SUCCEEDED if succeeded else TaskStatus.FAILED,
            results=outcomes, end_time=time.time(), loras=applied,
            code=None if succeeded else first_error.code, message=None if succeeded else first_error.message,
            param=None if succeeded else first_error.param)
        if ended is None:  # canceled while its files were written: they must not outlive it
            for outcome in outcomes:
                if outcome.key:
                    await asyncio.to_thread(self.storage.delete_prefix, outcome.key)
        self.ended(ended)

    async def _fail(self, task_id: str, code: ErrorCode, message: str) -> None:
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
            for task_id in await self.store.renew(self.owner, list(self._owned), time.time() + self.settings.lease_s):
                self.stop(task_id)  # ended elsewhere: canceled through another ingress

    async def _recover(self) -> None:
        """Claim tasks whose dispatcher died, and run them again (or fail them if too late)."""
        now = time.time()
        for record in await self.store.claim_expired(self.owner, now, now + self.settings.lease_s):
            if record.model not in self.handles:
                continue  # served by another application
            if record.deadline <= now or record.attempts >= self.settings.max_attempts:
                await self._fail(record.task_id, ErrorCode.TIMEOUT,
                                 "the task was interrupted and could not finish in time; retry")
                continue
            log.info("recovering task %s (attempt %d)", record.task_id, record.attempts + 1)
            await self.store.transition(record.task_id, {TaskStatus.RUNNING, TaskStatus.PENDING},
                                        status=TaskStatus.PENDING)
            self._start(record)

    async def _report_store(self) -> None:
        if (full := await self.store.fullness()) is not None:
            metrics.task_store_fullness.set(full)

    async def _purge(self) -> None:
        async def remove_files(task_ids: list[str]) -> None:
            for task_id in task_ids:
                await asyncio.to_thread(self.storage.delete_prefix, f"tasks/{task_id}")

        await self.store.purge_expired(time.time(), remove_files=remove_files)
