"""Run `raydiant serve` in a subprocess on loopback, for the demo, benchmarks and tests.

The subprocess gets its own process session, so the Ray cluster it starts goes with it: stop
sends SIGTERM (Serve drains), then SIGKILL to whatever of that session is left.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cluster.runtime.processes import (  # noqa: F401 (re-exported)
    free_port, kill_session, session_pids, stop_session, watch_owner,
)


@dataclass
class Service:
    url: str  # http://127.0.0.1:PORT
    pid: int  # of `raydiant serve`, also its session id

    def processes(self, pattern: str) -> list[int]:
        """Pids in this service's session whose command line contains `pattern`."""
        out = subprocess.run(["ps", "-e", "-o", "pid=,sid=,args="], capture_output=True, text=True).stdout
        rows = (line.split(None, 2) for line in out.splitlines())
        return [int(pid) for pid, sid, args in rows if int(sid) == self.pid and pattern in args]


@contextmanager
def local_service(workdir: str | Path, config: Path | None = None, api_keys: str = "local-key",
                  port: int | None = None, extra_args: tuple[str, ...] = (),
                  startup_timeout_s: float = 240, env: dict[str, str] | None = None) -> Iterator[Service]:
    """Start the service, yield it once /healthz answers 200, stop it on exit. `env` is added to
    its environment (and so to its Ray head's and replicas')."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    command = [str(Path(sys.executable).parent / "raydiant"), "serve", "--port", str(port), *extra_args]
    if config is not None:
        command += ["--config", str(config)]
    env = os.environ | (env or {}) | {"RAYDIANT_API_KEYS": api_keys, "RAY_DISABLE_USAGE_STATS": "1",
                                      "PYTHONUNBUFFERED": "1"}
    log_path = workdir / "serve.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        watchdog = watch_owner(process.pid)  # the service dies with us, even when we are SIGKILLed
        try:
            _wait_healthy(f"http://127.0.0.1:{port}", process, startup_timeout_s, log_path)
            yield Service(f"http://127.0.0.1:{port}", process.pid)
        finally:
            _stop(process)
            watchdog.kill()
            watchdog.wait()


def _wait_healthy(base: str, process: subprocess.Popen, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"raydiant serve exited with {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:  # not listening yet, or Serve's proxy up before the app (an HTTP error)
            pass
        except http.client.HTTPException as error:  # something listens there, but speaks no HTTP
            raise RuntimeError(f"{base} answers, but not with HTTP ({error!r}): another server holds "
                               f"that port; see {log_path}") from error
        if time.monotonic() > deadline:
            raise TimeoutError(f"service not healthy after {timeout_s}s; see {log_path}")
        time.sleep(1)


def _stop(process: subprocess.Popen) -> None:
    stop_session(process, grace_s=60)  # SIGTERM drains Serve; then whatever of its session is left
