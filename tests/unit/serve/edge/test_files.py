"""Signed result files (serve/edge/files.py) over HTTP: valid signatures only, and local storage
only (results on an object store are served by its own presigned URLs, never through us)."""

from __future__ import annotations

import time

from fastapi import FastAPI
from fastapi.testclient import TestClient

from cluster.storage.results import Storage
from serve.edge.files import router


def client(storage: Storage) -> TestClient:
    app = FastAPI()
    app.include_router(router)
    app.state.storage = storage
    return TestClient(app)


def test_a_signed_url_serves_its_file_and_nothing_else(tmp_path):
    storage = Storage(str(tmp_path), signing_key=b"k" * 32, public_url="http://testserver")
    storage.write("tasks/t1/0.png", b"png bytes")
    storage.write("tasks/t2/0.png", b"other")
    url = storage.url_until("tasks/t1/0.png", int(time.time()) + 60, "http://testserver").removeprefix(
        "http://testserver")
    files = client(storage)
    assert files.get(url).content == b"png bytes"
    assert files.get(url.replace("t1", "t2")).status_code == 403  # the signature names its key
    assert files.get("/files/tasks/t1/0.png").status_code == 403
    assert files.get(url.replace("tasks/t1/0.png", "tasks/t1/../t2/0.png")).status_code in (403, 404)


def test_results_on_an_object_store_are_never_served_here():
    storage = Storage("memory://results", signing_key=b"k" * 32)
    assert not storage.is_local
    storage.write("tasks/t1/0.png", b"png bytes")
    url = f"/files/tasks/t1/0.png?expires={int(time.time()) + 60}&signature=whatever"
    answer = client(storage).get(url)
    assert answer.status_code == 404 and "object store" in answer.json()["message"]
