"""A real webhook receiver on loopback for tests: records every delivery, answers with the
statuses it is told (then 200), optionally slowly."""

from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    url: str
    deliveries: list[Delivery] = field(default_factory=list)
    statuses: deque = field(default_factory=deque)  # answers to give before 200s
    always: int | None = None  # answer this to every delivery
    delays: dict[str, float] = field(default_factory=dict)  # path -> seconds to wait before answering

    def to(self, path: str) -> str:
        return f"{self.url}{path}"

    def received(self, path: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.path == path]

    def wait_for(self, path: str, count: int = 1, timeout_s: float = 60) -> list[Delivery]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(got := self.received(path)) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{len(self.received(path))} deliveries to {path} after {timeout_s}s, wanted {count}")


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            receiver.deliveries.append(Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                                                time.time()))
            if delay_s := receiver.delays.get(self.path):
                time.sleep(delay_s)
            status = receiver.always or (receiver.statuses.popleft() if receiver.statuses else 200)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Receiver(f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        httpd.shutdown()
        httpd.server_close()
