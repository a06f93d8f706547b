"""`ServedModel` (jobs/worker/served.py): how much of a shared service a batch job keeps in flight, on a
FAKE deployment handle that records every call (no Ray)."""

from __future__ import annotations

import threading

import pytest

from cluster.spec.errors import ErrorCode
from cluster.spec.request import RenderResult, WorkClass
from jobs.worker import served
from jobs.worker.served import ServedModel, per_replica
from tests.factories import resolved_request


class FakeHandle:
    """Answers each call when its result is read; counts the calls in flight at the most."""

    def __init__(self, fail_at: int | None = None):
        self.lock = threading.Lock()
        self.in_flight = self.most = 0
        self.works: list[WorkClass] = []
        self.fail_at = fail_at
        self.render = self

    def remote(self, request, work):
        with self.lock:
            self.works.append(work)
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            return FakeResponse(self, request, len(self.works) - 1)


class FakeResponse:
    def __init__(self, handle: FakeHandle, request, number: int):
        self.handle, self.request, self.number = handle, request, number

    def result(self):
        with self.handle.lock:
            self.handle.in_flight -= 1
        if self.number == self.handle.fail_at:
            raise RuntimeError("replica died")
        return [RenderResult(request_id=self.request.request_id, request_index=0, index=0, seed=self.request.seed,
                             width=self.request.width, height=self.request.height, image=b"png")]


def test_per_replica_is_two_device_batches_with_a_batch_of_slots_left_free():
    assert per_replica(max_batch_size=4, max_ongoing_requests=16) == 8
    assert per_replica(max_batch_size=4, max_ongoing_requests=8) == 4  # a batch of slots stays for the API
    assert per_replica(max_batch_size=4, max_ongoing_requests=4) == 1


@pytest.mark.parametrize("replicas, actors, window", [(1, 1, 8), (3, 2, 12), (4, 4, 8), (1, 16, 1)])
def test_in_flight_follows_the_running_replicas_shared_by_the_actors(monkeypatch, replicas, actors, window):
    monkeypatch.setattr(served, "running_replicas", lambda app, deployment: replicas)
    handle = FakeHandle()
    model = ServedModel(handle, "raydiant", "flux-schnell", max_batch_size=4, max_ongoing_requests=16, actors=actors)
    requests = [resolved_request(seed=i, request_id=f"r{i}") for i in range(40)]
    results = list(model.render(requests))
    assert [r.request_index for r in results] == list(range(40)) and all(r.ok for r in results)
    assert handle.most == window
    assert set(handle.works) == {WorkClass.BATCH}  # interactive requests go first at the replicas


def test_a_deployment_at_zero_replicas_still_gets_one_replicas_share(monkeypatch):
    monkeypatch.setattr(served, "running_replicas", lambda app, deployment: 0)
    handle = FakeHandle()
    model = ServedModel(handle, "raydiant", "flux-schnell", max_batch_size=4, max_ongoing_requests=16, actors=1)
    list(model.render([resolved_request(seed=i) for i in range(10)]))
    assert handle.most == 8  # the autoscaler sees work waiting and starts a replica


def test_the_count_is_kept_when_serve_cannot_answer(monkeypatch):
    counts = iter([3, None])
    monkeypatch.setattr(served, "running_replicas", lambda app, deployment: next(counts))
    monkeypatch.setattr(served, "REFRESH_S", 0.0)
    model = ServedModel(FakeHandle(), "raydiant", "flux-schnell", max_batch_size=4, max_ongoing_requests=16, actors=1)
    assert model.window() == 24
    assert model.window() == 24


def test_a_lost_replica_fails_only_its_image_with_a_retryable_code(monkeypatch):
    monkeypatch.setattr(served, "running_replicas", lambda app, deployment: 1)
    model = ServedModel(FakeHandle(fail_at=2), "raydiant", "flux-schnell", max_batch_size=4,
                        max_ongoing_requests=16, actors=1)
    results = list(model.render([resolved_request(seed=i) for i in range(5)]))
    assert [r.ok for r in results] == [True, True, False, True, True]
    assert results[2].error.code == ErrorCode.MODEL_UNAVAILABLE and results[2].error.code.retryable


def test_two_shard_calls_of_an_actor_share_its_window_and_both_finish(monkeypatch):
    monkeypatch.setattr(served, "running_replicas", lambda app, deployment: 1)
    handle = FakeHandle()
    model = ServedModel(handle, "raydiant", "flux-schnell", max_batch_size=4, max_ongoing_requests=16, actors=1)
    finished: dict[str, int] = {}

    def shard(name: str) -> None:
        finished[name] = len(list(model.render([resolved_request(seed=i) for i in range(200)])))

    calls = [threading.Thread(target=shard, args=(name,)) for name in ("a", "b")]
    for call in calls:
        call.start()
    for call in calls:
        call.join(timeout=30)
    assert finished == {"a": 200, "b": 200}
    assert handle.most <= 8 and handle.in_flight == 0
