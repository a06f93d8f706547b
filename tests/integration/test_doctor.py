"""`raydiant doctor` against what can be made wrong here: each check fails for its own cause
(a placeholder key, a cache that is not a folder, a missing bucket on a real S3 server, a Redis
with another password or one that evicts, GPUs asked of a machine without them), and the
embedded default passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest
import redis
import torch

from cluster.spec.config import load_config
from serve.doctor import run_checks
from tests.servers import redis_server, s3_server

RAYDIANT = str(Path(sys.executable).parent / "raydiant")
STRONG_KEY = "f3a9c2e81b7d4065af1e"


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A clean working folder and cache, and a strong API key: the embedded default's setting."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYDIANT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RAYDIANT_API_KEYS", STRONG_KEY)
    for name in ("RAYDIANT_REDIS_URL", "RAYDIANT_REDIS_PASSWORD", "RAYDIANT_SIGNING_KEY", "RAYDIANT_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def config(tmp_path: Path, text: str):
    path = tmp_path / "doctor.yaml"
    path.write_text("models:\n  flux-schnell: {source: 'tiny:flux'}\n" + text)
    return load_config(path)


def failed(checks) -> dict[str, str]:
    return {c.name: c.detail for c in checks if not c.ok}


def test_the_embedded_default_passes_and_a_placeholder_key_fails_the_command(here):
    assert failed(run_checks(load_config(None))) == {}
    done = subprocess.run([RAYDIANT, "doctor"], capture_output=True, text=True, timeout=120,
                          env=os.environ | {"RAYDIANT_API_KEYS": "changeme"})
    assert done.returncode == 1
    [line] = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert line.startswith("FAIL secrets: API key 1 is a placeholder; fix: use random values")


def test_a_cache_that_is_not_a_folder_fails(here, monkeypatch):
    (here / "not-a-folder").write_text("x")
    monkeypatch.setenv("RAYDIANT_CACHE", str(here / "not-a-folder"))
    assert "is not writable" in failed(run_checks(load_config(None)))["weights cache"]


def test_a_missing_bucket_fails_storage_and_the_model_source(here, monkeypatch):
    with s3_server() as endpoint:
        for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                            "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(name, value)
        # fsspec read its FSSPEC_* variables when it was imported: the endpoint goes in its config.
        monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})
        cfg = config(here, "  flux-dev: {source: 's3://no-such-bucket/flux-dev'}\n"
                           "storage: {root: 's3://no-such-bucket/results'}\n")
        problems = failed(run_checks(cfg))
    assert problems.keys() == {"result storage", "model flux-dev"}
    assert problems["result storage"].startswith("cannot put, get and delete under s3://no-such-bucket/results")
    assert problems["model flux-dev"].startswith("cannot list weights at s3://no-such-bucket/flux-dev")
    # The local S3 server's own answer, not an unreachable AWS.
    assert all(problem.endswith("The specified bucket does not exist") for problem in problems.values())


def test_redis_with_another_password_or_an_eviction_policy_fails(here, monkeypatch):
    with redis_server() as url:
        cfg = config(here, f"tasks: {{backend: redis, url: '{url}'}}\n")
        admin = redis.Redis.from_url(url)
        admin.config_set("maxmemory-policy", "allkeys-lru")
        assert "evicts when full (maxmemory-policy allkeys-lru)" in failed(run_checks(cfg))["task store"]
        admin.config_set("maxmemory-policy", "noeviction")
        assert failed(run_checks(cfg)) == {}
        admin.config_set("requirepass", "the-real-password")
        monkeypatch.setenv("RAYDIANT_REDIS_PASSWORD", "another-password")
        assert "refused the password" in failed(run_checks(cfg))["task store"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has the GPU the check asks for")
def test_gpus_asked_of_a_machine_without_them_fail(here):
    cfg = config(here, "serve:\n  deployments:\n    flux-schnell: {ray_actor_options: {num_gpus: 1}}\n")
    problems = failed(run_checks(cfg))
    assert "sees no CUDA device" in problems["GPUs here"]
    assert problems["CUDA driver"] == ("torch is a CPU build" if torch.version.cuda is None else
                                       "no NVIDIA driver here (libcuda.so.1 cannot be loaded)")


def test_a_placeholder_hub_token_fails(here, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_...")
    assert "HF_TOKEN is not a Hugging Face token" in failed(run_checks(load_config(None)))["secrets"]
