"""Streaming check: the batch job at 10x the rows costs the driver the same memory, and a rerun
of a finished output or a resume after a kill reads what it needs, not every row.

    .venv/bin/python -m bench.streaming [--rows 100000,1000000] [--formats webdataset,parquet]

Uses the FAKE engine (`fake:flux`, solid colours, no model) so that the plumbing, not the model,
sets the pace; GPU batch size 4, shard size 1000, 256*256. Each run is `raydiant render` in its
own process session; every process of that session is sampled (psutil RSS) twice a second.
Per size and format it measures: the first run (peak RSS of the driver and of all processes,
images/s, files written), a rerun of the finished output (nothing to do), and a run killed
(SIGKILL, its whole session) at about half way and then resumed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from cluster.runtime.processes import kill_session, session_pids

CONFIG = "models:\n  flux-schnell: {source: 'fake:flux', warmup: false}\n"
RAYDIANT = str(Path(sys.executable).parent / "raydiant")


def write_prompts(path: Path, rows: int) -> None:
    writer = None
    for start in range(0, rows, 50_000):  # written in chunks: the input itself is never in memory
        count = min(50_000, rows - start)
        table = pa.table({"id": [f"row-{i}" for i in range(start, start + count)],
                          "prompt": [f"prompt number {i}" for i in range(start, start + count)]})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=50_000)
    writer.close()


class Sampled:
    """`raydiant render ...` in its own session, its memory sampled until it ends."""

    def __init__(self, args: list[str]):
        self.job = subprocess.Popen([RAYDIANT, "render", *args], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True,
                                    env=os.environ | {"RAY_DISABLE_USAGE_STATS": "1"})
        self.started = time.monotonic()
        self.driver_mib = self.all_mib = 0.0
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def _sample(self) -> None:
        while self.job.poll() is None:
            sizes = {}
            for pid in session_pids(self.job.pid):
                try:
                    sizes[pid] = psutil.Process(pid).memory_info().rss / 2**20
                except psutil.Error:
                    pass
            self.driver_mib = max(self.driver_mib, sizes.get(self.job.pid, 0))
            self.all_mib = max(self.all_mib, sum(sizes.values()))
            time.sleep(0.5)

    def wait(self) -> float:
        self.job.wait()
        self.sampler.join()
        if self.job.returncode != 0:
            raise SystemExit(f"raydiant render failed ({self.job.returncode})")
        return time.monotonic() - self.started


def committed_shards(out: Path) -> int:
    return len(list((out / "stats").glob("*.json"))) if (out / "stats").exists() else 0


def run(work: Path, rows: int, fmt: str) -> dict[str, float]:
    prompts = work / f"in{rows}.parquet"
    if not prompts.exists():
        write_prompts(prompts, rows)
    out, resumed = work / f"out-{fmt}-{rows}", work / f"resumed-{fmt}-{rows}"
    args = ["--config", str(work / "config.yaml"), "-i", str(prompts), "--format", fmt, "--size", "256*256",
            "--batch-size", "4", "--shard-size", "1000"]
    first = Sampled([*args, "-o", str(out)])
    seconds = first.wait()
    files = sum(1 for p in out.rglob("*") if p.is_file())
    rerun = Sampled([*args, "-o", str(out)]).wait()

    killed = Sampled([*args, "-o", str(resumed)])
    shards = -(-rows // 1000)
    while committed_shards(resumed) < shards // 2:
        time.sleep(0.2)
    kill_session(killed.job.pid)  # the CLI and its private Ray head: no clean-up
    killed.job.wait()
    at_kill = committed_shards(resumed)
    resume = Sampled([*args, "-o", str(resumed)])
    resume_s = resume.wait()
    assert committed_shards(resumed) == shards, "the resumed output is incomplete"
    return {"driver": first.driver_mib, "all": first.all_mib, "images/s": rows / seconds, "files": files,
            "seconds": seconds, "rerun": rerun, "killed at": at_kill / shards, "resume": resume_s,
            "resume driver": resume.driver_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="100000,1000000")
    parser.add_argument("--formats", default="webdataset,parquet")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="raydiant-streaming-"))
    (work / "config.yaml").write_text(CONFIG)
    results = {}
    for rows in map(int, args.rows.split(",")):
        for fmt in args.formats.split(","):
            results[(rows, fmt)] = run(work, rows, fmt)
            print(rows, fmt, results[(rows, fmt)], flush=True)
    print("\nFAKE engine, 256*256, batch 4, shard 1000; peak RSS in MiB, times in s")
    print(f"{'rows':>8} {'format':>10} {'driver':>7} {'all':>6} {'img/s':>6} {'files':>6} {'run':>6} "
          f"{'rerun':>6} {'killed':>6} {'resume':>7} {'resume driver':>13}")
    for (rows, fmt), r in results.items():
        print(f"{rows:>8} {fmt:>10} {r['driver']:>7.0f} {r['all']:>6.0f} {r['images/s']:>6.0f} {r['files']:>6} "
              f"{r['seconds']:>6.0f} {r['rerun']:>6.1f} {r['killed at']:>6.0%} {r['resume']:>7.0f} "
              f"{r['resume driver']:>13.0f}")
    sizes = sorted({rows for rows, _ in results})
    for fmt in args.formats.split(","):
        if len(sizes) > 1:
            small, large = results[(sizes[0], fmt)], results[(sizes[-1], fmt)]
            print(f"{fmt}: driver peak at {sizes[-1]} / at {sizes[0]} rows: {large['driver'] / small['driver']:.2f}x; "
                  f"all processes {large['all'] / small['all']:.2f}x")


if __name__ == "__main__":
    main()
