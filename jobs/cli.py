"""`raydiant render`, `submit` and `jobs ...`: batch rendering and job submission (mounted by the
root command)."""

from __future__ import annotations

import contextlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.table import Table

from cluster.cli import ConfigOption, console, errors, fail, quiet_logging
from cluster.spec.catalogue import parse_size

jobs_app = typer.Typer(no_args_is_help=True, help="Jobs on a remote Ray cluster (Job Submission API).")
AddressOption = typer.Option(..., "--address", help="Ray dashboard address, e.g. http://HEAD:8265.")


def register(app: typer.Typer) -> None:
    app.command("render")(render_command)
    app.command("submit", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
        submit_command)
    app.add_typer(jobs_app, name="jobs")
    app.command("gallery")(gallery_command)


def gallery_command(
    output: str = typer.Argument(..., help="A batch job's output directory (local or fsspec URI)."),
    page_size: int = typer.Option(100, "--page-size", help="Images per page."),
    limit: int = typer.Option(1000, "--limit", help="Show the first N images (0: all)."),
) -> None:
    """Write static HTML pages (index.html, index-2.html, ...) beside a batch job's output."""
    from jobs.gallery import write_gallery

    if page_size < 1:
        fail(f"--page-size must be at least 1, got {page_size}")
    try:
        summary = write_gallery(output, page_size=page_size, limit=limit or None)
    except FileNotFoundError as exc:
        fail(str(exc))
    console.print(f"gallery: {summary.images} images, {summary.failed} errors on {len(summary.pages)} page(s); "
                  f"open {output.rstrip('/')}/index.html")


def render_command(
    input: str = typer.Option(..., "--input", "-i", help="Parquet file, directory or glob (local or fsspec URI)."),
    output: str = typer.Option(..., "--output", "-o", help="Output directory (local or fsspec URI)."),
    config: Optional[Path] = ConfigOption,
    model: str = typer.Option("flux-schnell", "--model", "-m", help="Model for rows without a `model` column."),
    fmt: str = typer.Option("files", "--format", help="files, webdataset or parquet."),
    image_format: str = typer.Option("png", "--image-format", help="png (lossless, with sampling metadata), "
                                                                    "webp or jpeg (smaller)."),
    batch_size: int = typer.Option(4, "--batch-size", help="Images per device batch (what the model wants)."),
    shard_size: int = typer.Option(1000, "--shard-size", help="Images per output shard: a tar, a data file or a "
                                                               "folder (the dataset's unit, independent of "
                                                               "--batch-size)."),
    unit_size: Optional[int] = typer.Option(
        None, "--unit-size", help="Images per work unit, what a render actor takes at a time (default: from the "
                                  "job's size, 16 units an actor, of 2 to 32 device batches; independent of "
                                  "--shard-size)."),
    concurrency: Optional[str] = typer.Option(
        None, "--concurrency", help="Render actors: N or MIN,MAX (default: one per GPU the cluster has or can "
                                    "autoscale to; 1 on CPU)."),
    gpus_per_worker: Optional[float] = typer.Option(
        None, "--gpus-per-worker", help="GPUs per render actor (default: 1 when the cluster has or can get GPUs, "
                                        "else 0)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Read at most this many rows."),
    size: Optional[str] = typer.Option(None, "--size", help="W*H for rows without a size."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Steps for rows without steps."),
    n: int = typer.Option(1, "--n", help="Images per row without an `n` column."),
    lora: Optional[list[str]] = typer.Option(None, "--lora", help="LoRA adapter for rows without a `loras` column: "
                                                                 "PATH or PATH@SCALE (repeat for several)."),
    quality: Optional[str] = typer.Option(None, "--quality", help="lossless (default) or fast (a step cache, on "
                                                                  "models that have one), for rows without a "
                                                                  "`quality` column."),
    seed: int = typer.Option(0, "--seed", help="Job seed (rows without a seed derive theirs from it)."),
    max_errors: float = typer.Option(0.1, "--max-errors", help="Failed images allowed: count, or fraction < 1."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: local)."),
    via_serve: bool = typer.Option(False, "--via-serve", help="Render through the running Serve app "
                                                               "in the --address cluster."),
    serve_app: str = typer.Option("raydiant", "--serve-app", help="Serve application for --via-serve (default: "
                                                                   "'raydiant', or the one raydiant app there)."),
    verbose: bool = typer.Option(False, "--verbose", help="Show Ray's own output here too (default: its log file)."),
) -> None:
    """Render every prompt of a Parquet dataset into a dataset of image shards plus metadata (resumable)."""
    from pydantic import ValidationError
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    from cluster.spec.errors import RenderError
    from cluster.spec.loras import lora_flag_item, read_lora_list
    from jobs.driver.job import JobError, prepare, run_job
    from jobs.driver.spec import JobSpec
    from jobs.driver.terminal import job_log_path, others_to

    width = height = None
    if size is not None:
        if (parsed := parse_size(size)) is None:
            fail(f"--size must look like W*H (e.g. 1024*1024), got '{size}'")
        width, height = parsed
    loras = read_lora_list([lora_flag_item(value) for value in lora or ()])
    if isinstance(loras, RenderError):
        fail(loras.text("--lora"))
    pool = None
    if concurrency is not None:
        try:
            low, _, high = concurrency.partition(",")
            pool = (int(low), int(high or low))
        except ValueError:
            fail(f"--concurrency must be N or MIN,MAX, got '{concurrency}'")
    try:
        spec = JobSpec(input=input, output=output, config=str(config) if config else None, format=fmt,
                       image_format=image_format, batch_size=batch_size, shard_size=shard_size, unit_size=unit_size,
                       concurrency=pool, gpus_per_worker=gpus_per_worker, limit=limit,
                       seed=seed, max_errors=max_errors, address=address,
                       via_serve=serve_app if via_serve else None,
                       defaults={"model": model, "width": width, "height": height, "steps": steps, "n": n,
                                 "loras": loras,
                                 "quality": quality})
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    try:
        job = prepare(spec)  # before any cluster: a bad input or output fails at once
    except JobError as exc:
        fail(str(exc))
    from cluster.runtime.local_ray import connect

    quiet_logging()  # the driver loads no model: its render actors do, and their output goes to the log
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
               TextColumn("{task.fields[rate]:.2f} img/s"), TextColumn("[red]{task.fields[errors]} errors"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    log = job_log_path()
    if not verbose:
        errors.print(f"Ray's output: {log}", highlight=False)
    problem = None
    # Printed once the terminal is back: a failure's message must not land in the log file.
    with (contextlib.nullcontext(errors) if verbose else others_to(log)) as terminal:
        with Progress(*columns, console=terminal) as bar:
            task = bar.add_task("rendering", total=None, rate=0.0, errors=0)

            def show(p) -> None:
                rows_done = p.rows_total if p.images_total == 0 else p.rows_done  # a rerun with nothing left
                bar.update(task, description=f"{rows_done}/{p.rows_total} rows", total=p.images_total,
                           completed=p.images_done + p.images_failed,
                           rate=p.images_per_s, errors=p.images_failed)

            try:
                with connect(address) if job.todo else contextlib.nullcontext():  # nothing to do: no cluster
                    summary = run_job(job, show, on_plan=lambda plan: terminal.print(plan.describe(),
                                                                                      highlight=False))
            except ConnectionError as exc:
                problem = (f"cannot connect to the Ray cluster at {address}: {exc} (clusters with token "
                           f"authentication also need RAY_AUTH_MODE=token and ~/.ray/auth_token)")
            except (JobError, RuntimeError, TimeoutError) as exc:
                problem = str(exc)
    if problem is not None:
        fail(problem if verbose else f"{problem} (Ray's output: {log})")
    console.print(f"done: {summary.rendered} rendered, {summary.failed} failed, {summary.skipped} already done; "
                  f"{summary.images} images in {summary.shards} shards of {summary.mean_shard_bytes / 2**20:.1f} MiB "
                  f"on average in {summary.output} ({summary.format}); "
                  f"{summary.images_per_s:.2f} img/s over {summary.seconds:.1f}s")


@contextmanager
def _cluster_errors() -> Iterator[None]:
    """A failure to reach the cluster or find a job ends the command with its one-line message."""
    from jobs.submit import SubmitError

    try:
        yield
    except SubmitError as exc:
        fail(str(exc))


def submit_command(
    ctx: typer.Context,
    address: str = AddressOption,
    wait: bool = typer.Option(False, "--wait", help="Follow the logs and exit with the job's status."),
    runtime_env_file: Optional[Path] = typer.Option(None, "--runtime-env", help="Extra runtime_env YAML."),
) -> None:
    """Run `raydiant ARGS...` on a remote cluster: raydiant submit --address URL -- render ..."""
    from jobs.submit import follow, submit

    if not ctx.args:
        fail("nothing to run: give the raydiant command after --, e.g. -- render -i ... -o ...")
    with _cluster_errors():
        job_id = submit(address, list(ctx.args), runtime_env_file, show=console.print)
        console.print(f"submitted {job_id}")
        if wait:
            status = follow(address, job_id, lambda text: console.print(text, end="", markup=False, highlight=False))
            console.print(f"job {job_id} {status}")
            raise typer.Exit(0 if status == "SUCCEEDED" else 1)


@jobs_app.command("list")
def jobs_list(address: str = AddressOption) -> None:
    """Jobs on the cluster, newest first."""
    from jobs.submit import call

    with _cluster_errors():
        jobs = call(address, "list_jobs")
    table = Table("job id", "status", "entrypoint")
    for job in sorted(jobs, key=lambda j: j.start_time or 0, reverse=True):
        table.add_row(job.submission_id or job.job_id or "", str(job.status.value), job.entrypoint)
    console.print(table)


@jobs_app.command("status")
def jobs_status(job_id: str, address: str = AddressOption) -> None:
    """One job's status."""
    from jobs.submit import call

    with _cluster_errors():
        console.print(str(call(address, "get_job_status", job_id).value))


@jobs_app.command("logs")
def jobs_logs(job_id: str, address: str = AddressOption) -> None:
    """One job's logs so far."""
    from jobs.submit import call

    with _cluster_errors():
        console.print(call(address, "get_job_logs", job_id), end="", markup=False, highlight=False)


@jobs_app.command("stop")
def jobs_stop(job_id: str, address: str = AddressOption) -> None:
    """Stop a running job."""
    from jobs.submit import call

    with _cluster_errors():
        console.print("stopped" if call(address, "stop_job", job_id) else "already finished")
