"""The `raydiant` command.

Every user error (unknown model, size not allowed, unreadable weights, bad config) ends with one
line on stderr naming the problem and exit status 2, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table

from cluster.config import ConfigError, RaydiantConfig, load_config
from cluster.models import parse_size

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="raydiant: a distributed render cluster for text-to-image diffusion models.")
models_app = typer.Typer(no_args_is_help=True, help="Inspect the model catalogue and build tiny models.")
app.add_typer(models_app, name="models")
jobs_app = typer.Typer(no_args_is_help=True, help="Jobs on a remote Ray cluster (Job Submission API).")
app.add_typer(jobs_app, name="jobs")
AddressOption = typer.Option(..., "--address", help="Ray dashboard address, e.g. http://HEAD:8265.")

# Piped output gets a wide console, so tables are not cut at 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=200)
errors = Console(stderr=True)

ConfigOption = typer.Option(None, "--config", "-c", help="Config YAML (default: configs/local.yaml).")


def fail(message: str) -> NoReturn:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _config(path: Optional[Path]) -> RaydiantConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        fail(str(exc))


@models_app.command("list")
def models_list(config: Optional[Path] = ConfigOption) -> None:
    """Table of the configured models: family, weight source, defaults and limits."""
    table = Table("model", "family", "source", "default size", "steps", "guidance", "n", "batch")
    for name, spec in _config(config).specs().items():
        table.add_row(name, spec.family.value, spec.source, spec.default_size,
                      f"{spec.default_steps} ({spec.min_steps}..{spec.max_steps})",
                      f"{spec.guidance_name} {spec.default_guidance:g} ({spec.min_guidance:g}..{spec.max_guidance:g})",
                      f"1..{spec.max_n}", str(spec.max_batch_size))
    console.print(table)


@models_app.command("build-tiny")
def models_build_tiny(directory: Path = typer.Argument(..., help="Output directory.")) -> None:
    """Build tiny random-weight pipelines: DIR/flux, DIR/flux-kontext, DIR/sdxl, DIR/sd15."""
    from cluster.tiny import build_all_tiny

    _quiet_libraries()
    for family, path in build_all_tiny(directory).items():
        console.print(f"{family.value:13} {path}")


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="What to draw."),
    model: str = typer.Option("flux-schnell", "--model", "-m", help="Model name (see `raydiant models list`)."),
    n: int = typer.Option(1, "--n", "-n", help="Images to render (seeded seed, seed+1, ...)."),
    seed: Optional[int] = typer.Option(None, "--seed", "-s", help="Seed of the first image (default: random)."),
    size: Optional[str] = typer.Option(None, "--size", help="W*H, e.g. 1024*1024 (default: the model's)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Denoising steps (default: the model's)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", "--scale", help="Guidance (default: the model's)."),
    negative: Optional[str] = typer.Option(None, "--negative", help="Negative prompt."),
    image: Optional[Path] = typer.Option(None, "--image", help="Input image (edit models)."),
    metadata: bool = typer.Option(True, "--metadata/--no-metadata", help="Write sampling parameters into the PNG."),
    out: Path = typer.Option(Path("."), "--out", "-o", help="Output directory."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cpu, ... (default: cuda if present)."),
    config: Optional[Path] = ConfigOption,
) -> None:
    """Render images in this process (no Ray): the quickest way to check a model's weights."""
    from cluster.engine import Renderer
    from cluster.request import RenderError, RenderRequest
    from cluster.weights import ModelLoadError

    cfg = _config(config)
    if model not in cfg.models:
        fail(f"unknown model '{model}'; configured: {', '.join(cfg.models)}")
    width = height = None
    if size is not None:
        parsed = parse_size(size)
        if parsed is None:
            fail(f"--size must look like W*H (e.g. 1024*1024), got '{size}'")
        width, height = parsed
    init_image = None
    if image is not None:
        try:
            init_image = image.read_bytes()
        except OSError as exc:
            fail(f"cannot read --image {image}: {exc.strerror}")
    request = RenderRequest(model=model, prompt=prompt, negative_prompt=negative, width=width,
                            height=height, steps=steps, guidance=guidance, seed=seed, n=n,
                            add_sampling_metadata=metadata, init_image=init_image)
    spec = cfg.spec(model)
    if isinstance(problem := spec.resolve(request), RenderError):
        fail(problem.message)

    _quiet_libraries()
    try:
        with console.status(f"loading {model} from {spec.source}"):
            renderer = Renderer(spec.model_copy(update={"warmup": False}), device=device)
        with console.status(f"rendering {n} image(s)"):
            results = renderer.render([request])
    except ModelLoadError as exc:
        fail(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for result in results:
        if result.error:
            failed += 1
            errors.print(f"image {result.index}: {result.error.code}: {result.error.message}")
            continue
        path = out / f"{model}-{result.seed}.png"
        path.write_bytes(result.image)  # type: ignore[arg-type]
        console.print(f"{path}  seed={result.seed}  {result.width}x{result.height}  "
                      f"{result.inference_s:.2f}s (batch {result.batch_size})")
    if failed:
        raise typer.Exit(1)


@app.command("serve")
def serve_command(
    config: Optional[Path] = ConfigOption,
    host: Optional[str] = typer.Option(None, "--host", help="Bind address (default: the config's, 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", help="HTTP port (default: the config's, 8000)."),
    address: Optional[str] = typer.Option(None, "--address", help="Join this Ray cluster (default: start one)."),
    batching: bool = typer.Option(True, "--batching/--no-batching", help="Dynamic batching of requests."),
    metrics_port: Optional[int] = typer.Option(
        None, "--metrics-port", help="Prometheus metrics port of the local Ray node (new clusters only)."),
) -> None:
    """Run the online service in the foreground; Ctrl-C or SIGTERM drains and stops it."""
    import signal
    import threading

    from serve.auth import configured_keys

    cfg = _config(config)
    if not configured_keys(cfg.serve.api_keys):
        fail("no API keys configured: set RAYDIANT_API_KEYS=key1,key2 or serve.api_keys in the config")
    host, port = host or cfg.serve.host, port or cfg.serve.port
    _quiet_libraries()

    import ray
    from ray import serve as ray_serve

    from serve.app import build_app

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with console.status("starting Ray"):
        from jobs.render import ray_address

        extra = {"_metrics_export_port": metrics_port} if metrics_port and not address else {}
        ray.init(address=ray_address(address), namespace="raydiant", log_to_driver=False, configure_logging=False,
                 **extra)
    try:
        with console.status(f"deploying {', '.join(cfg.served_models())}"):
            ray_serve.start(http_options={"host": host, "port": port})
            ray_serve.run(build_app({"config": str(config) if config else None, "batching": batching}),
                          name="raydiant", route_prefix="/", blocking=False)
        console.print(f"raydiant is serving on http://{host}:{port}  "
                      f"(DashScope base: http://{host}:{port}/api/v1; Ctrl-C stops)")
        console.print(f"Ray cluster: {ray.get_runtime_context().gcs_address}  "
                      f"(batch jobs can render through this service: raydiant render --via-serve --address ...)")
        stop.wait()
    except Exception as exc:  # noqa: BLE001 - deployment failures are reported in one line
        fail(f"serving failed: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
    finally:
        console.print("draining and shutting down")
        if address:  # a shared cluster: take our application down, leave Serve to the others
            ray_serve.delete("raydiant")
        else:
            ray_serve.shutdown()
        ray.shutdown()


@app.command("render")
def render_command(
    input: str = typer.Option(..., "--input", "-i", help="Parquet file, directory or glob (local or fsspec URI)."),
    output: str = typer.Option(..., "--output", "-o", help="Output directory (local or fsspec URI)."),
    config: Optional[Path] = ConfigOption,
    model: str = typer.Option("flux-schnell", "--model", "-m", help="Model for rows without a `model` column."),
    fmt: str = typer.Option("files", "--format", help="files, webdataset or parquet."),
    batch_size: int = typer.Option(4, "--batch-size", help="Images per render batch."),
    concurrency: str = typer.Option("1", "--concurrency", help="Renderer actors: N or MIN,MAX."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Read at most this many rows."),
    size: Optional[str] = typer.Option(None, "--size", help="W*H for rows without a size."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Steps for rows without steps."),
    n: int = typer.Option(1, "--n", help="Images per row without an `n` column."),
    seed: int = typer.Option(0, "--seed", help="Job seed (rows without a seed derive theirs from it)."),
    max_errors: float = typer.Option(0.1, "--max-errors", help="Failed images allowed: count, or fraction < 1."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address (default: local)."),
    via_serve: bool = typer.Option(False, "--via-serve", help="Render through the running Serve app "
                                                               "in the --address cluster."),
    serve_app: str = typer.Option("raydiant", "--serve-app", help="Serve application name for --via-serve."),
) -> None:
    """Render every prompt of a Parquet dataset into images plus a metadata table (resumable)."""
    from pydantic import ValidationError
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from jobs.render import JobError, run_job
    from jobs.spec import JobSpec

    width = height = None
    if size is not None:
        if (parsed := parse_size(size)) is None:
            fail(f"--size must look like W*H (e.g. 1024*1024), got '{size}'")
        width, height = parsed
    try:
        low, _, high = concurrency.partition(",")
        pool = (int(low), int(high or low))
    except ValueError:
        fail(f"--concurrency must be N or MIN,MAX, got '{concurrency}'")
    try:
        spec = JobSpec(input=input, output=output, config=str(config) if config else None, format=fmt,
                       batch_size=batch_size, concurrency=pool, limit=limit, seed=seed, max_errors=max_errors,
                       address=address, via_serve=serve_app if via_serve else None,
                       defaults={"model": model, "width": width, "height": height,
                                                  "steps": steps, "n": n})
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    _quiet_libraries()
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f} images"),
               TextColumn("{task.fields[rate]:.2f} img/s"), TextColumn("[red]{task.fields[errors]} errors"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=errors) as bar:
        task = bar.add_task("rendering", total=None, rate=0.0, errors=0)

        def show(p) -> None:
            bar.update(task, description=f"{p.rows_total} rows", total=p.rows_total * n,
                       completed=p.images_done + p.images_failed,
                       rate=p.images_per_s, errors=p.images_failed)

        try:
            summary = run_job(spec, show)
        except JobError as exc:
            fail(str(exc))
    console.print(f"done: {summary.rendered} rendered, {summary.failed} failed, {summary.skipped} already done; "
                  f"{summary.images} images in {summary.output} ({summary.format}); "
                  f"{summary.images_per_s:.2f} img/s over {summary.seconds:.1f}s")


@app.command("submit", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def submit_command(
    ctx: typer.Context,
    address: str = AddressOption,
    wait: bool = typer.Option(False, "--wait", help="Follow the logs and exit with the job's status."),
    runtime_env_file: Optional[Path] = typer.Option(None, "--runtime-env", help="Extra runtime_env YAML."),
) -> None:
    """Run `raydiant ARGS...` on a remote cluster: raydiant submit --address URL -- render ..."""
    from jobs.submit import SubmitError, follow, submit

    if not ctx.args:
        fail("nothing to run: give the raydiant command after --, e.g. -- render -i ... -o ...")
    try:
        job_id = submit(address, list(ctx.args), runtime_env_file)
        console.print(f"submitted {job_id}")
        if wait:
            status = follow(address, job_id, lambda text: console.print(text, end="", markup=False, highlight=False))
            console.print(f"job {job_id} {status}")
            raise typer.Exit(0 if status == "SUCCEEDED" else 1)
    except SubmitError as exc:
        fail(str(exc))


@jobs_app.command("list")
def jobs_list(address: str = AddressOption) -> None:
    """Jobs on the cluster, newest first."""
    from jobs.submit import SubmitError, call

    try:
        jobs = call(address, "list_jobs")
    except SubmitError as exc:
        fail(str(exc))
    table = Table("job id", "status", "entrypoint")
    for job in sorted(jobs, key=lambda j: j.start_time or 0, reverse=True):
        table.add_row(job.submission_id or job.job_id or "", str(job.status.value), job.entrypoint)
    console.print(table)


@jobs_app.command("status")
def jobs_status(job_id: str, address: str = AddressOption) -> None:
    """One job's status."""
    from jobs.submit import SubmitError, call

    try:
        console.print(str(call(address, "get_job_status", job_id).value))
    except SubmitError as exc:
        fail(str(exc))


@jobs_app.command("logs")
def jobs_logs(job_id: str, address: str = AddressOption) -> None:
    """One job's logs so far."""
    from jobs.submit import SubmitError, call

    try:
        console.print(call(address, "get_job_logs", job_id), end="", markup=False, highlight=False)
    except SubmitError as exc:
        fail(str(exc))


@jobs_app.command("stop")
def jobs_stop(job_id: str, address: str = AddressOption) -> None:
    """Stop a running job."""
    from jobs.submit import SubmitError, call

    try:
        console.print("stopped" if call(address, "stop_job", job_id) else "already finished")
    except SubmitError as exc:
        fail(str(exc))


def _quiet_libraries() -> None:
    """Library progress bars and advice are noise in a CLI."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


if __name__ == "__main__":
    app()
