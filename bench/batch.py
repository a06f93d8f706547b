"""The batch job, measured side by side in one run: throughput against a bare loop, device
utilization on a multi-node cluster, and start-up.

    .venv/bin/python -m bench.batch [--fake-sizes 32,128,1000,10000] [--tiny-sizes 32,128,1000]
                                    [--sim-images 256] [--sim-nodes 2,4] [--shard-sizes 1000,16]
                                    [--parts marginal,cluster,startup]

1. Marginal throughput, FAKE engine (`fake:flux`: solid colours, no engine time, so the
   plumbing sets the pace) and tiny (`tiny:` FLUX, random weights, on the CPU): the job's
   img/s beyond its fixed cost, (N - 8) / (t(N) - t(8)) with t(8) an 8-image job's time, against
   a bare loop on the same pipeline (one call per batch, PNG bytes out, no storage). The job
   writes every image twice (its unit's part, then its shard) and the loop never writes.
2. Utilization, SIMULATED GPU (`sim:flux`, 0.05 s + 0.10 s per image, batches of 4: one device
   does 8.9 img/s at most) on a `ray.cluster_utils` cluster of 2 and 4 fake-GPU nodes (each
   with 1 CPU; the head has none, or, for 4 nodes, a GPU of its own: at most 4 raylets here):
   busy time / (devices x the span from the first device batch to the last), at
   `--shard-size` 1000 and 16; the tail: how long before the last batch ended each device
   ran dry, against one unit's device time.
3. Start-up: `raydiant render` on the embedded default (local Ray, tiny models), 32 rows at
   256*256, from the command to the first unit's part in storage (its first two device batches
   rendered and written), and to the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bench.engine import bare_loop
from cluster.cli import quiet_libraries
from cluster.doubles.simulated_gpu import read_busy_intervals
from cluster.engine.renderer import Renderer
from cluster.spec.config import load_config

MODEL, BATCH = "flux-schnell", 4
SIZE, STEPS = 256, 2  # of parts 1 and 3 (--size, --steps)
FAKE = "models:\n  flux-schnell: {source: 'fake:flux', warmup: false}\n"
BASE_S, PER_IMAGE_S = 0.05, 0.10
SIMULATED = (f"models:\n  flux-schnell: {{source: 'sim:flux', "
             f"simulated: {{base_s: {BASE_S}, per_image_s: {PER_IMAGE_S}}}}}\n")
RAYDIANT = str(Path(sys.executable).parent / "raydiant")
FIXED_ROWS = 8


def prompts(work: Path, rows: int) -> Path:
    path = work / f"in{rows}.parquet"
    if not path.exists():
        pq.write_table(pa.table({"id": [f"r{i}" for i in range(rows)], "prompt": [f"prompt {i}" for i in range(rows)]}),
                       path)
    return path


# --- 1. marginal throughput against a bare loop -------------------------------------------------


def bare_ips(config: str | None, images: int) -> float:
    spec = load_config(config).spec(MODEL).model_copy(update={"warmup": False})
    pipeline = Renderer(spec).pipeline  # loaded through the same code
    if hasattr(pipeline, "config"):  # a diffusers pipeline: a fresh one, without the engine's hooks
        pipeline = type(pipeline).from_pretrained(pipeline.config._name_or_path)
        pipeline.set_progress_bar_config(disable=True)
    bare_loop(pipeline, ["warm"] * BATCH, list(range(BATCH)), SIZE, STEPS, 3.5)
    started = time.perf_counter()
    for start in range(0, images, BATCH):
        bare_loop(pipeline, [f"p{i}" for i in range(BATCH)], list(range(start, start + BATCH)), SIZE, STEPS, 3.5)
    return images / (time.perf_counter() - started)


def job_seconds(work: Path, config: str | None, rows: int, name: str) -> float:
    from jobs.driver.job import run_job
    from jobs.driver.spec import JobSpec

    spec = JobSpec(input=str(prompts(work, rows)), output=str(work / f"out-{name}-{rows}"), config=config,
                   batch_size=BATCH, defaults={"width": SIZE, "height": SIZE, "steps": STEPS})
    started = time.perf_counter()
    summary = run_job(spec)
    assert summary.rendered == rows, summary
    return time.perf_counter() - started


def marginal(work: Path, engine: str, config: str | None, sizes: list[int]) -> None:
    from cluster.runtime.local_ray import connect

    bare = bare_ips(config, max(64, min(sizes[-1], 512)))
    print(f"\n{engine}: {MODEL} {SIZE}*{SIZE}, {STEPS} steps, batch {BATCH}; bare loop {bare:.1f} img/s", flush=True)
    with connect():
        job_seconds(work, config, FIXED_ROWS, f"{engine}-warm")  # one-time costs (imports, page cache) out of the way
        fixed = min(job_seconds(work, config, FIXED_ROWS, f"{engine}-fixed{i}") for i in range(2))
        print(f"  fixed cost (an {FIXED_ROWS}-image job): {fixed:.1f} s", flush=True)
        for rows in sizes:
            seconds = job_seconds(work, config, rows, engine)
            job = (rows - FIXED_ROWS) / (seconds - fixed)
            print(f"  {rows:6d} images: {seconds:7.1f} s   marginal {job:7.1f} img/s   job / bare {job / bare:.2f}",
                  flush=True)


# --- 2. utilization on a multi-node cluster ----------------------------------------------------


def cluster_utilization(work: Path, nodes: int, images: int, shard_sizes: list[int]) -> None:
    import ray

    from jobs.driver.job import run_job
    from jobs.driver.spec import JobSpec
    from tests.multinode import local_cluster, wait_until

    config = work / "simulated.yaml"
    config.write_text(SIMULATED)
    sim_dir = work / f"sim-{nodes}"
    sim_dir.mkdir()
    os.environ["RAYDIANT_SIM_DIR"] = str(sim_dir)  # the raylets, so the render actors, inherit it
    head_gpus = 1 if nodes > 3 else 0  # at most 4 raylets: the fourth device is the head's
    with local_cluster(head_gpus=head_gpus) as cluster:
        for _ in range(nodes - head_gpus):
            cluster.add_worker(num_cpus=2, num_gpus=1)
        cluster.wait_for_nodes()
        for shard_size in shard_sizes:
            # The last job's actors give their GPUs back as they exit, after the job ended: a job
            # measured before that would start with a device short.
            wait_until(lambda: ray.available_resources().get("GPU", 0) == nodes, 60, "every GPU free")
            before = set(read_busy_intervals(sim_dir))  # each job's actors are new pipelines, new files
            spec = JobSpec(input=str(prompts(work, images)), output=str(work / f"out-sim-{nodes}-{shard_size}"),
                           config=str(config), batch_size=BATCH, shard_size=shard_size,
                           defaults={"width": 1024, "height": 1024, "steps": 4})
            summary = run_job(spec)
            devices = {name: b for name, b in read_busy_intervals(sim_dir).items() if name not in before}
            report(nodes, shard_size, summary, devices, spec.unit_images(images, nodes))


def report(nodes: int, shard_size: int, summary, devices: dict[str, list[dict]], unit_images: int) -> None:
    batches = [b for intervals in devices.values() for b in intervals]
    first, last = min(b["start"] for b in batches), max(b["end"] for b in batches)
    busy = sum(b["end"] - b["start"] for b in batches)
    utilization = busy / (nodes * (last - first))
    ran_dry = sorted(last - max(b["end"] for b in intervals) for intervals in devices.values())
    unit_s = (unit_images // BATCH) * (BASE_S + PER_IMAGE_S * BATCH)
    best = nodes / (BASE_S / BATCH + PER_IMAGE_S)
    print(f"  {nodes} devices, --shard-size {shard_size:4d}: {len(devices)} rendered; "
          f"{summary.images_per_s:5.1f} img/s "
          f"whole job ({summary.images_per_s / best:.2f} of {best:.1f}); utilization {utilization:.3f}; "
          f"ran dry before the end: {', '.join(f'{s:.2f}' for s in ran_dry)} s (a unit: {unit_s:.2f} s)", flush=True)


# --- 3. start-up -------------------------------------------------------------------------------


def startup(work: Path) -> None:
    out = work / "out-startup"
    started = time.monotonic()
    job = subprocess.Popen([RAYDIANT, "render", "-i", str(prompts(work, 32)), "-o", str(out), "--size", "256*256",
                            "--steps", "2", "--batch-size", str(BATCH)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=os.environ | {"RAY_DISABLE_USAGE_STATS": "1"})
    first = None
    while job.poll() is None:
        if first is None and any(out.glob("parts/*/*.parquet")):
            first = time.monotonic() - started
        time.sleep(0.02)
    total = time.monotonic() - started
    assert job.returncode == 0, "raydiant render failed"
    print(f"\nstart-up, embedded default, 32 rows at {SIZE}*{SIZE}: first image {first:.1f} s, whole job {total:.1f} s")


def main() -> None:
    global SIZE, STEPS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fake-sizes", default="32,128,1000,10000")
    parser.add_argument("--tiny-sizes", default="32,128,1000")
    parser.add_argument("--sim-images", type=int, default=256)
    parser.add_argument("--sim-nodes", default="2,4")
    parser.add_argument("--shard-sizes", default="1000,16")
    parser.add_argument("--parts", default="marginal,cluster,startup")
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args()
    SIZE, STEPS = args.size, args.steps
    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="raydiant-batch-bench-"))
    parts = args.parts.split(",")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; work in {work}", flush=True)
    if "startup" in parts:
        startup(work)
    if "marginal" in parts:
        (work / "fake.yaml").write_text(FAKE)
        marginal(work, "FAKE", str(work / "fake.yaml"), [int(s) for s in args.fake_sizes.split(",")])
        marginal(work, "tiny", None, [int(s) for s in args.tiny_sizes.split(",")])
    if "cluster" in parts:
        print(f"\nSIMULATED GPU ({BASE_S:g} s + {PER_IMAGE_S:g} s an image, batch {BATCH}), {args.sim_images} images, "
              f"webdataset, multi-node cluster_utils", flush=True)
        for nodes in map(int, args.sim_nodes.split(",")):
            cluster_utilization(work, nodes, args.sim_images, [int(s) for s in args.shard_sizes.split(",")])


if __name__ == "__main__":
    main()
