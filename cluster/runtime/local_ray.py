"""A private Ray head on this machine, for commands run without `--address`.

`ray.init()` alone would start a cluster on some of Ray's default ports (the dashboard on 8265,
the dashboard agent on 52365) in the shared /tmp/ray, so it would fight any other Ray on the
machine for them: one of the two loses its agent's HTTP service, or worse. A private head takes
free loopback ports for every service, worker ports from the OS, and a temporary directory of
its own, and goes away with the command that started it, even when that command is killed
with SIGKILL (a watchdog process stops the head's whole tree).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cluster.runtime.processes import free_port, free_ports, stop_tree, wait_for_port, watch_owner
from cluster.storage.local_files import create_once

HEAD_START_TIMEOUT_S = 120


TEMP_PREFIX = "raydiant-ray-"  # /tmp/raydiant-ray-XXXXXXXX: short enough for Ray's socket paths


def head_command(temp_dir: str, gcs_port: int, num_cpus: int | None = None, num_gpus: int | None = None,
                 metrics_port: int | None = None, dashboard_port: int | None = None) -> list[str]:
    """`ray start --head --block` with every port chosen here (none of Ray's defaults)."""
    ray = str(Path(sys.executable).parent / "ray")
    node, objects, agent, agent_grpc, runtime_env, metrics, client = free_ports(7)
    command = [ray, "start", "--head", "--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1",
               f"--port={gcs_port}", f"--temp-dir={temp_dir}",
               f"--node-manager-port={node}", f"--object-manager-port={objects}",
               f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
               f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics_port or metrics}",
               f"--ray-client-server-port={client}", "--min-worker-port=0", "--max-worker-port=0"]
    if dashboard_port:
        command += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}"]
    else:
        command += ["--include-dashboard=false"]
    if num_cpus is not None:
        command.append(f"--num-cpus={num_cpus}")
    if num_gpus is not None:
        command.append(f"--num-gpus={num_gpus}")
    return command


@contextmanager
def private_head(num_cpus: int | None = None, num_gpus: int | None = None, metrics_port: int | None = None,
                 dashboard_port: int | None = None, log_path: str | Path | None = None) -> Iterator[str]:
    """Start a private Ray head; yields its GCS address (for `ray.init(address=...)`); stops it
    and removes its temporary directory on exit.

    Ray's token authentication stays on, with the machine's token (~/.ray/auth_token, made
    when missing, as `ray.init()` would): clients on this machine find it there by themselves."""
    sweep_dead_heads()
    # Short, because Ray's socket paths under it must fit in 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir="/tmp")
    gcs_port = free_port()
    ensure_auth_token()
    # FORWARDED_ALLOW_IPS empty: Serve's HTTP proxy (uvicorn) must not take a client address from
    # X-Forwarded-For on its own (by default it trusts any loopback peer); the ingress decides,
    # from `serve.trusted_proxies` (serve/edge/client_address.py).
    env = os.environ | {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0", "FORWARDED_ALLOW_IPS": "",
                        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    log = open(log_path or Path(temp_dir) / "head.log", "ab")
    # Its own process group (a Ctrl-C for the command must not stop Ray under it), but the
    # caller's session, so whoever stops the caller's session stops the head too.
    head = subprocess.Popen(head_command(temp_dir, gcs_port, num_cpus, num_gpus, metrics_port, dashboard_port),
                            env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0)
    (Path(temp_dir) / "head.pid").write_text(str(head.pid))
    watchdog = watch_owner(head.pid)  # a SIGKILLed caller leaves no orphan head behind
    try:
        wait_for_port(gcs_port, head, HEAD_START_TIMEOUT_S, f"Ray head (log: {log.name})")
    except Exception:
        stop_tree(head)
        stop_tree(watchdog)
        raise  # the temporary directory stays, with the head's log in it
    try:
        yield f"127.0.0.1:{gcs_port}"
    finally:
        stop_tree(head)
        stop_tree(watchdog)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def sweep_dead_heads() -> None:
    """Remove the temporary directories of private heads whose owner was killed before it could
    clean up (SIGKILL leaves them behind)."""
    for directory in Path("/tmp").glob(f"{TEMP_PREFIX}*"):
        try:
            os.kill(int((directory / "head.pid").read_text()), 0)
        except ProcessLookupError:
            shutil.rmtree(directory, ignore_errors=True)
        except (OSError, ValueError):
            pass  # not ours, or still starting: leave it


def use_token_auth() -> None:
    """Token authentication for this process's connections (and its children's). Ray reads the
    mode into its native config when it is imported, so the config is read again, as Ray's own
    `ray.init()` does when it starts a local cluster."""
    from ray._raylet import Config

    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")


def ensure_auth_token() -> None:
    """~/.ray/auth_token, created (mode 0600) when missing; never replaced, since other
    clusters on the machine may be using it."""
    create_once(Path.home() / ".ray" / "auth_token", secrets.token_hex(32))


@contextmanager
def connect(address: str | None = None, num_cpus: int | None = None, metrics_port: int | None = None,
            **init_kwargs) -> Iterator[str]:
    """Connect this process to Ray for the length of the block: to `address`, else to the cluster
    a submitted job runs in ($RAY_ADDRESS), else to a private head started for the purpose.
    Never to whatever cluster happens to be recorded on this machine. Yields the address."""
    import ray

    explicit = address or os.environ.get("RAY_ADDRESS")
    with contextlib.ExitStack() as stack:
        target = explicit or stack.enter_context(private_head(num_cpus=num_cpus, metrics_port=metrics_port))
        if not explicit:
            use_token_auth()
        ray.init(address=target, log_to_driver=False, configure_logging=False, **init_kwargs)
        stack.callback(ray.shutdown)
        yield target
