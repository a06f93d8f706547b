"""Progress, queue position and ETA as the real DashScope SDK reads them (`output.progress`,
`output.queue_position`, `output.eta_s`; the SDK keeps keys it does not know), and on AceData's
retrieve. The models are SIMULATED GPUs (named `sim-*`), one image per batch."""

from __future__ import annotations

import time

import dashscope
import httpx
import pytest
from dashscope import ImageSynthesis

from tests.contract.conftest import PROGRESS_KEY


@pytest.fixture(autouse=True)
def sdk(base_url):
    dashscope.base_http_api_url = base_url
    dashscope.api_key = PROGRESS_KEY
    yield


def watch(task_id: str, timeout_s: float = 60.0, every_s: float = 0.1) -> list[dict]:
    """Every output the SDK fetches for the task, until it ends (about 10 fetches a second: the
    key's rate limit is 200 requests in any 100 s)."""
    seen, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = ImageSynthesis.fetch(task_id)
        assert answer.status_code == 200, f"fetch refused: {answer.code} {answer.message}"
        output = dict(answer.output)
        seen.append(output)
        if output["task_status"] in ("SUCCEEDED", "FAILED", "CANCELED"):
            return seen
        time.sleep(every_s)
    raise AssertionError(f"task {task_id} did not end in {timeout_s} s; last: {seen[-1]}")


def test_progress_rises_to_every_step_with_an_eta():
    task = ImageSynthesis.async_call(model="sim-steps", prompt="progress", steps=20, size="768*512")
    seen = watch(task.output.task_id)
    running = [o for o in seen if o["task_status"] == "RUNNING" and "progress" in o]
    steps = [o["progress"]["step"] for o in running]
    print(f"steps seen while RUNNING: {steps}; ETAs {[o['eta_s'] for o in running]}")
    assert len(set(steps)) >= 3, f"too few progress reports: {steps}"  # 2 s render, 4 reports a second
    assert steps == sorted(steps) and all(o["progress"]["steps"] == 20 for o in running)
    etas = [o["eta_s"] for o in running]
    assert etas[0] > etas[-1] >= 0 and etas[0] <= 2.5  # 0.1 s a step measured, counting down
    assert seen[-1]["task_status"] == "SUCCEEDED" and seen[-1]["progress"] == {"step": 20, "steps": 20}


def test_queue_positions_count_down():
    tasks = [ImageSynthesis.async_call(model="sim-queue", prompt=f"queue {i}", size="768*512")
             for i in range(5)]
    last = tasks[-1].output.task_id
    seen = watch(last)
    positions = [o["queue_position"] for o in seen if o["task_status"] == "PENDING"]
    print(f"queue positions seen: {positions}")
    assert positions[0] >= 4, positions  # four ahead of it (one may have started already)
    assert positions == sorted(positions, reverse=True) and positions[-1] == 1, positions
    assert len(set(positions)) >= 3, positions
    assert all("queue_position" not in o for o in seen if o["task_status"] != "PENDING")
    assert seen[-1]["task_status"] == "SUCCEEDED"
    for task in tasks:
        assert ImageSynthesis.wait(task).output.task_status == "SUCCEEDED"


def test_acedata_retrieve_shows_progress(service):
    headers = {"authorization": f"Bearer {PROGRESS_KEY}"}
    with httpx.Client(base_url=service.url, headers=headers, timeout=30) as client:
        task_id = client.post("/flux/images", json={"action": "generate", "model": "sim-steps", "prompt": "p",
                                                    "size": "768x512", "async": True}).json()["task_id"]
        statuses, progress = set(), []
        for _ in range(200):
            item = client.post("/flux/tasks", json={"action": "retrieve", "id": task_id}).json()
            statuses.add(item["status"])
            if item["progress"]:
                progress.append(item["progress"]["step"])
            if item["response"] is not None:
                break
            time.sleep(0.1)
    assert item["status"] == "succeeded" and item["response"]["success"] is True
    assert {"running", "succeeded"} <= statuses and len(progress) >= 2 and progress == sorted(progress)
