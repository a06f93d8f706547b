"""`raydiant render` as a user runs it: killed with SIGKILL mid-job and rerun, and its exit
status when the error budget is exceeded."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.storage.results import Storage
from jobs.output.layout import read_metadata
from serve.local.service import kill_session

RAYDIANT = str(Path(sys.executable).parent / "raydiant")
# A SIMULATED GPU (0.1 s a batch of two): slow enough to be killed mid-job, with no model to load.
SIMULATED = "models:\n  flux-schnell: {source: 'sim:flux', warmup: false, simulated: {base_s: 0.05, per_image_s: 0.025}}\n"


def render(*args: str, log: Path) -> subprocess.Popen:
    """`raydiant render ...` on the SIMULATED GPU, in its own session; output goes to files (a full
    pipe would block it)."""
    config = log.parent / "simulated.yaml"
    config.write_text(SIMULATED)
    return subprocess.Popen([RAYDIANT, "render", "--config", str(config), "--size", "256*256", "--steps", "2", *args],
                            stdout=open(log.with_suffix(".out"), "w"), stderr=open(log.with_suffix(".err"), "w"),
                            env=os.environ | {"RAY_DISABLE_USAGE_STATS": "1"}, start_new_session=True)


def finish(job: subprocess.Popen, log: Path, timeout_s: float = 300) -> tuple[int, str, str]:
    job.wait(timeout=timeout_s)
    return job.returncode, log.with_suffix(".out").read_text(), log.with_suffix(".err").read_text()


def test_sigkill_mid_job_then_rerun_completes_exactly_once(tmp_path):
    rows = [{"id": f"row-{i}", "prompt": f"prompt {i}", "n": 2} for i in range(30)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    out = tmp_path / "out"
    args = ["-i", str(tmp_path / "in.parquet"), "-o", str(out), "--batch-size", "2", "--shard-size", "4"]
    job = render(*args, log=tmp_path / "first")
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("stats/*.json")):
            assert job.poll() is None, (tmp_path / "first.err").read_text()
            assert time.monotonic() < deadline, "no shard committed in time"
            time.sleep(0.1)
    finally:
        kill_session(job.pid)  # the CLI, its Ray cluster and workers: mid-job, no cleanup
        job.wait()
    committed_before = read_metadata(Storage(str(out))).num_rows
    assert 0 < committed_before < 60
    # Units the killed run finished whose shard it did not commit yet: the rerun reuses them.
    in_parts = sum(pq.read_metadata(part).num_rows for part in out.glob("parts/*/*.parquet")
                   if not (out / "stats" / f"{part.parent.name}.json").exists())

    rerun = render(*args, log=tmp_path / "rerun")
    returncode, stdout, stderr = finish(rerun, tmp_path / "rerun")
    assert returncode == 0, stderr
    table = read_metadata(Storage(str(out))).to_pylist()
    keys = [r["key"] for r in table]
    assert len(keys) == 60 and len(set(keys)) == 60  # every image, once
    assert all(r["error"] is None and (out / r["path"]).is_file() for r in table)
    assert len(list((out / "images").rglob("*.png"))) == 60  # no orphan files
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:06d}" for i in range(15)]  # 4 a folder
    done = stdout.replace("\n", " ")
    assert f"{60 - committed_before - in_parts} rendered" in done
    assert f"{committed_before + in_parts} already done" in done


def test_error_budget_exceeded_exits_nonzero(tmp_path):
    rows = [{"prompt": "fine"}, {"prompt": None}, {"prompt": "also fine"}]
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([("prompt", pa.string())])), tmp_path / "in.parquet")
    job = render("-i", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "out"), "--max-errors", "0",
                 log=tmp_path / "job")
    returncode, _, stderr = finish(job, tmp_path / "job")
    assert returncode == 2
    assert "1 of 3 images failed, over the error budget" in stderr and "Traceback" not in stderr
    # A quiet terminal: the plan, the bar and the outcome; Ray's own lines are in the log it names.
    assert "render actors:" in stderr
    assert not any(noise in stderr for noise in ("INFO", "core_worker", "Progress bars disabled")), stderr
    log = Path(re.search(r"Ray's output: (\S+\.log)", stderr)[1])
    assert "streaming_executor" in log.read_text()


def test_bad_arguments_are_one_line(tmp_path):
    for args, message in [(["-i", str(tmp_path / "none.parquet"), "-o", str(tmp_path / "o")], "no Parquet input"),
                          (["-i", "x", "-o", "y", "--concurrency", "3,1"], "concurrency must be MIN,MAX"),
                          (["-i", "x", "-o", "y", "--format", "zip"], "format")]:
        job = render(*args, log=tmp_path / "job")
        returncode, _, stderr = finish(job, tmp_path / "job", 120)
        assert returncode == 2 and message in stderr and "Traceback" not in stderr, stderr
