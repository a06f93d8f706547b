"""Result URLs on an object store live as long as they say (cluster/storage/results.py,
session_credentials.py, serve/edge/files.py), against a real S3 server (moto) and botocore's
real credential chain:

- long-lived keys: the store's own presigned URL, for the whole promised time;
- a session's credentials (a session token; a `credential_process` with an expiry, as IRSA
  gives): our URL, which the ingress answers with a redirect to a URL presigned then, for at
  most REDIRECT_S seconds, so a URL promised for 24 hours outlives the credentials' hour.
"""

from __future__ import annotations

import sys
import time
from urllib.parse import parse_qs, urlsplit

import fsspec
import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from s3fs import S3FileSystem

from cluster.storage.results import REDIRECT_S, Storage
from serve.edge.files import router
from tests.servers import s3_server

DAY = 86400


@pytest.fixture(scope="module")
def endpoint():
    with s3_server() as url:
        yield url


@pytest.fixture
def s3(endpoint, monkeypatch):
    """Long-lived keys, the endpoint in fsspec's config, and no s3fs instance (or credentials)
    kept from another test."""
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})
    S3FileSystem.clear_instance_cache()
    fs = S3FileSystem(endpoint_url=endpoint)
    if not fs.exists("results"):
        fs.mkdir("results")
    S3FileSystem.clear_instance_cache()
    yield endpoint
    S3FileSystem.clear_instance_cache()


def storage_with_a_result() -> Storage:
    storage = Storage("s3://results/r", signing_key=b"k" * 32, public_url="http://testserver")
    storage.write("tasks/t1/0.png", b"png bytes")
    return storage


def ingress(storage: Storage) -> TestClient:
    app = FastAPI()
    app.include_router(router)
    app.state.storage = storage
    return TestClient(app)


def lifetime(url: str) -> int:
    """Seconds a presigned URL is valid for, in either signature's terms (SigV4: X-Amz-Expires;
    the query-string SigV2 botocore uses with a custom endpoint: Expires, a Unix time)."""
    query = {k.lower(): v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    if "x-amz-expires" in query:
        return int(query["x-amz-expires"])
    return round(int(query["expires"]) - time.time())


def session_token(url: str) -> str | None:
    return {k.lower(): v[0] for k, v in parse_qs(urlsplit(url).query).items()}.get("x-amz-security-token")


def test_long_lived_keys_presign_for_the_whole_promised_time(s3):
    storage = storage_with_a_result()
    url = storage.url_until("tasks/t1/0.png", int(time.time()) + DAY)
    assert not storage.served_here and url.startswith(s3)  # the store's own URL, not ours
    assert DAY - 5 <= lifetime(url) <= DAY and session_token(url) is None
    assert httpx.get(url).content == b"png bytes"


def test_a_session_token_gets_our_url_and_a_short_fresh_redirect(s3, monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "a-session-token")
    storage = storage_with_a_result()
    url = storage.url_until("tasks/t1/0.png", int(time.time()) + DAY)
    assert storage.served_here and url.startswith("http://testserver/files/tasks/t1/0.png?expires=")
    answer = ingress(storage).get(url.removeprefix("http://testserver"), follow_redirects=False)
    assert answer.status_code == 307 and answer.headers["cache-control"] == "no-store"
    target = answer.headers["location"]
    assert target.startswith(s3) and session_token(target) == "a-session-token"
    assert REDIRECT_S - 5 <= lifetime(target) <= REDIRECT_S  # signed now, short: inside any session's life
    assert httpx.get(target).content == b"png bytes"
    # Our signature still guards the door: another key, or a past expiry, is refused.
    files = ingress(storage)
    assert files.get(url.removeprefix("http://testserver").replace("t1", "t2"), follow_redirects=False).status_code == 403
    old = storage.url_until("tasks/t1/0.png", int(time.time()) - 1).removeprefix("http://testserver")
    assert files.get(old, follow_redirects=False).json()["message"] == "the URL has expired"


def test_a_redirect_never_outlives_the_url_it_answers(s3, monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "a-session-token")
    storage = storage_with_a_result()
    url = storage.url_until("tasks/t1/0.png", int(time.time()) + 30).removeprefix("http://testserver")
    assert lifetime(ingress(storage).get(url, follow_redirects=False).headers["location"]) <= 30


def test_refreshable_credentials_from_the_chain_are_a_session(s3, tmp_path, monkeypatch):
    """botocore's own chain, as IRSA resolves it: temporary credentials with an expiry (here from
    a `credential_process`, the provider that runs on this machine)."""
    process = tmp_path / "credentials.py"
    process.write_text(
        "import datetime, json\n"
        "expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)\n"
        "print(json.dumps({'Version': 1, 'AccessKeyId': 'test', 'SecretAccessKey': 'test',\n"
        "                  'SessionToken': 'token-of-the-hour', 'Expiration': expiry.isoformat()}))\n")
    (tmp_path / "config").write_text(f"[profile pod]\ncredential_process = {sys.executable} {process}\n")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "pod")
    storage = storage_with_a_result()
    assert storage.served_here
    answer = ingress(storage).get(storage.url_until("tasks/t1/0.png", int(time.time()) + DAY)
                                  .removeprefix("http://testserver"), follow_redirects=False)
    assert session_token(answer.headers["location"]) == "token-of-the-hour"
    assert httpx.get(answer.headers["location"]).content == b"png bytes"


def test_the_url_we_serve_is_recognised_as_our_own_input(s3, monkeypatch):
    """An edit may name one of our result URLs as its input image: behind a session, those are
    the ingress's URLs, read straight from storage (never fetched over the network)."""
    from serve.tasks.service import TaskService

    monkeypatch.setenv("AWS_SESSION_TOKEN", "a-session-token")
    storage = storage_with_a_result()
    tasks = TaskService.__new__(TaskService)
    tasks.storage = storage
    url = storage.url_until("tasks/t1/0.png", int(time.time()) + 60)
    assert tasks._own_result_key(url) == "tasks/t1/0.png"
    assert tasks._own_result_key(url.replace("signature=", "signature=0")) is None
