"""`raydiant render` as a user runs it: killed with SIGKILL mid-job and rerun, and its exit
status when the error budget is exceeded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.storage import Storage
from jobs.output import read_metadata

RAYDIANT = str(Path(sys.executable).parent / "raydiant")


def render(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([RAYDIANT, "render", "--size", "256*256", "--steps", "2", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"RAY_DISABLE_USAGE_STATS": "1"}, start_new_session=True, **popen)


def test_sigkill_mid_job_then_rerun_completes_exactly_once(tmp_path):
    rows = [{"id": f"row-{i}", "prompt": f"prompt {i}", "n": 2} for i in range(30)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    out = tmp_path / "out"
    job = render("-i", str(tmp_path / "in.parquet"), "-o", str(out), "--batch-size", "2")
    deadline = time.monotonic() + 240
    while not list((out / "metadata").glob("part-*.parquet")) if (out / "metadata").exists() else True:
        assert job.poll() is None, job.stderr.read()
        assert time.monotonic() < deadline, "no batch committed in time"
        time.sleep(0.1)
    os.killpg(job.pid, signal.SIGKILL)  # the CLI, its Ray cluster and workers: mid-job, no cleanup
    job.wait()
    committed_before = read_metadata(Storage(str(out))).num_rows
    assert 0 < committed_before < 60

    rerun = render("-i", str(tmp_path / "in.parquet"), "-o", str(out), "--batch-size", "2")
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    table = read_metadata(Storage(str(out))).to_pylist()
    keys = [r["key"] for r in table]
    assert len(keys) == 60 and len(set(keys)) == 60  # every image, once
    assert all(r["error"] is None and (out / r["path"]).is_file() for r in table)
    assert len(list((out / "images").rglob("*.png"))) == 60  # no orphan files
    assert f"{committed_before} already done" in stdout.replace("\n", " ")


def test_error_budget_exceeded_exits_nonzero(tmp_path):
    rows = [{"prompt": "fine"}, {"prompt": None}, {"prompt": "also fine"}]
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([("prompt", pa.string())])), tmp_path / "in.parquet")
    job = render("-i", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "out"), "--max-errors", "0")
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 2
    assert "1 of 3 images failed, over the error budget" in stderr and "Traceback" not in stderr


def test_bad_arguments_are_one_line(tmp_path):
    for args, message in [(["-i", str(tmp_path / "none.parquet"), "-o", str(tmp_path / "o")], "no Parquet input"),
                          (["-i", "x", "-o", "y", "--concurrency", "3,1"], "concurrency must be MIN,MAX"),
                          (["-i", "x", "-o", "y", "--format", "zip"], "format")]:
        job = render(*args)
        _, stderr = job.communicate(timeout=120)
        assert job.returncode == 2 and message in stderr and "Traceback" not in stderr, stderr
