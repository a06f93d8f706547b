"""`TaskStore`: the one protocol both backends implement, and the shared logic above it.

Backends provide four primitives (`_insert`, `_load`, `_compare_and_set`, `_query`, ...);
`TaskStore` builds transitions on them with optimistic concurrency: read, change, write only if
nobody wrote in between (`version` unchanged), retry otherwise. That is what makes cancel vs
dispatch, and two ingress replicas recovering the same task, safe.
"""

from __future__ import annotations

import abc
import time
from typing import Callable, Iterable

from serve.tasks.record import TERMINAL, TaskRecord, TaskStatus

Mutation = Callable[[TaskRecord], TaskRecord | None]  # None: leave the record as it is


class TaskStore(abc.ABC):
    # --- backend primitives -------------------------------------------------------------------

    @abc.abstractmethod
    async def _insert(self, record: TaskRecord) -> None: ...

    @abc.abstractmethod
    async def _load(self, task_id: str) -> TaskRecord | None: ...

    @abc.abstractmethod
    async def _compare_and_set(self, record: TaskRecord, expected_version: int) -> bool: ...

    @abc.abstractmethod
    async def _all(self) -> Iterable[TaskRecord]:
        """Every live record (for listing and recovery scans)."""

    @abc.abstractmethod
    async def _delete(self, task_ids: list[str]) -> None: ...

    @abc.abstractmethod
    async def remember(self, fingerprint: str, task_id: str, expires_at: float) -> None:
        """Note that the request with this fingerprint made task `task_id` (replacing any older)."""

    @abc.abstractmethod
    async def recall(self, fingerprint: str) -> str | None:
        """The task a request with this fingerprint made, until the note expires."""

    async def close(self) -> None:
        return None

    # --- operations ---------------------------------------------------------------------------

    async def create(self, record: TaskRecord) -> None:
        await self._insert(record)

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

    async def list(self, *, key_id: str | None = None, status: str | None = None, model: str | None = None,
                   start: float | None = None, end: float | None = None, page_no: int = 1,
                   page_size: int = 10) -> tuple[list[TaskRecord], int]:
        """Newest first, filtered, one page; also the total that matched."""
        now = time.time()
        matched = sorted(
            (r for r in await self._all()
             if r.expires_at >= now
             and (key_id is None or r.key_id == key_id)
             and (status is None or r.status == status)
             and (model is None or r.model == model)
             and (start is None or r.submit_time >= start)
             and (end is None or r.submit_time <= end)),
            key=lambda r: r.submit_time, reverse=True)
        first = (page_no - 1) * page_size
        return matched[first: first + page_size], len(matched)

    async def pending_ahead(self, record: TaskRecord) -> int:
        """How many PENDING tasks of the record's model were submitted before it."""
        now = time.time()
        return sum(1 for r in await self._all()
                   if r.status == TaskStatus.PENDING and r.model == record.model and r.expires_at >= now
                   and (r.submit_time, r.task_id) < (record.submit_time, record.task_id))

    async def renew(self, owner: str, task_ids: Iterable[str], lease_until: float) -> list[str]:
        """Extend the leases; returns the ids that ended meanwhile (canceled by another ingress)."""
        ended = []
        for task_id in task_ids:
            renewed = await self.update(task_id, lambda r: r.model_copy(update={"lease_until": lease_until})
                                        if r.owner == owner and not r.terminal else None)
            if renewed is None and ((current := await self._load(task_id)) is None or current.terminal):
                ended.append(task_id)
        return ended

    async def claim_expired(self, owner: str, now: float, lease_until: float) -> list[TaskRecord]:
        """Take over unfinished tasks whose lease ran out (their dispatcher died)."""
        claimed = []
        for record in await self._all():
            if record.status in TERMINAL or record.lease_until >= now:
                continue
            taken = await self.update(record.task_id, lambda r: r.model_copy(
                update={"owner": owner, "lease_until": lease_until})
                if r.status not in TERMINAL and r.lease_until < now else None)
            if taken is not None:
                claimed.append(taken)
        return claimed

    async def due_webhooks(self, now: float) -> list[TaskRecord]:
        """Ended tasks whose webhook is due and held by no live sender."""
        return [r for r in await self._all()
                if r.terminal and r.webhook is not None and r.webhook.state == "pending"
                and r.webhook.next_attempt_at <= now and r.webhook.sending_until < now]

    async def purge_expired(self, now: float) -> list[str]:
        """Delete records past their retention; returns their ids (to delete their files)."""
        expired = [r.task_id for r in await self._all() if r.expires_at < now]
        if expired:
            await self._delete(expired)
        return expired
