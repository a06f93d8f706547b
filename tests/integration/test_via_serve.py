"""`raydiant render --via-serve`: a batch job rendering through a running Serve app's replicas,
beside the app's own (interactive) requests. One service for the module; the SIMULATED GPUs
record every device batch with its prompts, so ordering is read from the device's own record.

- The job's pixels equal single renders (tiny FLUX), and a wrong app name fails naming the apps.
- Beside online traffic: the job's output is exact (every row once, no error), and each online
  request starts on the device within two device batches of being sent (the batch in progress,
  plus the ingress's hop), in a batch of its own (`mixed_batches` off, the default).
- With `mixed_batches` on, an online task that shares a device batch with job images and is
  canceled while it runs ends CANCELED with no file, and the batch runs on for the job's images.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster.doubles.simulated_gpu import read_busy_intervals
from cluster.engine.renderer import Renderer
from cluster.spec.request import RenderRequest
from cluster.storage.results import Storage
from jobs.output.layout import read_metadata
from tests.conftest import pixels
from tests.multinode import wait_until
from tests.servers import raydiant_service

KEY = "via-serve-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CONFIG = """
models:
  flux-schnell: {{source: "tiny:flux", warmup: false}}
  # SIMULATED GPUs, batches of 4. sim-apart: 1.4 s a batch. sim-mixed: 0.5 s an image, 20 steps of
  # 0.1 s for a batch of 4, so a task can be canceled while it runs.
  sim-apart: {{source: "sim:flux", like: flux-schnell, warmup: false, simulated: {{base_s: 0.2, per_image_s: 0.3}}}}
  sim-mixed: {{source: "sim:flux", like: flux-schnell, warmup: false, simulated: {{base_s: 0, per_image_s: 0.5}}}}
serve:
  rate_limit: {{requests_per_second: 100, burst: 1000}}
  deployments:
    sim-apart: {{max_ongoing_requests: 12}}
    sim-mixed: {{max_ongoing_requests: 12, mixed_batches: true}}
tasks: {{path: "{work}/tasks.sqlite"}}
storage: {{root: "{work}/results", signing_key_file: "{work}/signing.key"}}
"""
RAYDIANT = str(Path(sys.executable).parent / "raydiant")


class ViaServe:
    def __init__(self, url: str, work: Path, address: str):
        self.url, self.work, self.address = url, work, address

    def render(self, tmp_path: Path, *args: str, wait: bool = True):
        command = [RAYDIANT, "render", "--via-serve", "--address", self.address, "--config",
                   str(self.work / "config.yaml"), *args]
        env = os.environ | {"RAY_AUTH_MODE": "token"}  # Ray's default token auth
        if wait:
            return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        return subprocess.Popen(command, stdout=open(tmp_path / "job.log", "w"), stderr=subprocess.STDOUT, env=env)

    def batches(self) -> list[dict]:
        """Every device batch of the SIMULATED GPUs, in start order."""
        return sorted((b for record in read_busy_intervals(self.work / "sim").values() for b in record),
                      key=lambda b: b["start"])


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    work = tmp_path_factory.mktemp("via-serve")
    (work / "sim").mkdir()
    with raydiant_service(work, CONFIG.format(work=work), api_keys=KEY,
                          env={"RAYDIANT_SIM_DIR": str(work / "sim")}):
        address = None
        for _ in range(60):  # the line follows right after the app is up
            if found := re.search(r"Ray cluster: (\S+)", (work / "serve.log").read_text()):
                address = found.group(1)
                break
            time.sleep(0.5)
        assert address, "raydiant serve did not print its Ray cluster address"
        url = re.search(r"serving on (http://\S+)", (work / "serve.log").read_text()).group(1)
        yield ViaServe(url, work, address)


def prompts(path: Path, count: int, model: str) -> Path:
    pq.write_table(pa.table({"id": [f"{model}-{i}" for i in range(count)], "prompt": [f"{model} job {i}" for i in range(count)],
                             "model": [model] * count}), path)
    return path


def exact_output(out: Path, count: int) -> None:
    rows = read_metadata(Storage(str(out))).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(f"{rows[0]['model']}-{i}" for i in range(count))
    assert all(r["error"] is None and r["path"] for r in rows)


def create(service: ViaServe, model: str, prompt: str, asynchronous: bool, **parameters) -> dict:
    answer = httpx.post(f"{service.url}/api/v1/services/aigc/text2image/image-synthesis", timeout=120,
                        headers=AUTH | ({"X-DashScope-Async": "enable"} if asynchronous else {}),
                        json={"model": model, "input": {"prompt": prompt},
                              "parameters": {"size": "1024*1024", "steps": 4} | parameters})
    assert answer.status_code == 200, answer.text
    return answer.json()["output"]


@contextlib.contextmanager
def job_on_the_device(service: ViaServe, tmp_path: Path, rows: int, model: str, steps: int):
    """A via-serve job of `rows` prompts, yielded once its first batch is on the device; it must
    end by itself (rc 0) in the block, and is killed whatever happens."""
    job = service.render(tmp_path, "-i", str(prompts(tmp_path / "in.parquet", rows, model)),
                         "-o", str(tmp_path / "out"), "--size", "1024*1024", "--steps", str(steps), wait=False)
    try:
        wait_until(lambda: any(f"{model} job 0" in b["prompts"] for b in service.batches()), 120,
                   "the job on the device")
        yield job
    finally:
        job.kill()


def finished(job, tmp_path: Path) -> None:
    assert job.wait(timeout=300) == 0, (tmp_path / "job.log").read_text()[-3000:]


def test_job_renders_through_running_service(service, tmp_path, local_config):
    pq.write_table(pa.table({"id": ["a", "b"], "prompt": ["a fox", "a cat"], "seed": [3, 8], "n": [2, 1]}),
                   tmp_path / "in.parquet")
    wrong = service.render(tmp_path, "--serve-app", "nope", "-i", str(tmp_path / "in.parquet"),
                           "-o", str(tmp_path / "wrong"))
    assert wrong.returncode == 2, wrong.stderr[-3000:]
    assert "no Serve application 'nope' on this cluster; applications there: raydiant" in wrong.stderr
    job = service.render(tmp_path, "-i", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "out"),
                         "--size", "256*256", "--steps", "2")
    assert job.returncode == 0, job.stderr[-3000:]
    rows = sorted(read_metadata(Storage(str(tmp_path / "out"))).to_pylist(), key=lambda r: (r["id"], r["index"]))
    assert [(r["id"], r["index"], r["seed"]) for r in rows] == [("a", 0, 3), ("a", 1, 4), ("b", 0, 8)]
    renderer = Renderer(local_config.spec("flux-schnell").model_copy(update={"warmup": False}), device="cpu")
    for row in rows:
        [single] = renderer.render([RenderRequest(model="flux-schnell", prompt=row["prompt"], seed=row["seed"],
                                                  width=256, height=256, steps=2)])
        assert np.array_equal(pixels((tmp_path / "out" / row["path"]).read_bytes()), pixels(single.image))


def test_online_requests_go_first_beside_a_job_and_the_job_is_exact(service, tmp_path):
    sent = {}
    with job_on_the_device(service, tmp_path, 48, "sim-apart", steps=4) as job:
        for k in range(4):
            sent[f"online {k}"] = time.time()
            assert create(service, "sim-apart", f"online {k}", asynchronous=False)["task_status"] == "SUCCEEDED"
        finished(job, tmp_path)
    exact_output(tmp_path / "out", 48)
    batches = service.batches()
    for prompt, at in sent.items():
        [own] = [b for b in batches if prompt in b["prompts"]]
        assert own["prompts"] == [prompt]  # a batch of its own: no job image slows it
        started_between = [b for b in batches if at < b["start"] < own["start"]]
        # Not timed against a clock: counted in device batches (at most the one in progress when
        # it arrived, plus one that may start during the ingress's hop on a loaded machine).
        assert len(started_between) <= 2, (prompt, [b["prompts"] for b in started_between])


def test_a_canceled_online_task_in_a_batch_shared_with_job_images(service, tmp_path):
    with job_on_the_device(service, tmp_path, 16, "sim-mixed", steps=20) as job:
        task_id = create(service, "sim-mixed", "online canceled", asynchronous=True, steps=20)["task_id"]

        def running() -> bool:
            output = httpx.get(f"{service.url}/api/v1/tasks/{task_id}", headers=AUTH, timeout=30).json()["output"]
            assert output["task_status"] in ("PENDING", "RUNNING"), output
            return output["task_status"] == "RUNNING"

        wait_until(running, 60, "the online task RUNNING", every_s=0.05)
        canceled = httpx.post(f"{service.url}/api/v1/tasks/{task_id}/cancel", headers=AUTH, timeout=30)
        assert canceled.status_code == 200, canceled.text
        finished(job, tmp_path)
    output = httpx.get(f"{service.url}/api/v1/tasks/{task_id}", headers=AUTH, timeout=30).json()["output"]
    assert output["task_status"] == "CANCELED"
    assert not list((service.work / "results" / "tasks" / task_id).glob("*.png"))
    # The batch it started in held job images too (how many were waiting then depends on where
    # the job's unit was: at least one), and ran all its steps for them after the cancel.
    [shared] = [b for b in service.batches() if "online canceled" in b["prompts"]]
    assert len(shared["prompts"]) >= 2 and shared["steps_done"] == shared["steps"] == 20, shared
    exact_output(tmp_path / "out", 16)
