"""The ingress's pure parts (serve/ingress.py): which door answers a path's unhandled errors, and
when a model counts as covered for /healthz."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from ray.serve.schema import DeploymentStatus, ReplicaState

from serve.doors.acedata import router as acedata_routes
from serve.doors.dashscope import router as dashscope_routes
from serve.doors.openai import router as openai_routes
from serve.doors.web import router as web_routes
from serve.ingress import covered, create_app, door_of


@pytest.mark.parametrize(("path", "routes"), [
    ("/flux/images", acedata_routes), ("/v1/images/generations", openai_routes), ("/web/api/tasks", web_routes),
    ("/api/v1/tasks/x", dashscope_routes), ("/healthz", dashscope_routes), ("/", dashscope_routes)])
def test_unhandled_errors_take_the_shape_of_the_door_of_the_path(path, routes):
    assert door_of(path) is routes.door


@pytest.mark.parametrize(("method", "path", "shape"), [
    ("POST", "/api/v1/services/aigc/text2image/image-synthesis", "code"),
    ("POST", "/api/v1/services/aigc/text2image/image-synthesis/", "code"),
    ("GET", "/api/v1/tasks/some-id", "code"),
    ("POST", "/flux/images", "success"),
    ("POST", "/flux/tasks", "success"),
    ("POST", "/v1/images/generations", "error"),
    ("GET", "/v1/models", "error"),
    ("GET", "/web/api/tasks", "code"),
])
def test_every_door_route_is_mounted_and_an_internal_error_takes_its_shape(method, path, shape):
    """An app without its replica's state fails inside every route: the answer proves the route is
    there (not 404) and that the unhandled error is a 500 in the door's own shape."""
    client = TestClient(create_app(), raise_server_exceptions=False)
    answer = client.request(method, path, headers={"authorization": "Bearer k"}, json={})
    assert answer.status_code == 500 and shape in answer.json()
    assert "internal error" in str(answer.json())


def deployment(status: DeploymentStatus, running: int = 0):
    return SimpleNamespace(status=status, replica_states={ReplicaState.RUNNING: running})


@pytest.mark.parametrize(("state", "expected"), [
    (None, False),
    (deployment(DeploymentStatus.HEALTHY, 1), True),
    (deployment(DeploymentStatus.UPSCALING, 0), True),  # at 0 replicas, scaling up: requests wait
    (deployment(DeploymentStatus.UNHEALTHY, 1), True),  # a replica lost with a node is being replaced
    (deployment(DeploymentStatus.UNHEALTHY, 0), False),
    (deployment(DeploymentStatus.DEPLOY_FAILED, 1), False),
])
def test_a_model_is_covered_while_serve_serves_it_or_a_replica_runs(state, expected):
    assert covered(state) is expected


def test_healthz_asks_the_serve_controller_at_most_once_a_second(monkeypatch):
    import serve.ingress as ingress

    calls = []

    async def controller(names):
        calls.append(names)
        return {"status": "ok", "models": names, "down": []}, 200

    monkeypatch.setattr(ingress, "_health", controller)
    now = [1000.0]  # the ingress's clock, moved by hand: a slow machine must not age the answer
    monkeypatch.setattr(ingress, "monotonic", lambda: now[0])
    app = create_app()
    app.state.handles = {"flux-schnell": object()}
    client = TestClient(app)
    answers = [client.get("/healthz") for _ in range(50)]
    assert all(a.status_code == 200 and a.json()["status"] == "ok" for a in answers)
    assert len(calls) == 1  # 50 probes, one controller call
    now[0] += ingress.HEALTH_CACHE_S * 0.9
    client.get("/healthz")
    assert len(calls) == 1
    now[0] += ingress.HEALTH_CACHE_S * 0.1  # a second after the first call
    client.get("/healthz")
    assert len(calls) == 2


def test_requests_without_a_valid_key_are_limited_per_client_address(monkeypatch):
    import serve.ingress as ingress
    from cluster.spec.config import RateLimitConfig
    from serve.edge.auth import ApiKeys
    from serve.edge.http import Gate
    from serve.edge.ratelimit import RateLimiter

    async def controller(names):
        return {"status": "ok", "models": names, "down": []}, 200

    monkeypatch.setattr(ingress, "_health", controller)
    now = [1000.0]  # the ingress's clock, moved by hand: a slow machine must not age the answer
    monkeypatch.setattr(ingress, "monotonic", lambda: now[0])
    app = create_app()
    app.state.handles = {}
    key = "a-valid-key-of-many-characters"
    app.state.gate = Gate(ApiKeys([key]), RateLimiter(RateLimitConfig()), 1024)
    app.state.anonymous_limiter = RateLimiter(RateLimitConfig(requests_per_second=1, burst=3), namespace="address")
    client = TestClient(app)
    assert [client.get("/healthz").status_code for _ in range(3)] == [200, 200, 200]
    refused = client.get("/healthz")
    assert refused.status_code == 429 and refused.headers["Retry-After"] and refused.json()["code"] == "Throttling.RateQuota"
    guessed = client.get("/api/v1/tasks/x", headers={"authorization": "Bearer guessed"})
    assert guessed.status_code == 429  # wrong keys spend the address's budget too: no free guessing
    for forged in ("198.51.100.7", "203.0.113.1, 198.51.100.8"):  # no trusted proxies: the header is ignored
        assert client.get("/healthz", headers={"x-forwarded-for": forged}).status_code == 429
    keyed = client.get("/healthz", headers={"authorization": f"Bearer {key}"})
    assert keyed.status_code == 200  # a valid key spends its own budget, not the address's
    for junk in (b"Bearer \xff\xfe", b"\x00", b"Bearer " + b"k" * 10_000):  # bytes no key is: refused, never a 500
        assert client.get("/healthz", headers={"authorization": junk}).status_code == 429
