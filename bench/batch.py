"""Batch job marginal throughput vs a bare diffusers loop, same model, shape and batch size.

    .venv/bin/python bench/batch.py [--small 48] [--large 336] [--size 512] [--batch-size 4]

Fixed start-up (Ray, actor start, model load) is subtracted by running two input sizes:
marginal img/s = (large - small) / (t_large - t_small). The bare loop is `bench/engine.py`'s:
one pipeline call per batch, one generator per image, PNG bytes out, no storage.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bench.engine import bare_loop
from cluster.cli import quiet_libraries
from cluster.engine.renderer import Renderer
from cluster.runtime.local_ray import connect
from cluster.spec.config import load_config
from jobs.driver.job import run_job
from jobs.driver.spec import JobSpec

MODEL, STEPS = "flux-schnell", 4


def bare_ips(size: int, batch: int, images: int) -> float:
    spec = load_config().spec(MODEL).model_copy(update={"warmup": False})
    pipeline = Renderer(spec).pipeline  # loaded through the same code; batch-invariance hooks are harmless
    bare = type(pipeline).from_pretrained(pipeline.config._name_or_path)
    bare.set_progress_bar_config(disable=True)
    bare_loop(bare, ["warm"] * batch, list(range(batch)), size, STEPS, 3.5)
    started = time.perf_counter()
    for start in range(0, images, batch):
        bare_loop(bare, [f"p{i}" for i in range(batch)], list(range(start, start + batch)), size, STEPS, 3.5)
    return images / (time.perf_counter() - started)


def job_seconds(work: Path, rows: int, size: int, batch: int) -> float:
    pq.write_table(pa.table({"prompt": [f"prompt {i}" for i in range(rows)]}), work / f"in{rows}.parquet")
    spec = JobSpec(input=str(work / f"in{rows}.parquet"), output=str(work / f"out{rows}"), batch_size=batch,
                   defaults={"width": size, "height": size, "steps": STEPS})
    started = time.perf_counter()
    summary = run_job(spec)
    assert summary.rendered == rows
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=48)
    parser.add_argument("--large", type=int, default=336)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    quiet_libraries()
    bare = bare_ips(args.size, args.batch_size, args.large - args.small)
    with connect():  # a private Ray head on free ports
        work = Path(tempfile.mkdtemp(prefix="raydiant-batch-bench-"))
        job_seconds(work, 8, args.size, args.batch_size)  # one-time costs (imports, page cache) out of the way
        small = job_seconds(work, args.small, args.size, args.batch_size)
        large = job_seconds(work, args.large, args.size, args.batch_size)
    marginal = (args.large - args.small) / (large - small)
    print(f"\n{MODEL} (tiny) {args.size}*{args.size}, {STEPS} steps, batch {args.batch_size}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"bare diffusers loop:        {bare:6.2f} img/s")
    print(f"job, {args.small:4d} rows:             {small:6.1f} s")
    print(f"job, {args.large:4d} rows:             {large:6.1f} s")
    print(f"job marginal throughput:    {marginal:6.2f} img/s   ratio {marginal / bare:.3f}")


if __name__ == "__main__":
    main()
