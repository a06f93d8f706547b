"""The batch render job: Parquet prompts -> a dataset of shards, streaming, resumable.

The driver plans shards from the input's footers (`jobs/driver/plan.py`: one entry per shard of
`shard_size` images, never one per row) and drops the shards an earlier run committed. The rest
go through one Ray Data pipeline:

    shards -> read stage (Ray Data tasks: a shard's rows read once, cut into work units of a
              few device batches, `jobs/worker/units.py`), one block per unit
           -> render stage (an autoscaling pool of `UnitWorker` actors placed from the cluster's
              GPUs, `jobs/worker/unit_worker.py`): whichever actor is free takes the next unit,
              renders it and writes its part
           -> the driver, which hears each unit's stats and, once a shard's last unit is back,
              runs its commit as a Ray task (`jobs/output/assembly.py`)

so every actor has work from the first unit on, whatever the shard size, and the job ends with
at most a unit per actor still running. At the end the driver writes the manifest and summary
from the shards' stats. Its memory and work grow with the number of shards, not of images.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable

import pyarrow.parquet as pq

from cluster.runtime.placement import ActorPool, gpu_capacity, plan_actor_pool, unschedulable
from cluster.spec.catalogue import MODEL_DEPLOYMENT_PREFIX
from cluster.spec.config import load_config
from cluster.spec.errors import first_line
from cluster.storage.results import Storage
from jobs.driver import manifest
from jobs.driver.assembly import Assembly
from jobs.driver.plan import InputError, ShardPlan, describe_inputs, input_files, plan_shards
from jobs.driver.spec import DEFAULT_SERVE_APP, JobSpec
from jobs.output.assembly import commit_shard
from jobs.output.layout import ShardStats, read_stats
from jobs.output.shard_writer import remove_staging
from jobs.output.unit_part import UnitStats

_POLL_S = 0.5  # how often the driver looks at finished commits while units are in flight
# CPUs of a read task and of a shard's commit: both mostly wait on storage, and neither may wait
# behind the other for long on a node whose CPUs the render actors hold.
_READ_CPUS = _COMMIT_CPUS = 0.5
# Images a read task plans at least: small shards are read several to a task, since a task's
# fixed cost (scheduling, a worker process to start on a busy node) is far above reading a
# few rows, and a few read tasks keep every render actor in units from the start.
_READ_IMAGES = 1024
_ACTORS_UP_S = 600  # the render pool's first actors must be up within this, or the job fails saying so


class JobError(Exception):
    """The job cannot start (bad input or output) or failed (error budget exceeded)."""


@dataclass
class Progress:
    rows_total: int
    images_total: int = 0  # to render in this run (images committed by an earlier run not counted)
    rows_done: int = 0  # rows of shards committed (by this run or an earlier one)
    images_done: int = 0
    images_failed: int = 0
    images_skipped: int = 0  # already committed by an earlier run, or in a part it wrote
    reused_rendered: int = 0  # of those, in parts of shards this run commits
    reused_failed: int = 0
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

    def hear(self, unit: UnitStats) -> None:
        """A unit is back (heard once, whatever Ray re-ran): its images are done."""
        if unit.reused:  # an earlier run rendered it: done before this run, not by it
            self.reused_rendered += unit.rendered
            self.reused_failed += unit.failed
            self.images_skipped += unit.rendered + unit.failed
            self.images_total -= unit.rendered + unit.failed
        else:
            self.images_done += unit.rendered
            self.images_failed += unit.failed


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
    shards: int = 0  # in the output
    mean_shard_bytes: int = 0


def served_app(requested: str) -> str:
    """The Serve application to render through: `requested` when the cluster runs it; else, for
    the default name, the one raydiant application there (its model deployments tell it);
    else a `JobError` naming the applications the cluster has."""
    from ray import serve

    try:
        applications = serve.status().applications
    except Exception as exc:  # noqa: BLE001 - no Serve on the cluster, or its controller unreachable
        raise JobError(f"--via-serve: no Ray Serve on this cluster ({first_line(exc)})") from None
    if requested in applications:
        return requested
    ours = sorted(name for name, app in applications.items()
                  if any(deployment.startswith(MODEL_DEPLOYMENT_PREFIX) for deployment in app.deployments))
    if requested == DEFAULT_SERVE_APP and len(ours) == 1:
        return ours[0]
    raise JobError(f"--via-serve: no Serve application '{requested}' on this cluster; applications there: "
                   f"{', '.join(sorted(applications)) or 'none'} (name one with --serve-app)")


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


@dataclass
class PreparedJob:
    """What a job needs before Ray: checked input, its shard plan, the output and what an earlier
    run committed there. Made without a cluster, so a bad input fails in a second."""

    spec: JobSpec
    storage: Storage
    manifest: dict
    shards: list[ShardPlan]
    committed: dict[str, ShardStats]
    resuming: bool

    @property
    def todo(self) -> list[tuple[ShardPlan, bool]]:
        """The shards to render, each with whether it is a redo. A committed shard needs no more
        work unless it holds failures a rerun can change."""
        return [(plan, plan.name in self.committed) for plan in self.shards
                if plan.name not in self.committed or self.committed[plan.name].retryable]


def prepare(spec: JobSpec) -> PreparedJob:
    """Check the input and the output and plan the shards; a `JobError` names what is wrong."""
    config = load_config(spec.config)
    if spec.defaults.model not in config.models:
        raise JobError(f"unknown model '{spec.defaults.model}'; configured: {', '.join(config.models)}")
    try:
        fs, files = input_files(spec.input)
        inputs = describe_inputs(fs, files)
        columns = pq.ParquetFile(files[0], filesystem=fs).schema_arrow.names
        if "prompt" not in columns:
            raise JobError(f"input has no 'prompt' column (columns: {', '.join(columns)})")
        shards = list(plan_shards(fs, inputs, spec.shard_size, spec.defaults.n, spec.limit))
    except InputError as exc:
        raise JobError(str(exc)) from None
    storage = Storage(spec.output)
    described = manifest.build(spec, config, inputs)
    try:
        resuming = manifest.check_resume(storage, described)
    except manifest.ManifestMismatch as exc:
        raise JobError(str(exc)) from None
    return PreparedJob(spec, storage, described, shards, read_stats(storage) if resuming else {}, resuming)


def run_job(spec: JobSpec | PreparedJob, on_progress: Callable[[Progress], None] = lambda p: None,
            on_plan: Callable[[ActorPool], None] = lambda pool: None) -> JobSummary:
    """Run the job in the connected Ray cluster. `on_plan` hears the render actors' placement,
    `on_progress` the counts as images and shards come back."""
    import ray

    job = spec if isinstance(spec, PreparedJob) else prepare(spec)
    spec, storage, described, shards, committed = job.spec, job.storage, job.manifest, job.shards, job.committed
    todo = job.todo
    progress = Progress(rows_total=sum(p.rows for p in shards), started=time.monotonic(),
                        images_total=sum(committed[p.name].retryable if redo else p.images for p, redo in todo))
    redone = {p.name for p, redo in todo if redo}
    progress.rows_done = sum(p.rows for p in shards if p.name in committed and p.name not in redone)
    progress.images_skipped = sum(s.images - (s.retryable if s.shard in redone else 0) for s in committed.values())

    if todo:  # a finished output needs no cluster
        if not ray.is_initialized():
            raise JobError("not connected to Ray: run the job inside cluster.runtime.local_ray.connect()")
        if spec.via_serve:
            spec = spec.model_copy(update={"via_serve": served_app(spec.via_serve)})
        pool = actor_pool(spec)
        on_plan(pool)
    if not job.resuming:
        manifest.write(storage, described)
    on_progress(progress)
    finished = dict(committed)
    rendered = failed = 0
    if todo:
        # From the whole job's size, not what is left of it: a rerun cuts the same units, and
        # finds the parts a killed run wrote under the same names.
        unit_images = spec.unit_images(sum(p.images for p in shards), pool.max_workers)
        for plan, stats in _render(spec, pool, todo, unit_images, progress, on_progress):
            finished[plan.name] = stats
            rendered += stats.rendered_now
            failed += stats.failed_now
            progress.rows_done += plan.rows
            on_progress(progress)
        # A part an earlier run wrote is in its shard's counts, but this run did not render it.
        rendered, failed = rendered - progress.reused_rendered, failed - progress.reused_failed
        progress.images_done, progress.images_failed = rendered, failed  # exact, whatever Ray re-ran
        on_progress(progress)
        remove_staging(storage, spec.format)  # every shard is in: no writer runs any more
    elapsed = time.monotonic() - progress.started

    images = sum(s.images for s in finished.values())
    summary = JobSummary(output=spec.output, format=spec.format, rows=progress.rows_total, images=images,
                         rendered=rendered, failed=failed, skipped=progress.images_skipped,
                         seconds=round(elapsed, 2), images_per_s=round(rendered / elapsed if elapsed else 0, 3),
                         shards=len(finished),
                         mean_shard_bytes=sum(s.bytes for s in finished.values()) // max(len(finished), 1))
    if todo:
        manifest.write(storage, described, list(finished.values()))
        failed_in_output = sum(s.failed for s in finished.values())
        storage.write("summary.json", json.dumps(asdict(summary) | {"failed_in_output": failed_in_output},
                                                 indent=2).encode())
    if failed > spec.error_budget(max(rendered + failed, 1)):
        raise JobError(f"{failed} of {rendered + failed} images failed, over the error budget "
                       f"(--max-errors {spec.max_errors:g}); see {spec.output}/metadata")
    return summary


def _commit(output: str, fmt: str, image_format: str, plan: ShardPlan, units: list[str], redo: bool) -> ShardStats:
    return commit_shard(Storage(output), fmt, image_format, plan, units, redo)


def _read_tasks(todo: list[tuple[ShardPlan, bool]]) -> int:
    images = sum(plan.images for plan, _ in todo)
    return max(1, min(len(todo), math.ceil(images / _READ_IMAGES)))


def _render(spec: JobSpec, pool: ActorPool, todo: list[tuple[ShardPlan, bool]], unit_images: int,
            progress: Progress, on_progress: Callable[[Progress], None]):
    """Yield (plan, stats) as shards commit, from units of about `unit_images` images; tell
    `on_progress` as units come back."""
    import ray

    from jobs.worker.unit_worker import CONCURRENT_UNITS, UnitWorker  # the actors import torch, not the driver
    from jobs.worker.units import read_units

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.max_errored_blocks = 0  # a unit that fails after its retries fails the job, never vanishes
    # Units go to actors that are up: without this wait the first actor up would take the first
    # units while the others still start. An actor is up once it loaded the job's model; the
    # pool's minimum fits the cluster now, so the wait is only that.
    context.wait_for_min_actors_s = _ACTORS_UP_S
    plans = {plan.name: (plan, redo) for plan, redo in todo}
    # The plans travel as themselves (Ray Data keeps Python objects whole), and so do units and stats.
    dataset = ray.data.from_items([{"plan": plan, "redo": redo} for plan, redo in todo],
                                  override_num_blocks=_read_tasks(todo))
    dataset = dataset.flat_map(read_units, num_cpus=_READ_CPUS,
                               fn_kwargs={"input_uri": spec.input, "unit_images": unit_images,
                                          "default_n": spec.defaults.n})
    # A block per unit: an actor call takes a whole block, so a block of a shard's units would
    # put the whole shard on one actor again.
    dataset = dataset.repartition(target_num_rows_per_block=1)
    dataset = dataset.map_batches(
        UnitWorker, batch_size=1, num_gpus=pool.gpus_per_worker, num_cpus=pool.cpus_per_worker,
        # Two units at once per actor, really concurrent (one on the device, the other preparing
        # or writing), and none queued behind them: a unit waits for whichever actor frees first.
        compute=ray.data.ActorPoolStrategy(min_size=pool.min_workers, max_size=pool.max_workers,
                                           max_concurrent_calls_per_actor=CONCURRENT_UNITS,
                                           max_tasks_in_flight_per_actor=CONCURRENT_UNITS,
                                           enable_true_multi_threading=True),
        fn_constructor_kwargs={"config": spec.config, "output": spec.output, "image_format": spec.image_format,
                               "batch_size": spec.batch_size, "defaults": spec.defaults, "job_seed": spec.seed,
                               "pool_size": pool.max_workers, "via_serve": spec.via_serve})
    commit = ray.remote(num_cpus=_COMMIT_CPUS)(_commit)  # retried by Ray if its worker dies: idempotent
    arrivals: queue.Queue = queue.Queue()

    def consume() -> None:  # Ray Data's iterator blocks: it runs beside the commits
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                arrivals.put(list(batch["stats"]))
            arrivals.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the driver's thread
            arrivals.put(exc)

    threading.Thread(target=consume, name="units", daemon=True).start()
    assembly, committing, units_out = Assembly(), {}, True
    while units_out or committing:
        if committing:
            done, _ = ray.wait(list(committing), num_returns=len(committing), timeout=0)
            for ref in done:
                yield plans[committing.pop(ref)][0], ray.get(ref)
        try:
            arrived = arrivals.get(timeout=_POLL_S) if units_out else None
        except queue.Empty:
            continue
        if arrived is None:
            units_out = False
            if committing:  # only commits left: wait for the next one
                ray.wait(list(committing), num_returns=1)
            continue
        if isinstance(arrived, BaseException):
            raise arrived
        for unit in arrived:
            if not assembly.add(unit):
                continue
            progress.hear(unit)
            if (units := assembly.complete(unit)) is not None:
                plan, redo = plans[unit.shard]
                committing[commit.remote(spec.output, spec.format, spec.image_format, plan, units, redo)] = unit.shard
        on_progress(progress)
    if assembly.open:  # Ray Data finished, yet a shard misses units: never commit it half
        raise JobError(f"{len(assembly.open)} shard(s) did not get all their units back (first: "
                       f"{min(assembly.open)}); rerun the job to finish them")
