"""Task-end webhooks: the task's final body, POSTed to its callback URL, signed per Standard Webhooks.

Guarantees:

- Signed with the `standardwebhooks` library (`webhook-id`, `webhook-timestamp`,
  `webhook-signature`: HMAC-SHA256 over id.timestamp.body) with the task's API key's own secret
  (`webhook_secrets.py`: no tenant can sign what another's receiver accepts), and during a
  rotation with the previous one too. The id is fixed per task (`msg_<task id>`), so a
  receiver can drop a repeated delivery.
- Delivered at least once while the retry window is open: attempts back off exponentially
  (first_retry_s, doubling, capped at max_retry_s) until `give_up_after_s` after the task
  ended; then the delivery is GAVE_UP. Attempts, last status and outcome are on the record.
- An ingress claims a delivery before sending (compare-and-set, with a lease), so two replicas
  never send the same attempt, and a delivery whose ingress died is picked up by the next
  scan of any ingress once its lease runs out.
- A receiver that fails or hangs changes only the delivery state, never the task, and holds
  only its own slot: each attempt is bounded in time, and deliveries run concurrently, at most
  `max_concurrent_per_key` for one API key's tasks, so one tenant's slow receiver cannot take
  every slot. A delivery takes its slots before it claims, so its claim never runs out while
  it waits for one (which would let another ingress send it too).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Callable

from standardwebhooks import Webhook

from cluster.spec.config import WebhookConfig
from cluster.storage.guarded_fetch import FetchError, FetchPolicy, Resolver, request, system_resolver
from serve.tasks.store.base import TaskStore
from serve.tasks.store.record import DeliveryState, TaskRecord, WebhookDelivery
from serve.tasks.webhooks.secrets import TenantSecrets

log = logging.getLogger(__name__)

BodyRenderer = Callable[[TaskRecord], dict]  # a door's final body of a task
MAX_ANSWER_BYTES = 64 * 1024


@dataclass
class _KeySlots:
    semaphore: asyncio.Semaphore
    users: int = 0  # deliveries holding or waiting for one of them


class Webhooks:
    def __init__(self, store: TaskStore, config: WebhookConfig, secrets: TenantSecrets, policy: FetchPolicy,
                 renderers: dict[str, BodyRenderer], owner: str, resolver: Resolver = system_resolver):
        """`renderers`: the body each door that takes callbacks sends, by the door's name
        (serve/doors/registry.py `webhook_bodies`)."""
        self.store = store
        self.config = config
        self.secrets = secrets
        # A webhook is a POST: redirects are not followed (3xx counts as a failed attempt).
        self.policy = replace(policy, max_redirects=0)
        self.renderers = renderers
        self.owner = owner
        self.resolver = resolver
        self._slots = asyncio.Semaphore(config.max_concurrent)
        self._key_slots: dict[str, _KeySlots] = {}  # only keys with a delivery in flight or waiting
        self._running: dict[str, asyncio.Task] = {}  # task id -> its delivery here (one at most)

    # --- scheduling -----------------------------------------------------------------------------

    def task_ended(self, record: TaskRecord) -> None:
        """Send at once when the task has a webhook (the dispatcher calls this)."""
        if record.webhook is not None and record.webhook.state == DeliveryState.PENDING:
            self._spawn(record.task_id, delay_s=0.0)

    def _spawn(self, task_id: str, delay_s: float) -> None:
        """Deliver a task's webhook from here, unless this ingress has its delivery running or
        waiting for a slot already (a scan sees such a delivery as due and unclaimed)."""
        if task_id in self._running:
            return
        task = asyncio.create_task(self._deliver(task_id, delay_s))
        self._running[task_id] = task
        task.add_done_callback(lambda _: self._running.pop(task_id, None))

    def in_flight(self) -> int:
        """Deliveries this ingress runs or holds waiting (one per task at most)."""
        return len(self._running)

    async def scan(self) -> None:
        """Pick up deliveries that are due and held by nobody (their ingress died, or a retry
        was scheduled by an ingress that is gone). Run periodically by every ingress."""
        now = time.time()
        for record in await self.store.due_webhooks(now):
            self._spawn(record.task_id, delay_s=0.0)

    # --- one attempt ----------------------------------------------------------------------------

    async def _deliver(self, task_id: str, delay_s: float) -> None:
        """Attempts until the delivery ends here: delivered, given up, or not ours to send."""
        try:
            while True:
                if delay_s:
                    await asyncio.sleep(delay_s)
                delivery = await self.attempt(task_id)
                if delivery is None or delivery.state != DeliveryState.PENDING:
                    return
                delay_s = max(0.0, delivery.next_attempt_at - time.time())
        except Exception:  # noqa: BLE001 - a delivery failure must never reach the task
            log.exception("webhook delivery for task %s failed", task_id)

    async def attempt(self, task_id: str) -> WebhookDelivery | None:
        """Claim, send once, record the outcome (with the next attempt's time when it failed).
        Returns the delivery state after the attempt (None when not ours to send now)."""
        record = await self.store.get(task_id)
        if record is None or record.webhook is None:
            return None
        async with self._key_slot(record.key_id), self._slots:
            claimed = await self._claim(task_id)
            if claimed is None or claimed.webhook is None:
                return None
            status, error = await self._send(claimed)
        after = await self.store.update(task_id, lambda r: self._outcome(r, status, error))
        return after.webhook if after else None

    @contextlib.asynccontextmanager
    async def _key_slot(self, key_id: str):
        slots = self._key_slots.setdefault(key_id, _KeySlots(asyncio.Semaphore(self.config.max_concurrent_per_key)))
        slots.users += 1
        try:
            async with slots.semaphore:
                yield
        finally:
            slots.users -= 1
            if not slots.users:
                del self._key_slots[key_id]

    async def _claim(self, task_id: str) -> TaskRecord | None:
        now = time.time()
        hold_until = now + self.policy.timeout_s + 5  # one attempt's longest time, and some slack

        def claim(record: TaskRecord) -> TaskRecord | None:
            hook = record.webhook
            if (not record.terminal or hook is None or hook.state != DeliveryState.PENDING
                    or hook.next_attempt_at > now or (hook.sender and hook.sending_until > now)):
                return None
            return record.model_copy(update={"webhook": hook.model_copy(
                update={"sender": self.owner, "sending_until": hold_until})})

        return await self.store.update(task_id, claim)

    async def _send(self, record: TaskRecord) -> tuple[int | None, str | None]:
        renderer = self.renderers.get(record.api)
        if renderer is None:  # only a door that takes callbacks makes tasks with one
            return None, f"the {record.api} door sends no webhooks"
        body = json.dumps(renderer(record), ensure_ascii=False)
        message_id = f"msg_{record.task_id}"
        moment = datetime.now(tz=timezone.utc)
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": " ".join(Webhook(secret).sign(message_id, moment, body)
                                          for secret in self.secrets.for_key(record.key_id)),
        }
        try:
            answer = await request("POST", record.webhook.url, self.policy, max_bytes=MAX_ANSWER_BYTES,
                                   content=body.encode(), headers=headers, resolver=self.resolver)
        except FetchError as exc:
            return None, str(exc)
        return answer.status, None if 200 <= answer.status < 300 else f"receiver answered HTTP {answer.status}"

    def _outcome(self, record: TaskRecord, status: int | None, error: str | None) -> TaskRecord | None:
        hook = record.webhook
        if hook is None or hook.sender != self.owner:
            return None  # our claim ran out and someone else took over: theirs is the record
        now = time.time()
        attempts = hook.attempts + 1
        update: dict = {"attempts": attempts, "last_status": status, "last_error": error, "sender": None,
                        "sending_until": 0.0}
        if error is None:
            update |= {"state": DeliveryState.DELIVERED, "delivered_at": now}
        else:
            wait_s = min(self.config.first_retry_s * 2 ** (attempts - 1), self.config.max_retry_s)
            next_at = now + wait_s
            ended = record.end_time or now
            if next_at > ended + self.config.give_up_after_s:
                update |= {"state": DeliveryState.GAVE_UP}
            else:
                update |= {"next_attempt_at": next_at}
        return record.model_copy(update={"webhook": hook.model_copy(update=update)})
