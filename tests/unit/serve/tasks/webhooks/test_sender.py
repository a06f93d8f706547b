"""Webhook delivery (serve/tasks/webhooks/sender.py) to a real receiver on loopback, over a real SQLite
task store, without Ray: signatures, retries, giving up, slow receivers, recovery."""

from __future__ import annotations

import asyncio
import time

import pytest
from standardwebhooks import Webhook

from cluster.spec.config import WebhookConfig
from cluster.storage.guarded_fetch import FetchPolicy
from serve.secrets import new_webhook_secret
from serve.tasks.store.record import DeliveryState, TaskStatus, WebhookDelivery
from serve.tasks.store.sqlite import SQLiteTaskStore
from serve.tasks.webhooks.secrets import TenantSecrets
from serve.tasks.webhooks.sender import Webhooks
from tests.factories import task_record
from tests.receiver import webhook_receiver

SECRET = new_webhook_secret()


@pytest.fixture
def receiver():
    with webhook_receiver() as running:
        yield running


def body_of(record) -> dict:
    return {"task": record.task_id, "status": record.status.value}


def sender(store, owner="ingress-1", timeout_s: float = 1.0, **config) -> Webhooks:
    settings = WebhookConfig(**({"first_retry_s": 0.1, "max_retry_s": 0.4, "give_up_after_s": 1.5} | config))
    return Webhooks(store, settings, TenantSecrets(SECRET), FetchPolicy(allow_loopback=True, timeout_s=timeout_s),
                    {"dashscope": body_of, "acedata": body_of}, owner=owner)


async def ended_task(store, url: str, **fields):
    record = task_record(status=TaskStatus.SUCCEEDED, end_time=time.time(), webhook=WebhookDelivery(url=url),
                         **fields)
    await store.create(record)
    return record


async def settle(store, task_id: str, timeout_s: float = 10) -> WebhookDelivery:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        hook = (await store.get(task_id)).webhook
        if hook.state != DeliveryState.PENDING:
            return hook
        await asyncio.sleep(0.05)
    raise AssertionError(f"delivery still pending: {hook}")


def test_delivered_signed_body(tmp_path, receiver):
    async def scenario():
        store = SQLiteTaskStore(tmp_path / "t.sqlite")
        record = await ended_task(store, receiver.to("/ok"))
        sender(store).task_ended(record)
        return record, await settle(store, record.task_id)

    record, hook = asyncio.run(scenario())
    (delivery,) = receiver.received("/ok")
    [own] = TenantSecrets(SECRET).for_key(record.key_id)
    assert Webhook(own).verify(delivery.body, delivery.headers) == body_of(record)
    assert delivery.headers["webhook-id"] == f"msg_{record.task_id}"
    assert (hook.state, hook.attempts, hook.last_status) == (DeliveryState.DELIVERED, 1, 200)
    with pytest.raises(Exception):
        Webhook(new_webhook_secret()).verify(delivery.body, delivery.headers)  # another secret does not verify
    for other in (SECRET, TenantSecrets(SECRET).for_key("another-key")[0]):  # the service's, another tenant's
        with pytest.raises(Exception):
            Webhook(other).verify(delivery.body, delivery.headers)


def test_retried_after_receiver_errors(tmp_path, receiver):
    receiver.statuses.extend([500, 503])

    async def scenario():
        store = SQLiteTaskStore(tmp_path / "t.sqlite")
        record = await ended_task(store, receiver.to("/flaky"))
        sender(store).task_ended(record)
        return await settle(store, record.task_id), await store.get(record.task_id)

    hook, record = asyncio.run(scenario())
    deliveries = receiver.received("/flaky")
    assert (hook.state, hook.attempts, hook.last_status) == (DeliveryState.DELIVERED, 3, 200)
    assert len(deliveries) == 3 and len({d.headers["webhook-id"] for d in deliveries}) == 1
    gaps = [b.at - a.at for a, b in zip(deliveries, deliveries[1:])]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2  # first_retry_s, then twice that
    assert record.status == TaskStatus.SUCCEEDED


def test_gives_up_after_the_window_and_task_is_unchanged(tmp_path, receiver):
    receiver.always = 500

    async def scenario():
        store = SQLiteTaskStore(tmp_path / "t.sqlite")
        record = await ended_task(store, receiver.to("/down"))
        sender(store).task_ended(record)
        return record, await settle(store, record.task_id), await store.get(record.task_id)

    before, hook, after = asyncio.run(scenario())
    assert hook.state == DeliveryState.GAVE_UP and hook.last_status == 500 and hook.attempts >= 3
    assert "HTTP 500" in hook.last_error
    assert (after.status, after.results, after.end_time) == (before.status, before.results, before.end_time)
    assert len(receiver.received("/down")) == hook.attempts


def test_a_slow_receiver_does_not_hold_up_others(tmp_path, receiver):
    async def scenario():
        store = SQLiteTaskStore(tmp_path / "t.sqlite")
        hooks = sender(store, timeout_s=5.0)
        slow = await ended_task(store, receiver.to("/slow"))
        receiver.delays["/slow"] = 8.0  # beyond the 5 s attempt timeout
        hooks.task_ended(slow)
        while not receiver.received("/slow"):  # the slow attempt has arrived, and hangs
            await asyncio.sleep(0.01)
        fast = await ended_task(store, receiver.to("/fast"))
        hooks.task_ended(fast)
        fast_hook = await settle(store, fast.task_id)
        slow_then = (await store.get(slow.task_id)).webhook
        while (slow_hook := (await store.get(slow.task_id)).webhook).attempts == 0:
            await asyncio.sleep(0.05)  # its first attempt times out after 5 s
        return fast_hook, slow_then, slow_hook

    fast_hook, slow_then, slow_hook = asyncio.run(scenario())
    # Delivered while the slow attempt still hung: no attempt of it had ended (each ends in the
    # record), whatever the machine's load did to the clock between them.
    assert fast_hook.state == DeliveryState.DELIVERED and slow_then.attempts == 0
    assert slow_hook.attempts >= 1 and slow_hook.last_status is None and "within" in slow_hook.last_error


def test_a_delivery_held_by_a_dead_ingress_is_recovered_by_a_scan(tmp_path, receiver):
    async def scenario():
        store = SQLiteTaskStore(tmp_path / "t.sqlite")
        record = await ended_task(store, receiver.to("/orphan"))
        # Another ingress claimed it and died: its claim ran out a moment ago.
        await store.update(record.task_id, lambda r: r.model_copy(update={"webhook": r.webhook.model_copy(
            update={"sender": "dead-ingress", "sending_until": time.time() - 1})}))
        await sender(store, owner="ingress-2").scan()
        return await settle(store, record.task_id)

    hook = asyncio.run(scenario())
    assert hook.state == DeliveryState.DELIVERED and len(receiver.received("/orphan")) == 1


def test_a_live_claim_is_not_sent_twice(tmp_path, receiver):
    async def scenario():
        store = SQLiteTaskStore(tmp_path / "t.sqlite")
        record = await ended_task(store, receiver.to("/once"))
        first, second = sender(store, owner="a"), sender(store, owner="b")
        results = await asyncio.gather(first.attempt(record.task_id), second.attempt(record.task_id))
        return results

    results = asyncio.run(scenario())
    assert sorted(r is None for r in results) == [False, True]
    assert len(receiver.received("/once")) == 1


def test_one_keys_slow_receivers_hold_only_that_keys_slots(tmp_path, receiver):
    async def scenario():
        store = SQLiteTaskStore(tmp_path / "t.sqlite")
        hooks = sender(store, max_concurrent=3, max_concurrent_per_key=2, give_up_after_s=30, timeout_s=5.0)
        receiver.delays["/slow"] = 8.0  # each attempt hangs until its 5 s timeout
        slow = [await ended_task(store, receiver.to("/slow"), key_id="slow-key") for _ in range(5)]
        for record in slow:
            hooks.task_ended(record)
        while len(receiver.received("/slow")) < 2:
            await asyncio.sleep(0.01)
        other = await ended_task(store, receiver.to("/fast"), key_id="other-key")
        hooks.task_ended(other)
        hook = await settle(store, other.task_id)
        return hook, [(await store.get(r.task_id)).webhook.attempts for r in slow]

    hook, slow_attempts_then = asyncio.run(scenario())
    (fast,), slow = receiver.received("/fast"), receiver.received("/slow")
    assert hook.state == DeliveryState.DELIVERED
    # Sent while the slow key's first attempts still hung (none had ended: each ends in the
    # record), and only two of them had started: the slow key held 2 of the 3 slots, the other
    # key got the third.
    assert slow_attempts_then == [0] * 5 and sum(d.at < fast.at for d in slow) == 2


def test_scans_never_start_a_second_delivery_of_one_task(tmp_path, receiver):
    """Deliveries waiting for a slot look due and unclaimed to every scan; before, each scan
    started another coroutine for each of them (40 tasks became 839 after 24 scans)."""
    async def scenario():
        store = SQLiteTaskStore(tmp_path / "t.sqlite")
        hooks = sender(store, max_concurrent=1, max_concurrent_per_key=1, give_up_after_s=30, timeout_s=5.0)
        receiver.delays["/slow"] = 8.0  # the one slot stays taken
        records = [await ended_task(store, receiver.to("/slow")) for _ in range(40)]
        for record in records:
            hooks.task_ended(record)
        while not receiver.received("/slow"):
            await asyncio.sleep(0.01)
        for _ in range(24):
            await hooks.scan()
        return hooks.in_flight(), len(asyncio.all_tasks()) - 1

    deliveries, coroutines = asyncio.run(scenario())
    assert deliveries == 40 and coroutines <= 40


def test_during_a_rotation_both_secrets_verify(tmp_path, receiver):
    previous = new_webhook_secret()

    async def scenario():
        store = SQLiteTaskStore(tmp_path / "t.sqlite")
        record = await ended_task(store, receiver.to("/rotating"))
        hooks = Webhooks(store, WebhookConfig(), TenantSecrets(SECRET, previous), FetchPolicy(allow_loopback=True),
                         {"dashscope": body_of, "acedata": body_of}, owner="ingress-1")
        hooks.task_ended(record)
        await settle(store, record.task_id)
        return record

    record = asyncio.run(scenario())
    (delivery,) = receiver.received("/rotating")
    current, old = TenantSecrets(SECRET, previous).for_key(record.key_id)
    assert Webhook(current).verify(delivery.body, delivery.headers) == Webhook(old).verify(delivery.body, delivery.headers)
