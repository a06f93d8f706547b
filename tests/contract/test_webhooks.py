"""Task-end webhooks from the running service to a real receiver on loopback: the AceData
`callback_url` and the DashScope `parameters.callback_url` extension. Signatures are checked with
the `standardwebhooks` library; delivery state is read from the service's own task store."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from standardwebhooks import Webhook

from serve.tasks.store.record import DeliveryState
from serve.tasks.store.sqlite import SQLiteTaskStore
from tests.contract.conftest import HOOK_KEY, OTHER_KEY, WEBHOOK_SECRET
from tests.receiver import webhook_receiver

AUTH = {"Authorization": f"Bearer {HOOK_KEY}"}


@pytest.fixture(scope="module")
def receiver():
    with webhook_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def hook_secret(service) -> str:
    """HOOK_KEY's own signing secret, as a tenant reads it with its key."""
    answer = httpx.get(f"{service.url}/api/v1/webhooks/secret", headers=AUTH, timeout=30)
    assert answer.status_code == 200 and answer.json()["secret"].startswith("whsec_"), answer.text
    return answer.json()["secret"]


def delivery_state(service, task_id: str, timeout_s: float = 30):
    """The task's webhook delivery state once it is no longer pending."""
    store = SQLiteTaskStore(service.work / "tasks.sqlite")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = asyncio.run(store.get(task_id))
        if record.webhook.state != DeliveryState.PENDING:
            return record
        time.sleep(0.1)
    raise AssertionError(f"webhook of {task_id} still pending: {record.webhook}")


def test_acedata_callback_gets_the_final_body_signed(service, receiver, hook_secret):
    created = httpx.post(f"{service.url}/flux/images", headers=AUTH, timeout=30, json={
        "action": "generate", "prompt": "a signal fire", "size": "1:1", "count": 2,
        "callback_url": receiver.to("/acedata")})
    assert created.status_code == 200 and set(created.json()) == {"task_id", "trace_id"}  # answered at once
    (delivery,) = receiver.wait_for("/acedata")
    payload = Webhook(hook_secret).verify(delivery.body, delivery.headers)
    task = httpx.post(f"{service.url}/flux/tasks", headers=AUTH, timeout=30,
                      json={"action": "retrieve", "id": created.json()["task_id"]}).json()
    assert payload == task["response"] and payload["success"] is True  # signed URLs included
    assert len(payload["data"]) == 2 and httpx.get(payload["data"][1]["image_url"], timeout=30).status_code == 200
    record = delivery_state(service, task["id"])
    assert (record.webhook.state, record.webhook.attempts, record.webhook.last_status) == (
        DeliveryState.DELIVERED, 1, 200)
    print(f"\nwebhook latency, task end -> receiver: {1000 * (delivery.at - record.end_time):.0f} ms")


def test_dashscope_callback_extension(service, receiver, hook_secret):
    created = httpx.post(f"{service.url}/api/v1/services/aigc/text2image/image-synthesis", timeout=30,
                         headers=AUTH | {"X-DashScope-Async": "enable"},
                         json={"model": "flux-schnell", "input": {"prompt": "a bell"},
                               "parameters": {"steps": 1, "callback_url": receiver.to("/dashscope")}})
    task_id = created.json()["output"]["task_id"]
    (delivery,) = receiver.wait_for("/dashscope")
    payload = Webhook(hook_secret).verify(delivery.body, delivery.headers)
    fetched = httpx.get(f"{service.url}/api/v1/tasks/{task_id}", headers=AUTH, timeout=30).json()
    assert payload["output"] == fetched["output"]
    assert payload["output"]["task_status"] == "SUCCEEDED"
    assert delivery.headers["webhook-id"] == f"msg_{task_id}"


def test_retried_after_receiver_errors(service, receiver):
    receiver.statuses.extend([500, 502])
    created = httpx.post(f"{service.url}/flux/images", headers=AUTH, timeout=30, json={
        "action": "generate", "prompt": "third time lucky", "callback_url": receiver.to("/flaky")}).json()
    deliveries = receiver.wait_for("/flaky", count=3)
    assert len({d.headers["webhook-id"] for d in deliveries}) == 1  # one message, three attempts
    record = delivery_state(service, created["task_id"])
    assert (record.webhook.state, record.webhook.attempts) == (DeliveryState.DELIVERED, 3)
    print(f"\nretries: attempts at +{', +'.join(f'{d.at - record.end_time:.2f}' for d in deliveries)} s after task end")


def test_gives_up_after_the_bound_and_the_task_is_unaffected(service, receiver):
    receiver.always = 500
    try:
        created = httpx.post(f"{service.url}/flux/images", headers=AUTH, timeout=30, json={
            "action": "generate", "prompt": "nobody listens", "callback_url": receiver.to("/down")}).json()
        record = delivery_state(service, created["task_id"], timeout_s=60)
    finally:
        receiver.always = None
    assert record.webhook.state == DeliveryState.GAVE_UP and record.webhook.last_status == 500
    assert record.webhook.attempts == len(receiver.received("/down")) >= 3
    task = httpx.post(f"{service.url}/flux/tasks", headers=AUTH, timeout=30,
                      json={"action": "retrieve", "id": created["task_id"]}).json()
    assert task["response"]["success"] is True


def test_callback_to_a_private_address_is_refused_at_submission(service):
    answer = httpx.post(f"{service.url}/flux/images", headers=AUTH, timeout=30, json={
        "action": "generate", "prompt": "x", "callback_url": "http://192.168.0.10/hook"})
    assert answer.status_code == 400 and "non-public" in answer.json()["error"]["message"]


def test_each_key_signs_with_its_own_secret(service, receiver, hook_secret):
    """Another tenant's secret (which it reads with its own key) and the service's own secret
    verify nothing of this key's deliveries: no tenant can forge deliveries to another's receiver."""
    other = httpx.get(f"{service.url}/api/v1/webhooks/secret", headers={"Authorization": f"Bearer {OTHER_KEY}"},
                      timeout=30).json()["secret"]
    assert other != hook_secret
    assert httpx.get(f"{service.url}/api/v1/webhooks/secret", timeout=30).status_code == 401
    httpx.post(f"{service.url}/flux/images", headers=AUTH, timeout=30, json={
        "action": "generate", "prompt": "a lantern", "callback_url": receiver.to("/own")})
    (delivery,) = receiver.wait_for("/own")
    assert Webhook(hook_secret).verify(delivery.body, delivery.headers)
    for wrong in (other, WEBHOOK_SECRET):
        with pytest.raises(Exception):
            Webhook(wrong).verify(delivery.body, delivery.headers)
