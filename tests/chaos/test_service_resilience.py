"""Failure and limit behaviour of a running service (loopback only, bounded, self-stopping).

- rate limit -> 429 Throttling.RateQuota with Retry-After; full queue -> 503 ServiceUnavailable
- /healthz keeps answering during a long render
- a model replica's process killed while a task is RUNNING on it: that task is retried, and
  every task still ends terminal, none duplicated
- the ingress replica's process killed while a task is RUNNING: the restarted ingress recovers
  and re-runs it, and a webhook that was due is still delivered
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from serve.secrets import new_webhook_secret
from serve.tasks.store.record import DeliveryState
from serve.tasks.store.sqlite import SQLiteTaskStore
from tests.receiver import webhook_receiver
from tests.servers import free_port, raydiant_service

KEYS = ["limited-key", "queue-key", "chaos-key", "ingress-key", "metrics-key"]
RATE_BURST = 300  # per key in any 60 s window: spent in one test whatever the machine's speed
CONFIG = """
models:
  flux-schnell: {{source: "tiny:flux", warmup: false}}
  flux-dev: {{source: "tiny:flux", warmup: false}}
serve:
  rate_limit: {{requests_per_second: 5, burst: {burst}}}
  max_queued_per_model: 3
  lease_s: 3
  task_deadline_s: 150
  fetch: {{allow_loopback: true}}
  webhooks: {{secret: "{secret}", first_retry_s: 0.5, max_retry_s: 1, give_up_after_s: 120}}
  deployments:
    flux-dev: {{max_ongoing_requests: 1}}
tasks: {{path: "{work}/tasks.sqlite"}}
storage: {{root: "{work}/results", signing_key_file: "{work}/signing.key"}}
"""
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED"}


METRICS_PORT = free_port()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("resilience")


@pytest.fixture(scope="module")
def service(work):
    config = CONFIG.format(work=work, burst=RATE_BURST, secret=new_webhook_secret())
    with raydiant_service(work, config, api_keys=",".join(KEYS),
                          extra_args=("--metrics-port", str(METRICS_PORT))) as running:
        yield running


def stored(work: Path, task_id: str):
    """A task's record, read from the service's own store (attempts, webhook state)."""
    return asyncio.run(SQLiteTaskStore(work / "tasks.sqlite").get(task_id))


def wait_running(service, key, task_ids, timeout_s=60) -> str:
    """The first of `task_ids` seen RUNNING (so a kill now hits work in progress)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for task_id in task_ids:
            if fetch(service, key, task_id)["task_status"] == "RUNNING":
                return task_id
        time.sleep(0.1)
    raise AssertionError("no task started RUNNING")


def create(service, key, model="flux-schnell", **parameters):
    return httpx.post(f"{service.url}/api/v1/services/aigc/text2image/image-synthesis", timeout=30,
                      headers={"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"},
                      json={"model": model, "input": {"prompt": "resilience"}, "parameters": parameters})


def fetch(service, key, task_id):
    """The task's output; tolerates the moments when the ingress is being replaced."""
    for _ in range(60):
        try:
            answer = httpx.get(f"{service.url}/api/v1/tasks/{task_id}", timeout=10,
                               headers={"Authorization": f"Bearer {key}"})
            if answer.status_code == 200:
                return answer.json()["output"]
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError(f"task {task_id} could not be fetched")


def wait_all(service, key, task_ids, timeout_s=150):
    deadline = time.monotonic() + timeout_s
    outputs = {}
    while time.monotonic() < deadline:
        outputs = {t: fetch(service, key, t) for t in task_ids}
        if all(o["task_status"] in TERMINAL for o in outputs.values()):
            return outputs
        time.sleep(1)
    raise AssertionError(f"tasks not terminal after {timeout_s}s: "
                         f"{ {t: o['task_status'] for t, o in outputs.items()} }")


def assert_complete_once(outputs, n):
    for output in outputs.values():
        if output["task_status"] == "SUCCEEDED":
            results = output["results"]
            assert len(results) == n and len({r["url"].split("?")[0] for r in results}) == n
            assert output["task_metrics"]["TOTAL"] == n
        else:
            assert output["task_status"] == "FAILED" and output["code"].startswith("InternalError.")


def test_rate_limit_answers_429_with_retry_after(service):
    with httpx.Client(headers={"Authorization": "Bearer limited-key"}) as client:
        answers = [client.get(f"{service.url}/api/v1/tasks/x") for _ in range(RATE_BURST + 1)]
    assert [a.status_code for a in answers[:RATE_BURST]] == [200] * RATE_BURST
    throttled = answers[-1]
    assert throttled.status_code == 429 and throttled.json()["code"] == "Throttling.RateQuota"
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60


def test_full_queue_answers_503_and_health_stays_up(service):
    # flux-dev renders one request at a time and queues 3: a long task, then 3 queued, then 503.
    long_task = create(service, "queue-key", model="flux-dev", steps=100, n=4).json()["output"]["task_id"]
    queued = [create(service, "queue-key", model="flux-dev", steps=1) for _ in range(3)]
    assert all(a.status_code == 200 for a in queued)
    refused = create(service, "queue-key", model="flux-dev", steps=1)
    assert refused.status_code == 503 and refused.json()["code"] == "ServiceUnavailable"

    # While the long render runs, /healthz answers at once (rendering is off the event loop).
    wait_running(service, "queue-key", [long_task])  # PENDING until the replica starts it
    for _ in range(3):
        started = time.monotonic()
        health = httpx.get(f"{service.url}/healthz", timeout=10)
        assert health.status_code == 200 and time.monotonic() - started < 2.0
        time.sleep(0.5)
    ids = [long_task] + [a.json()["output"]["task_id"] for a in queued]
    wait_all(service, "queue-key", ids)


def kill(service, pattern: str) -> int:
    pids = service.processes(pattern)
    assert pids, f"no process matching {pattern!r} in the service"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return len(pids)


def test_model_replica_killed_mid_task(service, work):
    ids = [create(service, "chaos-key", steps=25, n=2, seed=i).json()["output"]["task_id"] for i in range(6)]
    hit = wait_running(service, "chaos-key", ids)
    kill(service, "ServeReplica:raydiant:model-flux-schnell")
    outputs = wait_all(service, "chaos-key", ids)
    assert_complete_once(outputs, n=2)
    assert sum(o["task_status"] == "SUCCEEDED" for o in outputs.values()) >= 1
    assert stored(work, hit).attempts >= 2  # the task that was running was dispatched again


def test_ingress_killed_mid_task_and_its_due_webhook_still_delivered(service, work):
    with webhook_receiver() as receiver:
        receiver.always = 500  # the hook's first attempts fail: a retry is due when the ingress dies
        hooked = create(service, "ingress-key", steps=1, callback_url=receiver.to("/due")).json()["output"]["task_id"]
        receiver.wait_for("/due")
        ids = [create(service, "ingress-key", steps=25, n=2, seed=100 + i).json()["output"]["task_id"]
               for i in range(3)]
        hit = wait_running(service, "ingress-key", ids)
        kill(service, "ServeReplica:raydiant:ingress")
        killed_at = time.time()
        receiver.always = None
        outputs = wait_all(service, "ingress-key", ids)
        assert_complete_once(outputs, n=2)
        assert stored(work, hit).attempts >= 2  # recovered by the restarted ingress and run again
        late = [d for d in receiver.wait_for("/due", count=2) if d.at > killed_at]
        deadline = time.monotonic() + 60
        while stored(work, hooked).webhook.state == DeliveryState.PENDING and time.monotonic() < deadline:
            time.sleep(0.2)
        hook = stored(work, hooked).webhook
        assert hook.state == DeliveryState.DELIVERED and hook.last_status == 200
        assert receiver.received("/due")[-1].at > killed_at and late  # sent by the new ingress


def test_metrics_exported_in_prometheus_format(service):
    """After a task of its own rendered, Ray's metrics endpoint shows it (whatever ran before)."""
    task_id = create(service, "metrics-key", steps=1).json()["output"]["task_id"]
    assert wait_all(service, "metrics-key", [task_id])[task_id]["task_status"] == "SUCCEEDED"
    # Every name the test asserts, so the wait covers each one's first export (Ray exports a
    # process's metrics on a period of its own; after the ingress was replaced, a new process's).
    wanted = ("raydiant_images_rendered", "raydiant_task_render_seconds_bucket", "raydiant_queue_depth")
    deadline = time.monotonic() + 120
    text = ""
    while time.monotonic() < deadline:
        try:
            text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
        except httpx.HTTPError:
            text = ""
        if all(name in text for name in wanted):
            break
        time.sleep(2)
    rendered = [line for line in text.splitlines() if line.startswith("ray_raydiant_images_rendered")
                or line.startswith("raydiant_images_rendered")]
    assert rendered, "raydiant_images_rendered not exported"
    assert any('model="flux-schnell"' in line for line in rendered)
    assert "raydiant_task_render_seconds_bucket" in text and "raydiant_queue_depth" in text
