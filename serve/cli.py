"""`raydiant serve`: the online service in the foreground (mounted by the root command)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer

from cluster.cli import ConfigOption, console, fail, load, quiet_libraries
from cluster.spec.errors import first_line

infra_app = typer.Typer(no_args_is_help=True, help="Deployment files generated from the config.")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
    app.command("doctor")(doctor_command)
    app.add_typer(infra_app, name="infra")


def doctor_command(
    config: Optional[Path] = ConfigOption,
    address: Optional[str] = typer.Option(None, "--address", help="Also check that this Ray cluster can hold "
                                                                  "every replica's GPUs."),
) -> None:
    """Check a deployment before it serves: secrets, storage, the weights cache, each model's source,
    the task store and GPUs; one line per check, with the fix. Exits 1 when any fails."""
    from serve.doctor import run_checks

    checks = run_checks(load(config), address)
    for check in checks:
        mark = "[green]ok  [/green]" if check.ok else "[red]FAIL[/red]"
        console.print(f"{mark} {check.name}: {check.detail}" + ("" if check.ok else f"; [bold]fix:[/bold] {check.fix}"),
                      highlight=False, soft_wrap=True)
    if not all(check.ok for check in checks):
        raise typer.Exit(1)


@infra_app.command("render")
def infra_render() -> None:
    """Write configs/serve-cluster.yaml and the RayService's serveConfigV2 from configs/cluster.yaml."""
    from serve.deploy_config import write_all

    changed = write_all()
    console.print("\n".join(f"wrote {path}" for path in changed) or "generated files are current")


@infra_app.command("image")
def infra_image(reference: str = typer.Argument(..., help="REGISTRY/raydiant:<version>-<commit>, or "
                                                            "REGISTRY/raydiant@sha256:<digest>.")) -> None:
    """Set the image of every manifest under infra/ to one build (a version and commit, or a digest)."""
    from serve.deploy_image import MutableImage, stamp

    try:
        changed = stamp(reference)
    except MutableImage as exc:
        console.print(f"[red]refused:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    console.print("\n".join(f"wrote {path}" for path in changed) or f"every manifest runs {reference} already")


def serve_command(
    config: Optional[Path] = ConfigOption,
    host: Optional[str] = typer.Option(None, "--host", help="Bind address (default: the config's, 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", help="HTTP port (default: the config's, 8000)."),
    address: Optional[str] = typer.Option(None, "--address", help="Join this Ray cluster (default: start one)."),
    batching: bool = typer.Option(True, "--batching/--no-batching", help="Dynamic batching of requests."),
    proxy_location: str = typer.Option(
        "EveryNode", "--proxy-location", help="Where Serve runs HTTP proxies: EveryNode, HeadOnly or Disabled "
                                              "(HeadOnly when several raylets share one machine)."),
    metrics_port: Optional[int] = typer.Option(
        None, "--metrics-port", help="Prometheus metrics port of the local Ray node (new clusters only)."),
) -> None:
    """Run the online service in the foreground; Ctrl-C or SIGTERM drains and stops it."""
    import signal
    import threading

    from serve.edge.auth import configured_keys, listens_beyond_loopback, weak_secrets
    from serve.secrets import resolve

    cfg = load(config)
    keys = configured_keys(cfg.serve.api_keys)
    if not keys:
        fail("no API keys configured: set RAYDIANT_API_KEYS=key1,key2 or serve.api_keys in the config")
    host, port = host or cfg.serve.host, port or cfg.serve.port
    if listens_beyond_loopback(host):  # refused before anything starts, with what to change
        secrets = resolve(cfg)
        if weak := weak_secrets(keys, secrets.signing_key, secrets.webhook_secret):
            fail(f"refusing to serve on {host} (reachable from other machines) with weak secrets: "
                 f"{'; '.join(weak)}. Use keys of 16+ random characters (openssl rand -hex 16), "
                 f"or serve on 127.0.0.1")
    quiet_libraries()

    import ray
    from ray import serve as ray_serve

    from cluster.runtime.local_ray import connect
    from cluster.runtime.placement import gpu_capacity, missing_gpus
    from serve.app import build_app
    from serve.secrets import forget, publish

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with contextlib.ExitStack() as stack:
        with console.status("starting Ray"):
            try:
                stack.enter_context(connect(address, metrics_port=None if address else metrics_port,
                                            namespace="raydiant"))
            except (ConnectionError, RuntimeError, TimeoutError) as exc:
                fail(f"cannot start or reach Ray{f' at {address}' if address else ''}: {exc}")
        needs = {model: float(cfg.serve.deployment(model).ray_actor_options.get("num_gpus", 0))
                 for model in cfg.served_models()}
        if problems := missing_gpus(needs, gpu_capacity()):
            fail("; ".join(problems))
        try:
            with console.status(f"deploying {', '.join(cfg.served_models())}"):
                ray_serve.start(http_options={"host": host, "port": port}, proxy_location=proxy_location)
                token = publish(resolve(cfg))  # to replicas on every node, never in their arguments
                stack.callback(forget, token)
                ray_serve.run(build_app({"config": str(config) if config else None, "batching": batching,
                                         "host": host, "secrets_token": token}),
                              name="raydiant", route_prefix="/", blocking=False)
            console.print(f"raydiant is serving on http://{host}:{port}  "
                          f"(DashScope base: http://{host}:{port}/api/v1; Ctrl-C stops)")
            console.print(f"Ray cluster: {ray.get_runtime_context().gcs_address}  "
                          f"(batch jobs can render through this service: raydiant render --via-serve --address ...)")
            stop.wait()
        except Exception as exc:  # noqa: BLE001 - deployment failures are reported in one line
            fail(f"serving failed: {first_line(exc)}")
        finally:
            console.print("draining and shutting down")
            if address:  # a shared cluster: take our application down, leave Serve to the others
                ray_serve.delete("raydiant")
            else:
                ray_serve.shutdown()
