"""Laptop submission to a real Ray head (`ray start --head`, dashboard on loopback)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from cluster.runtime.local_ray import private_head
from cluster.runtime.processes import free_port
from cluster.storage.results import Storage
from jobs.output.layout import read_metadata

BIN = Path(sys.executable).parent


@contextmanager
def ray_head(workdir: Path):
    """A private head on free loopback ports (dashboard included, for the Job Submission API);
    its jobs run with this venv's python. Yields the dashboard address."""
    dashboard = free_port()
    with private_head(num_cpus=2, dashboard_port=dashboard, log_path=workdir / "head.log"):
        address = f"http://127.0.0.1:{dashboard}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{address}/api/version", timeout=2).status_code in (200, 401):
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "ray head did not start: " + (workdir / "head.log").read_text()
            time.sleep(1)
        yield address


def raydiant(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    # Ray >= 2.5x clusters require a token; a laptop on the same machine reads ~/.ray/auth_token.
    env = os.environ | {"RAY_AUTH_MODE": "token"}
    return subprocess.run([str(BIN / "raydiant"), *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_submit_wait_then_jobs_list_status_logs(tmp_path):
    pq.write_table(pa.table({"prompt": ["a fox", "a cat", "a dog"]}), tmp_path / "in.parquet")
    out = tmp_path / "out"
    with ray_head(tmp_path) as address:
        for attempt in range(10):  # the head's job agent can need a few seconds after the dashboard
            done = raydiant("submit", "--address", address, "--wait", "--", "render", "-i", str(tmp_path / "in.parquet"),
                            "-o", str(out), "--size", "256*256", "--steps", "1")
            if "No available agent" not in done.stderr + done.stdout:
                break
            time.sleep(3)
        assert done.returncode == 0, done.stdout + done.stderr
        job_id = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("submitted "))
        assert "SUCCEEDED" in done.stdout.splitlines()[-1]
        assert read_metadata(Storage(str(out))).num_rows == 3

        listed = raydiant("jobs", "list", "--address", address)
        assert listed.returncode == 0 and job_id in listed.stdout
        status = raydiant("jobs", "status", job_id, "--address", address)
        assert status.stdout.strip() == "SUCCEEDED"
        logs = raydiant("jobs", "logs", job_id, "--address", address)
        assert "3 rendered" in logs.stdout

        failed = raydiant("submit", "--address", address, "--wait", "--", "render", "-i", str(tmp_path / "missing.parquet"),
                          "-o", str(out))
        assert failed.returncode == 1 and "FAILED" in failed.stdout

        long = raydiant("submit", "--address", address, "--", "render", "-i", str(tmp_path / "in.parquet"),
                        "-o", str(tmp_path / "slow"), "--n", "4", "--steps", "100")
        long_id = long.stdout.split()[-1]
        stopped = raydiant("jobs", "stop", long_id, "--address", address)
        assert stopped.returncode == 0 and stopped.stdout.strip() in {"stopped", "already finished"}
        for _ in range(60):
            status = raydiant("jobs", "status", long_id, "--address", address).stdout.strip()
            if status in {"STOPPED", "FAILED", "SUCCEEDED"}:
                break
            time.sleep(1)
        assert status == "STOPPED"


def test_unreachable_address_is_one_line():
    port = free_port()
    out = raydiant("jobs", "list", "--address", f"http://127.0.0.1:{port}", timeout=120)
    assert out.returncode == 2 and "cannot reach the Ray cluster" in out.stderr and "Traceback" not in out.stderr
