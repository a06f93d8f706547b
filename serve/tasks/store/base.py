"""`TaskStore`: the one protocol both backends implement, and the shared logic above it.

Backends provide primitives (`_insert`, `_load`, `_compare_and_set`, `_delete`) and answer each
question from an index, never by reading every record: a key's tasks by submit time (with its
status and model), a model's PENDING tasks in order, unfinished tasks by lease expiry, ended
tasks by webhook due time, and every task by expiry. `IndexEntry` is what those indexes hold,
derived from the record on every write. The periodic questions (`claim_expired`,
`due_webhooks`, `purge_expired`) take at most `limit` tasks a call, so a backlog is worked off
over several ticks, never loaded at once.

`TaskStore` builds transitions on the primitives with optimistic concurrency: read, change,
write only if nobody wrote in between (`version` unchanged), retry otherwise. That is what
makes cancel vs dispatch, and two ingress replicas recovering the same task, safe.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable

from serve.tasks.store.record import TERMINAL, DeliveryState, TaskRecord, TaskStatus

Mutation = Callable[[TaskRecord], TaskRecord | None]  # None: leave the record as it is
# A bounded store (Redis with maxmemory and noeviction) refuses every write past its bound, a
# running task's next state as much as a new task. New tasks are refused from this share of the
# bound on, so the tasks already in can still finish.
NEW_TASKS_UP_TO = 0.9
FULLNESS_EVERY_S = 1.0  # the store's memory is asked at most this often
SCAN_LIMIT = 200  # tasks recovery or webhooks take per call (each is a load and a write)
PURGE_LIMIT = 2000  # expired tasks deleted per call: above the rate at which many keys create them
POSITION_CAP = 1000  # queue positions are exact up to this


@dataclass(frozen=True)
class IndexEntry:
    """What the indexes know of a task: fixed fields, its status, and two due times."""

    task_id: str
    key_id: str
    model: str
    status: str
    submit_time: float
    expires_at: float
    lease_due: float | None  # lease expiry while unfinished, else None (nothing to recover)
    webhook_due: float | None  # when an ended task's pending webhook may be sent, else None

    @classmethod
    def of(cls, record: TaskRecord) -> "IndexEntry":
        webhook = record.webhook
        webhook_due = (max(webhook.next_attempt_at, webhook.sending_until)
                       if record.terminal and webhook is not None and webhook.state == DeliveryState.PENDING
                       else None)
        return cls(record.task_id, record.key_id, record.model, record.status.value, record.submit_time,
                   record.expires_at, None if record.terminal else record.lease_until, webhook_due)


class StoreFull(Exception):
    """The store is at its bound: no new task until finished ones expire."""


class TaskStore(abc.ABC):
    _fullness: float | None = None
    _fullness_at = float("-inf")

    # --- backend primitives -------------------------------------------------------------------

    async def _fullness_now(self) -> float | None:
        """Used over the bound of the store's memory; None for a store without one (SQLite)."""
        return None

    @abc.abstractmethod
    async def _insert(self, record: TaskRecord) -> None: ...

    @abc.abstractmethod
    async def _load(self, task_id: str) -> TaskRecord | None: ...

    @abc.abstractmethod
    async def _compare_and_set(self, record: TaskRecord, expected_version: int) -> bool: ...

    @abc.abstractmethod
    async def _delete(self, task_ids: list[str]) -> None: ...

    @abc.abstractmethod
    async def list(self, *, key_id: str, status: str | None = None, model: str | None = None,
                   start: float | None = None, end: float | None = None, page_no: int = 1,
                   page_size: int = 10) -> tuple[list[TaskRecord], int]:
        """A key's live tasks, newest first, filtered, one page; also the total that matched."""

    @abc.abstractmethod
    async def kept(self, key_id: str) -> int:
        """How many records the key keeps: its live ones, and any expired but not yet purged (a
        count in the key's index: a store question, never a scan of the store)."""

    @abc.abstractmethod
    async def pending_ahead(self, record: TaskRecord) -> int:
        """How many PENDING tasks of the record's model were submitted before it, counted up to
        `POSITION_CAP` (a count in an index costs what it counts; a dispatcher's queue is far
        shorter than the cap, so only a backlog no ingress could hold reads as the cap)."""

    @abc.abstractmethod
    async def _lease_expired(self, now: float, limit: int) -> list[str]:
        """Unfinished tasks whose lease ran out before `now`, oldest lease first."""

    @abc.abstractmethod
    async def _webhooks_due(self, now: float, limit: int) -> list[str]:
        """Ended tasks whose pending webhook is due by `now`."""

    @abc.abstractmethod
    async def _expired(self, now: float, limit: int) -> list[str]:
        """Tasks past their retention."""

    @abc.abstractmethod
    async def remember(self, fingerprint: str, task_id: str, expires_at: float) -> None:
        """Note that the request with this fingerprint made task `task_id` (replacing any older)."""

    @abc.abstractmethod
    async def recall(self, fingerprint: str) -> str | None:
        """The task a request with this fingerprint made, until the note expires."""

    async def close(self) -> None:
        return None

    # --- operations ---------------------------------------------------------------------------

    async def fullness(self) -> float | None:
        """Used over the bound of the store's memory (None: unbounded), asked at most every
        FULLNESS_EVERY_S: one question a second, not one a submission."""
        if time.monotonic() - self._fullness_at >= FULLNESS_EVERY_S:
            self._fullness, self._fullness_at = await self._fullness_now(), time.monotonic()
        return self._fullness

    async def create(self, record: TaskRecord) -> None:
        """Store a new task; raises StoreFull past NEW_TASKS_UP_TO of the store's bound."""
        if (full := await self.fullness()) is not None and full >= NEW_TASKS_UP_TO:
            raise StoreFull(f"the task store is {full:.0%} full")
        await self._insert(record)

    async def delete(self, task_ids: list[str]) -> None:
        """Take records back (a submission that failed after its record was stored)."""
        await self._delete(task_ids)

    async def get(self, task_id: str) -> TaskRecord | None:
        record = await self._load(task_id)
        if record is None or record.expires_at < time.time():
            return None
        return record

    async def update(self, task_id: str, mutate: Mutation) -> TaskRecord | None:
        """Apply `mutate` atomically; returns the new record, or None when `mutate` declined
        (or the task is gone)."""
        for _ in range(50):
            current = await self._load(task_id)
            if current is None:
                return None
            changed = mutate(current.model_copy(deep=True))
            if changed is None:
                return None
            changed.version = current.version + 1
            if await self._compare_and_set(changed, current.version):
                return changed
        raise RuntimeError(f"task {task_id}: too much contention")

    async def transition(self, task_id: str, allowed: set[TaskStatus], **changes) -> TaskRecord | None:
        """Set `changes` only if the task is in one of `allowed` statuses."""

        def mutate(record: TaskRecord) -> TaskRecord | None:
            return record.model_copy(update=changes) if record.status in allowed else None

        return await self.update(task_id, mutate)

    async def renew(self, owner: str, task_ids: Iterable[str], lease_until: float) -> list[str]:
        """Extend the leases; returns the ids that ended meanwhile (canceled by another ingress)."""
        ended = []
        for task_id in task_ids:
            renewed = await self.update(task_id, lambda r: r.model_copy(update={"lease_until": lease_until})
                                        if r.owner == owner and not r.terminal else None)
            if renewed is None and ((current := await self._load(task_id)) is None or current.terminal):
                ended.append(task_id)
        return ended

    async def claim_expired(self, owner: str, now: float, lease_until: float,
                            limit: int = SCAN_LIMIT) -> list[TaskRecord]:
        """Take over unfinished tasks whose lease ran out (their dispatcher died)."""
        claimed = []
        for task_id in await self._lease_expired(now, limit):
            taken = await self.update(task_id, lambda r: r.model_copy(
                update={"owner": owner, "lease_until": lease_until})
                if r.status not in TERMINAL and r.lease_until < now else None)
            if taken is not None:
                claimed.append(taken)
        return claimed

    async def due_webhooks(self, now: float, limit: int = SCAN_LIMIT) -> list[TaskRecord]:
        """Ended tasks whose webhook is due and held by no live sender."""
        due = [await self._load(task_id) for task_id in await self._webhooks_due(now, limit)]
        return [r for r in due if r is not None and r.terminal and r.webhook is not None
                and r.webhook.state == DeliveryState.PENDING and r.webhook.next_attempt_at <= now
                and r.webhook.sending_until < now]

    async def purge_expired(self, now: float, limit: int = PURGE_LIMIT,
                            remove_files: Callable[[list[str]], Awaitable[None]] | None = None) -> list[str]:
        """Delete records past their retention, each only after `remove_files(ids)` removed
        what they own: a crash in between leaves records to purge again, never files that no
        record owns. Returns their ids."""
        expired = await self._expired(now, limit)
        if expired:
            if remove_files is not None:
                await remove_files(expired)
            await self._delete(expired)
        return expired
