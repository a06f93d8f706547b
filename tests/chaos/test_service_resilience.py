"""Failure and limit behaviour of a running service (loopback only, bounded, self-stopping).

- rate limit -> 429 Throttling.RateQuota with Retry-After; full queue -> 503 ServiceUnavailable
- /healthz keeps answering during a long render
- a model replica's process killed mid-task: every task still ends terminal, none duplicated
- the ingress replica's process killed: its tasks are recovered by the restarted ingress
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from tests.servers import free_port, raydiant_service

KEYS = ["limited-key", "queue-key", "chaos-key", "ingress-key"]
CONFIG = """
models:
  flux-schnell: {{source: "tiny:flux", warmup: false}}
  flux-dev: {{source: "tiny:flux", warmup: false}}
serve:
  rate_limit: {{requests_per_second: 20, burst: 30}}
  max_queued_per_model: 3
  lease_s: 3
  task_deadline_s: 150
  deployments:
    flux-dev: {{max_ongoing_requests: 1}}
tasks: {{path: "{work}/tasks.sqlite"}}
storage: {{root: "{work}/results", signing_key_file: "{work}/signing.key"}}
"""
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELED"}


METRICS_PORT = free_port()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    work = tmp_path_factory.mktemp("resilience")
    with raydiant_service(work, CONFIG.format(work=work), api_keys=",".join(KEYS),
                          extra_args=("--metrics-port", str(METRICS_PORT))) as running:
        yield running


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
        answers = [client.get(f"{service.url}/api/v1/tasks/x") for _ in range(80)]
    statuses = [a.status_code for a in answers]
    assert statuses[:30] == [200] * 30 and 429 in statuses[30:]
    throttled = next(a for a in answers if a.status_code == 429)
    assert throttled.json()["code"] == "Throttling.RateQuota" and int(throttled.headers["Retry-After"]) >= 1


def test_full_queue_answers_503_and_health_stays_up(service):
    # flux-dev renders one request at a time and queues 3: a long task, then 3 queued, then 503.
    long_task = create(service, "queue-key", model="flux-dev", steps=100, n=4).json()["output"]["task_id"]
    queued = [create(service, "queue-key", model="flux-dev", steps=1) for _ in range(3)]
    assert all(a.status_code == 200 for a in queued)
    refused = create(service, "queue-key", model="flux-dev", steps=1)
    assert refused.status_code == 503 and refused.json()["code"] == "ServiceUnavailable"

    # While the long render runs, /healthz answers at once (rendering is off the event loop).
    assert fetch(service, "queue-key", long_task)["task_status"] == "RUNNING"
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


def test_model_replica_killed_mid_task(service):
    ids = [create(service, "chaos-key", steps=25, n=2, seed=i).json()["output"]["task_id"] for i in range(6)]
    time.sleep(1.5)
    kill(service, "ServeReplica:raydiant:model-flux-schnell")
    outputs = wait_all(service, "chaos-key", ids)
    assert_complete_once(outputs, n=2)
    assert sum(o["task_status"] == "SUCCEEDED" for o in outputs.values()) >= 1


def test_ingress_killed_mid_task(service):
    ids = [create(service, "ingress-key", steps=25, n=2, seed=100 + i).json()["output"]["task_id"] for i in range(3)]
    time.sleep(1.0)
    kill(service, "ServeReplica:raydiant:ingress")
    outputs = wait_all(service, "ingress-key", ids)
    assert_complete_once(outputs, n=2)


def test_metrics_exported_in_prometheus_format(service):
    """After the tests above rendered and failed images, Ray's metrics endpoint shows them."""
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        try:
            text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
        except httpx.HTTPError:
            text = ""
        if "raydiant_images_rendered" in text and "raydiant_task_render_seconds" in text:
            break
        time.sleep(2)
    rendered = [line for line in text.splitlines() if line.startswith("ray_raydiant_images_rendered")
                or line.startswith("raydiant_images_rendered")]
    assert rendered, "raydiant_images_rendered not exported"
    assert any('model="flux-schnell"' in line for line in rendered)
    assert "raydiant_task_render_seconds_bucket" in text and "raydiant_queue_depth" in text
