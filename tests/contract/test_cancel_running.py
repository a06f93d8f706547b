"""Cancel a RUNNING task: alone in its batch, the render stops at the next step (the device takes
the next task at once); in a shared batch, only its images are dropped and the others' pixels
equal single renders. DashScope's own cancel call, as the SDK sends it."""

from __future__ import annotations

import io
import time
from pathlib import Path

import dashscope
import httpx
import numpy as np
import pytest
from dashscope import ImageSynthesis
from PIL import Image

from cluster.doubles.simulated_gpu import read_busy_intervals
from tests.contract.conftest import CANCEL_KEY


@pytest.fixture(autouse=True)
def sdk(base_url):
    dashscope.base_http_api_url = base_url
    dashscope.api_key = CANCEL_KEY
    yield


def until(task_id: str, ready, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = ImageSynthesis.fetch(task_id)
        assert answer.status_code == 200, f"fetch refused: {answer.code} {answer.message}"
        output = dict(answer.output)
        if ready(output):
            return output
        assert output["task_status"] not in ("FAILED", "CANCELED"), output
        time.sleep(0.05)  # 20 fetches a second at most: the key's budget is 200 in any 100 s
    raise AssertionError(f"task {task_id}: condition not met in {timeout_s} s; last {output}")


def files_of(service, task_id: str) -> list[str]:
    folder = Path(service.work) / "results" / "tasks" / task_id
    return sorted(p.name for p in folder.glob("*.png")) if folder.exists() else []


def pixels(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(httpx.get(url, timeout=30).content)).convert("RGB"))


def device_batches(service, prompt: str) -> list[dict]:
    """The SIMULATED GPU's own record of every batch that held `prompt`."""
    return [batch for batches in read_busy_intervals(service.sim_dir).values() for batch in batches
            if prompt in batch["prompts"]]


def test_running_task_alone_stops_within_a_step(service):
    # SIMULATED GPU: 20 steps of 0.1 s. Prompts unique to this run find its batches in the record.
    doomed_prompt, next_prompt = f"doomed {time.time_ns()}", f"next {time.time_ns()}"
    doomed = ImageSynthesis.async_call(model="sim-steps", prompt=doomed_prompt, steps=20, size="768*512")
    running = until(doomed.output.task_id, lambda o: o.get("progress", {}).get("step", 0) >= 2)
    assert running["task_status"] == "RUNNING" and running["progress"]["step"] < 20  # the fault hits mid-render
    assert ImageSynthesis.cancel(doomed).status_code == 200
    assert ImageSynthesis.fetch(doomed).output.task_status == "CANCELED"
    nxt = ImageSynthesis.async_call(model="sim-steps", prompt=next_prompt, steps=20, size="768*512")
    assert ImageSynthesis.wait(nxt).output.task_status == "SUCCEEDED"
    # The device's record: the canceled render stopped early, then the device ran the next task.
    [stopped] = device_batches(service, doomed_prompt)
    [after] = device_batches(service, next_prompt)
    print(f"canceled render ran {stopped['steps_done']} of 20 steps; the device took the next task "
          f"{after['start'] - stopped['end']:.2f} s after it stopped")
    assert stopped["steps_done"] < stopped["steps"] == 20 and after["steps_done"] == 20
    assert after["start"] >= stopped["end"]  # one device: the next task waited for nothing but the stop
    final = dict(ImageSynthesis.fetch(doomed).output)
    assert final["task_status"] == "CANCELED" and not final.get("results")
    assert files_of(service, doomed.output.task_id) == []


def test_canceling_one_task_of_a_shared_batch_spares_the_others(service):
    size, steps = "768*512", 100
    blocker = ImageSynthesis.async_call(model="flux-schnell", prompt="blocker", steps=steps, size=size)
    until(blocker.output.task_id, lambda o: o["task_status"] == "RUNNING")
    # These three arrive while the device is busy, so they form the next batch together.
    tasks = [ImageSynthesis.async_call(model="flux-schnell", prompt=f"shared {i}", steps=steps, size=size,
                                       seed=100 + i) for i in range(3)]
    ids = [t.output.task_id for t in tasks]
    until(ids[1], lambda o: o.get("progress", {}).get("step", 0) >= 5)
    started = [dict(ImageSynthesis.fetch(i).output) for i in ids]
    assert [o["task_status"] for o in started] == ["RUNNING"] * 3 and started[1]["progress"]["step"] < steps
    assert ImageSynthesis.cancel(tasks[1]).status_code == 200

    survivors = [ImageSynthesis.wait(tasks[i]).output for i in (0, 2)]
    assert [o.task_status for o in survivors] == ["SUCCEEDED", "SUCCEEDED"]
    assert ImageSynthesis.fetch(tasks[1]).output.task_status == "CANCELED"
    assert files_of(service, ids[1]) == []
    assert ImageSynthesis.wait(blocker).output.task_status == "SUCCEEDED"
    # They did share one device batch: the replica said so when each started.
    assert _batch_sizes(service, ids) == [3, 3, 3]
    for i, output in zip((0, 2), survivors):
        alone = ImageSynthesis.call(model="flux-schnell", prompt=f"shared {i}", steps=steps, size=size, seed=100 + i)
        assert alone.output.task_status == "SUCCEEDED"
        assert np.array_equal(pixels(output.results[0].url), pixels(alone.output.results[0].url))


def _batch_sizes(service, ids: list[str]) -> list[int | None]:
    import asyncio

    from serve.tasks.store.sqlite import SQLiteTaskStore

    async def read() -> list[int | None]:
        store = SQLiteTaskStore(Path(service.work) / "tasks.sqlite")
        try:
            return [(await store.get(i)).batch_size for i in ids]
        finally:
            await store.close()

    return asyncio.run(read())
