"""Real servers for tests, started on free loopback ports and stopped by process id.

Where a server binary is missing its tests skip with a loud reason, except under CI=true,
where they fail: CI must run them (`make test` installs what is missing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import pytest

from cluster.runtime.processes import wait_for_port
from serve.local.service import Service, free_port, local_service  # noqa: F401  (re-exported for tests)


def require(binary: str, why: str) -> str:
    path = shutil.which(binary)
    if path:
        return path
    message = f"{binary} not found: {why} cannot run (make test installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


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
        wait_for_port(port, process, 30)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process)


@contextmanager
def raydiant_service(workdir, config_yaml: str, api_keys: str = "test-key",
                     extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Iterator[Service]:
    """`raydiant serve` with `config_yaml`, in a subprocess on a free loopback port."""
    from pathlib import Path

    config = Path(workdir) / "config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(config_yaml)
    with local_service(workdir, config, api_keys=api_keys, extra_args=extra_args, env=env) as running:
        yield running


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's standalone S3-compatible server on a free loopback port; yields its endpoint URL."""
    import sys
    from pathlib import Path

    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        require("moto_server", "the S3 tests")
    port = free_port()
    process = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@contextmanager
def chromium(profile_dir) -> Iterator["object"]:
    """Debian's headless Chromium, driven by its own chromium-driver through Selenium (nothing is
    downloaded: both binaries come from the package registry). Stopped by its process id."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    browser_binary = require("chromium", "the page tests")
    driver_binary = require("chromedriver", "the page tests")
    options = webdriver.ChromeOptions()
    options.binary_location = browser_binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,1400", f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=DriverService(executable_path=driver_binary))
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def file_server(files: dict[str, bytes], hold=None) -> Iterator["FileServer"]:
    """A loopback HTTP server in this process answering GET `path` with `files[path]` (404
    otherwise), counting every request it gets by path. `hold(path)`, when given, runs before
    each answer (a test holds a download in flight with it)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits: Counter = Counter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits[self.path] += 1
            if hold is not None:
                hold(self.path)
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield FileServer(f"http://127.0.0.1:{httpd.server_address[1]}", hits, files)
    finally:
        httpd.shutdown()
        httpd.server_close()


@dataclass
class FileServer:
    url: str
    hits: Counter
    files: dict[str, bytes]
