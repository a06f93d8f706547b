"""Streaming check: peak memory of the batch job's driver and workers at 20k vs 200k rows.

    .venv/bin/python -m bench.streaming [--rows 20000,200000] [--batch-size 256]

Uses the FAKE engine (`fake:flux`, solid colours, no model) so that the plumbing, not the model,
sets the pace. Each run is `raydiant render` in its own process session; every process of that
session is sampled (psutil RSS) twice a second. Flat means: 10x the rows, about the same peaks.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from cluster.processes import session_pids

CONFIG = "models:\n  flux-schnell: {source: 'fake:flux'}\n"


def write_prompts(path: Path, rows: int) -> None:
    writer = None
    for start in range(0, rows, 50_000):  # written in chunks: the input itself is never in memory
        count = min(50_000, rows - start)
        table = pa.table({"id": [f"row-{i}" for i in range(start, start + count)],
                          "prompt": [f"prompt number {i}" for i in range(start, start + count)]})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def run(work: Path, rows: int, batch_size: int) -> dict[str, float]:
    write_prompts(work / f"in{rows}.parquet", rows)
    (work / "config.yaml").write_text(CONFIG)
    command = [str(Path(sys.executable).parent / "raydiant"), "render", "--config", str(work / "config.yaml"),
               "-i", str(work / f"in{rows}.parquet"), "-o", str(work / f"out{rows}"), "--format", "parquet",
               "--size", "256*256", "--batch-size", str(batch_size)]
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    peaks = {"driver": 0.0, "largest other process": 0.0, "all processes": 0.0}

    def sample() -> None:
        while job.poll() is None:
            sizes = {}
            for pid in session_pids(job.pid):
                try:
                    sizes[pid] = psutil.Process(pid).memory_info().rss / 2**20
                except psutil.Error:
                    pass
            peaks["driver"] = max(peaks["driver"], sizes.get(job.pid, 0))
            others = [v for p, v in sizes.items() if p != job.pid]
            peaks["largest other process"] = max(peaks["largest other process"], max(others, default=0))
            peaks["all processes"] = max(peaks["all processes"], sum(sizes.values()))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample)
    started = time.monotonic()
    sampler.start()
    job.wait()
    sampler.join()
    assert job.returncode == 0, f"job failed ({job.returncode})"
    peaks["seconds"] = time.monotonic() - started
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="20000,200000")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="raydiant-streaming-"))
    results = {rows: run(work, rows, args.batch_size) for rows in map(int, args.rows.split(","))}
    print(f"\nFAKE engine, parquet output, 256*256, batch {args.batch_size}; peak RSS in MiB")
    print(f"{'rows':>8} {'driver':>8} {'largest worker':>15} {'all processes':>14} {'seconds':>8}")
    for rows, peak in results.items():
        print(f"{rows:>8} {peak['driver']:>8.0f} {peak['largest other process']:>15.0f} "
              f"{peak['all processes']:>14.0f} {peak['seconds']:>8.0f}")


if __name__ == "__main__":
    main()
