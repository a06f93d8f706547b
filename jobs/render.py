"""The batch render job: Parquet prompts -> images + metadata, streaming, resumable.

read_parquet -> expand rows into images (seeds fixed, bad rows become error items, committed
images dropped) -> map_batches over an autoscaling pool of `RenderWorker` actors placed from the
cluster's GPUs (each commits its batch under content-derived names) -> the driver counts what
comes back for progress, then `finalize()` makes the output read exactly once and
summary.json is written. Large inputs stream (never materialised); inputs of at most
SMALL_INPUT_ROWS prompts are split into blocks first, so that every render actor gets work.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable

import fsspec
import pyarrow.parquet as pq

from cluster.config import load_config
from cluster.placement import ActorPool, gpu_capacity, plan_actor_pool, unschedulable
from cluster.storage import Storage
from jobs.output import committed_keys, finalize, metadata_parts
from jobs.rows import expand_batch
from jobs.spec import JobSpec
from jobs.worker import CONCURRENT_BATCHES, RenderWorker


SMALL_INPUT_ROWS = 100_000  # inputs up to this many rows are split into blocks for every render actor


class JobError(Exception):
    """The job cannot start (bad input or output) or failed (error budget exceeded)."""


@dataclass
class Progress:
    rows_total: int
    images_total: int = 0  # to render in this run (images committed by an earlier run not counted)
    rows_done: int = 0  # rows whose every image (of this run) came back
    images_done: int = 0
    images_failed: int = 0
    images_skipped: int = 0  # already committed by an earlier run
    started: float = 0.0

    @property
    def images_per_s(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.images_done / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Time left at the rate so far (None before the first image)."""
        left = self.images_total - self.images_done - self.images_failed
        rate = (self.images_done + self.images_failed) / max(time.monotonic() - self.started, 1e-9)
        return max(left, 0) / rate if self.images_done + self.images_failed else None


@dataclass
class JobSummary:
    output: str
    format: str
    rows: int
    images: int  # in the output after this run
    rendered: int  # by this run
    failed: int
    skipped: int
    seconds: float
    images_per_s: float


def input_files(uri: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """A Parquet file, a directory of them, or a glob, on any fsspec filesystem."""
    fs, path = fsspec.core.url_to_fs(uri)
    if any(ch in path for ch in "*?["):
        files = sorted(fs.glob(path))
    elif fs.isdir(path):
        files = sorted(p for p in fs.find(path) if p.endswith(".parquet"))
    else:
        files = [path] if fs.exists(path) else []
    if not files:
        raise JobError(f"no Parquet input at {uri}")
    return fs, files


def actor_pool(spec: JobSpec) -> ActorPool:
    """Render actors from the cluster's GPUs, or a clear `JobError` when none could ever run.
    Through Serve the service's replicas hold the GPUs, so the job's actors take nothing."""
    import ray

    capacity, cpus = gpu_capacity(), ray.cluster_resources().get("CPU", 0)
    if spec.via_serve:
        pool = ActorPool(0.0, *(spec.concurrency or (1, 1)), "rendering through the Serve application",
                         cpus_per_worker=0.0)
    else:
        pool = plan_actor_pool(capacity, spec.gpus_per_worker, spec.concurrency, cpus=cpus)
    if problem := unschedulable(pool, capacity, cpus):
        raise JobError(f"this job cannot run on the cluster: {problem}")
    return pool


def count_rows(fs: fsspec.AbstractFileSystem, files: list[str]) -> int:
    """From the Parquet footers only: no data is read."""
    return sum(pq.ParquetFile(f, filesystem=fs).metadata.num_rows for f in files)


def count_images(fs: fsspec.AbstractFileSystem, files: list[str], limit: int | None, default_n: int) -> int:
    """Images the input asks for: its `n` column (only that column is read), else `default_n` a row."""
    if "n" not in pq.ParquetFile(files[0], filesystem=fs).schema_arrow.names:
        return min(count_rows(fs, files), limit or 1 << 62) * default_n
    total, rows = 0, 0
    for f in files:
        for n in pq.read_table(f, filesystem=fs, columns=["n"]).column("n").to_pylist():
            if limit is not None and rows >= limit:
                return total
            total, rows = total + (n if isinstance(n, int) and n > 0 else default_n), rows + 1
    return total


def run_job(spec: JobSpec, on_progress: Callable[[Progress], None] = lambda p: None,
            on_plan: Callable[[ActorPool], None] = lambda pool: None) -> JobSummary:
    """Run the job in the connected Ray cluster. `on_plan` hears the render actors' placement,
    `on_progress` the counts as batches come back."""
    import ray

    config = load_config(spec.config)
    if spec.defaults.model not in config.models:
        raise JobError(f"unknown model '{spec.defaults.model}'; configured: {', '.join(config.models)}")
    fs, files = input_files(spec.input)
    try:
        columns = pq.ParquetFile(files[0], filesystem=fs).schema_arrow.names
    except Exception as exc:  # noqa: BLE001
        raise JobError(f"cannot read Parquet {files[0]}: {exc}") from None
    if "prompt" not in columns:
        raise JobError(f"input has no 'prompt' column (columns: {', '.join(columns)})")
    rows_total = min(count_rows(fs, files), spec.limit or 1 << 62)
    storage = Storage(spec.output)
    done = committed_keys(storage)
    rerun = bool(metadata_parts(storage))  # a rerun's metadata is compacted into one part at the end

    if not ray.is_initialized():
        raise JobError("not connected to Ray: run the job inside cluster.local_ray.connect()")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.max_errored_blocks = 0  # a block that fails after its retries fails the job, never vanishes
    pool = actor_pool(spec)
    on_plan(pool)
    dataset = ray.data.read_parquet(files, filesystem=fs)
    if spec.limit:
        dataset = dataset.limit(spec.limit)
    if rows_total <= SMALL_INPUT_ROWS:
        # A small input is often one block, so one task: one render actor busy, and no second
        # task to take the device while the first encodes. Split it (it is small enough to hold);
        # large inputs come in many row groups and files already.
        dataset = dataset.repartition(4 * CONCURRENT_BATCHES * pool.max_workers)
    specs = config.specs()
    dataset = dataset.map_batches(expand_batch, batch_format="pandas", fn_kwargs={
        "specs": specs, "defaults": spec.defaults, "job_seed": spec.seed, "done": done})
    dataset = dataset.map_batches(
        RenderWorker, batch_format="pandas", batch_size=spec.batch_size, num_gpus=pool.gpus_per_worker,
        num_cpus=pool.cpus_per_worker,
        # Two calls of the actor at once, really concurrent: RenderWorker keeps the device to one of
        # them (its own lock) while the other encodes and commits.
        compute=ray.data.ActorPoolStrategy(min_size=pool.min_workers, max_size=pool.max_workers,
                                           max_concurrent_calls_per_actor=CONCURRENT_BATCHES,
                                           enable_true_multi_threading=True),
        fn_constructor_kwargs={"config": spec.config, "output": spec.output, "fmt": spec.format,
                               "batch_size": spec.batch_size, "pool_size": pool.max_workers,
                               "via_serve": spec.via_serve, "image_format": spec.image_format})

    images_total = count_images(fs, files, spec.limit, spec.defaults.n) - len(done)
    progress = Progress(rows_total=rows_total, images_total=max(images_total, 0), started=time.monotonic())
    on_progress(progress)
    images_back: Counter[str] = Counter()
    for batch in dataset.iter_batches(batch_format="pandas", batch_size=None):
        failed = int(batch["error_code"].notna().sum())
        progress.images_failed += failed
        progress.images_done += len(batch) - failed
        for rid, row_images in zip(batch["id"], batch["row_images"]):
            images_back[rid] += 1
            progress.rows_done += images_back[rid] == row_images
        on_progress(progress)
    elapsed = time.monotonic() - progress.started

    rendered = progress.images_done + progress.images_failed
    if rendered:  # what Ray re-ran (retries, outputs lost with a node) must read as once
        table = finalize(storage, spec.format, compact_parts=rerun)
        images = table.num_rows
        failed_total = sum(1 for code in table.column("error_code").to_pylist() if code)
    else:
        images, failed_total = len(done), 0
    summary = JobSummary(output=spec.output, format=spec.format, rows=rows_total, images=images,
                         rendered=progress.images_done, failed=progress.images_failed, skipped=len(done),
                         seconds=round(elapsed, 2), images_per_s=round(progress.images_per_s, 3))
    if rendered:
        storage.write("summary.json", json.dumps(asdict(summary) | {"failed_in_output": failed_total},
                                                 indent=2).encode())
    if progress.images_failed > spec.error_budget(max(rendered, 1)):
        raise JobError(f"{progress.images_failed} of {rendered} images failed, over the error budget "
                       f"(--max-errors {spec.max_errors:g}); see {spec.output}/metadata")
    return summary
