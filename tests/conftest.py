"""Shared fixtures: tiny models built once per machine into a cache under var/, renderers
loaded once per session."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
# Tiny models are deterministic, so one build per machine serves every run.
os.environ.setdefault("RAYDIANT_CACHE", str(REPO / "var" / "test-cache"))
# Every Ray cluster a test starts inherits these. Serve's controller kills an HTTP proxy that is
# not ready within 3 checks of 5 s; on a loaded 2-core CI machine a proxy can take longer than
# that to import and start (seen: killed after 20 s, failing `raydiant serve` at start).
os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")
os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "30")
# Load reaches Serve's autoscaler every 2 s instead of every 10 s, so the autoscaling tests (with
# look-back periods of a few seconds) see a burst while it lasts.
os.environ.setdefault("RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S", "2")
os.environ.setdefault("RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S", "2")

from cluster.engine.renderer import Renderer  # noqa: E402
from cluster.spec.config import load_config  # noqa: E402  (after RAYDIANT_CACHE is set)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups (it runs first otherwise)
def pytest_collection_modifyitems(config, items):
    """GPU tests skip without CUDA, whatever the -m selection. Under `pytest -n N --dist
    loadgroup` (make test), each test module runs on one worker, so its module fixtures (a Ray
    cluster, a service) start once; the contract tests all run on one, so their session service
    starts once; the chaos tests all run on one, so at most one multi-node cluster (4 raylets)
    or chaos service runs at a time."""
    import torch

    for item in items:
        module = item.nodeid.split("::", 1)[0]
        suite = module.split("/")[1] if module.count("/") >= 2 else ""
        item.add_marker(pytest.mark.xdist_group(suite if suite in ("contract", "chaos") else module))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    """xdist 3.8's `--dist loadgroup` marks each test's group in `item._nodeid`, which pytest 9.2
    no longer reads: groups would be ignored silently, and every module fixture (clusters,
    services) would start on both workers. Refused here rather than found in the suite's time."""
    if config.getoption("dist", None) == "loadgroup" and pytest.version_tuple[:2] >= (9, 2):
        raise pytest.UsageError(f"pytest {pytest.__version__} ignores xdist's test groups; install the "
                                f"pinned test dependencies (pyproject.toml: pytest<9.2)")


@pytest.fixture(scope="session")
def local_config():
    return load_config()


def _renderer(local_config, name: str) -> Renderer:
    return Renderer(local_config.spec(name).model_copy(update={"warmup": False}), device="cpu")


@pytest.fixture(scope="session")
def flux_renderer(local_config) -> Renderer:
    return _renderer(local_config, "flux-schnell")


@pytest.fixture(scope="session")
def sdxl_renderer(local_config) -> Renderer:
    return _renderer(local_config, "stable-diffusion-xl")


@pytest.fixture(scope="session")
def kontext_renderer(local_config) -> Renderer:
    return _renderer(local_config, "flux-kontext")


def pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def images(engine, *requests) -> list[np.ndarray]:
    """The pixels `engine` (a Renderer) renders for `requests`, every result asserted ok."""
    results = engine.render(list(requests))
    assert all(r.ok for r in results), [r.error for r in results]
    return [pixels(r.image) for r in results]


@pytest.fixture(scope="session")
def tiny_sd15_dir() -> Path:
    """The tiny SD 1.5 pipeline directory (built on first use)."""
    from cluster.doubles.tiny_pipelines import TINY_DIRS, build_tiny, tiny_cache_dir
    from cluster.spec.families import Family

    return build_tiny(Family.SD15, tiny_cache_dir() / TINY_DIRS[Family.SD15])


SCREENSHOTS = REPO / "var" / "artifacts" / "screenshots"  # test artefacts of the browser tests


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """One headless Chromium for every page test (tests/servers.py: `chromium`)."""
    from tests.servers import chromium

    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def shot(browser, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / name))
