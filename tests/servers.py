"""Real servers for tests, started on free loopback ports and stopped by process id.

Where a server binary is missing its tests skip with a loud reason, except under CI=true,
where they fail: CI must run them (`make test` installs what is missing).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require(binary: str, why: str) -> str:
    path = shutil.which(binary)
    if path:
        return path
    message = f"{binary} not found: {why} cannot run (make test installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout_s}s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway Redis on a free loopback port; yields its URL."""
    binary = require("redis-server", "the Redis task-store tests")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)


@dataclass
class Service:
    url: str  # http://127.0.0.1:PORT
    pid: int  # of `raydiant serve`, also its session id

    def processes(self, pattern: str) -> list[int]:
        """Pids in this service's session whose command line contains `pattern`."""
        out = subprocess.run(["ps", "-e", "-o", "pid=,sid=,args="], capture_output=True, text=True).stdout
        found = []
        for line in out.splitlines():
            pid, sid, args = line.split(None, 2)
            if int(sid) == self.pid and pattern in args:
                found.append(int(pid))
        return found


@contextmanager
def raydiant_service(workdir, config_yaml: str, api_keys: str = "test-key", port: int | None = None,
                     startup_timeout_s: float = 240, extra_args: tuple[str, ...] = ()) -> Iterator[Service]:
    """`raydiant serve` in a subprocess (its own process group, so its Ray cluster goes with it);
    yields the base URL once /healthz answers 200. Stopped with SIGTERM (drain), then SIGKILL."""
    import signal
    import sys
    import urllib.request
    from pathlib import Path

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yaml"
    config.write_text(config_yaml)
    port = port or free_port()
    env = os.environ | {"RAYDIANT_API_KEYS": api_keys, "RAY_DISABLE_USAGE_STATS": "1"}
    raydiant = Path(sys.executable).parent / "raydiant"
    log = open(workdir / "serve.log", "ab")
    process = subprocess.Popen([str(raydiant), "serve", "--config", str(config), "--port", str(port), *extra_args],
                               cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"raydiant serve exited with {process.returncode}; see {workdir / 'serve.log'}")
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"service not healthy after {startup_timeout_s}s; see {workdir / 'serve.log'}")
            time.sleep(1)
        yield Service(base, process.pid)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever of its group is left (Ray workers)
        except ProcessLookupError:
            pass
        process.wait()
        log.close()
