"""`ServedModel`: a batch job's images rendered by a running Serve application's model replicas.

The job shares those replicas with the service's own (interactive) requests, so it keeps them
busy without flooding them:

- Its requests are batch work (`WorkClass.BATCH`): a replica starts interactive requests first
  and fills every gap with batch work (serve/replica/pipelined.py).
- In flight, the whole job keeps `per_replica` images for each running replica: two device
  batches (one on the device, the next waiting, so the device never idles between them), but
  never more than the replica's `max_ongoing_requests` less one device batch, so an interactive
  request always finds a free slot at a replica instead of queueing behind the job in Serve's
  router. Each render actor keeps its share, whichever of its shard calls sends the images (a
  lone last shard keeps the replicas as busy as two).
- The number of running replicas is read from Serve every `REFRESH_S`: a deployment that
  autoscales sees the job's work among its ongoing requests (more than its target per replica
  when the target is below two device batches), adds replicas, and the job sends more as they
  come up; when the job ends the load goes and the deployment scales back down.

Guarantee and limit: what the job holds in flight is bounded by the replicas that run now, not by
the shards it renders; an actor's share is at least one image, so many more actors than replica
slots (a huge `--concurrency` on one replica) can still fill the replicas' headroom.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import replace
from typing import Iterator

from cluster.spec.catalogue import deployment_name
from cluster.spec.errors import ErrorCode, RenderError, first_line
from cluster.spec.loras import adapter_set_id
from cluster.spec.request import RenderResult, ResolvedRequest, WorkClass

REFRESH_S = 5.0  # how often the running replicas are counted


def per_replica(max_batch_size: int, max_ongoing_requests: int) -> int:
    """Images the job keeps at one replica: two device batches, leaving one batch of slots free."""
    return max(1, min(2 * max_batch_size, max_ongoing_requests - max_batch_size))


class ServedModel:
    """A model deployment of a running Serve application, rendering like a Renderer. One per
    render actor, shared by the actor's concurrent shard calls."""

    def __init__(self, handle, app_name: str, model: str, max_batch_size: int, max_ongoing_requests: int,
                 actors: int):
        self.handle = handle
        self.app_name, self.deployment = app_name, deployment_name(model)
        self.per_replica = per_replica(max_batch_size, max_ongoing_requests)
        self.actors = max(1, actors)
        self._replicas, self._read_at = 1, float("-inf")
        self._taken = 0  # images in flight from this actor
        self._freed = threading.Condition()

    @classmethod
    def connect(cls, app_name: str, model: str, max_batch_size: int, max_ongoing_requests: int,
                actors: int) -> "ServedModel | RenderError":
        from ray import serve

        try:
            handle = serve.get_deployment_handle(deployment_name(model), app_name=app_name)
        except Exception as exc:  # noqa: BLE001 - Serve raises several types for "not there"
            # Retryable: a rerun once the app is up renders these images.
            return RenderError(ErrorCode.MODEL_UNAVAILABLE, f"model {model} is not served by Serve application "
                                                            f"'{app_name}': {first_line(exc)}")
        return cls(handle, app_name, model, max_batch_size, max_ongoing_requests, actors)

    def window(self) -> int:
        """Images this actor may have in flight now: its share of the running replicas' slots."""
        now = time.monotonic()
        if now - self._read_at >= REFRESH_S:
            counted = running_replicas(self.app_name, self.deployment)
            if counted is not None:
                self._replicas = max(counted, 1)  # at 0 (scaling from zero) one replica's share waits
            self._read_at = now
        return max(1, math.ceil(self.per_replica * self._replicas / self.actors))

    def render(self, requests: list[ResolvedRequest]) -> Iterator[RenderResult]:
        """Each request's one result (`request_index` its position), in order. A request is sent
        when the actor has a free slot; while none is free, this call reads its own oldest
        answer (which frees one), or, with nothing of its own in flight, waits for another call
        of the actor to free one (that call holds answers it can read, so the wait ends)."""
        in_flight: deque = deque()
        for position, request in enumerate(requests):
            while not self._take_slot(wait=not in_flight):
                yield self._result(*in_flight.popleft())
            handle = self.handle.options(multiplexed_model_id=adapter_set_id(request.loras)) if request.loras \
                else self.handle  # to a replica that holds its adapter set
            in_flight.append((position, request, handle.render.remote(request, WorkClass.BATCH)))
        while in_flight:
            yield self._result(*in_flight.popleft())

    def _take_slot(self, wait: bool) -> bool:
        with self._freed:
            while self._taken >= self.window():
                if not wait:
                    return False
                self._freed.wait(timeout=REFRESH_S)  # the window may grow with the replicas too
            self._taken += 1
            return True

    def _result(self, position: int, request: ResolvedRequest, response) -> RenderResult:
        try:
            return self._answer(position, request, response)
        finally:
            with self._freed:
                self._taken -= 1
                self._freed.notify_all()

    @staticmethod
    def _answer(position: int, request: ResolvedRequest, response) -> RenderResult:
        try:
            return replace(response.result()[0], request_index=position)
        except Exception as exc:  # noqa: BLE001 - a replica lost mid-call; retryable by a rerun
            return RenderResult(request_id=request.request_id, request_index=position, index=0, seed=request.seed,
                                width=request.width, height=request.height, error=RenderError(
                                    ErrorCode.MODEL_UNAVAILABLE, f"the Serve replica failed: {first_line(exc)}"))


def running_replicas(app_name: str, deployment: str) -> int | None:
    """RUNNING replicas of `deployment` in Serve's view; None when Serve cannot say now."""
    from ray import serve

    try:
        app = serve.status().applications.get(app_name)
        status = app.deployments.get(deployment) if app else None
    except Exception:  # noqa: BLE001 - a controller that cannot answer now: keep the last count
        return None
    return status.replica_states.get("RUNNING", 0) if status else 0
