"""`ModelServer`: one Ray Serve deployment per model, wrapping the shared `Renderer`.

`@serve.batch` gathers concurrent requests (up to the model's `max_batch_size` requests); the
Renderer splits their images into batches of one shape. Rendering runs in a worker thread so
the replica's event loop keeps answering health checks and pings during a long render.
"""

from __future__ import annotations

import asyncio
import logging

from ray import serve

from cluster.engine import Renderer
from cluster.models import ModelSpec
from cluster.request import RenderRequest, RenderResult

log = logging.getLogger(__name__)


def deployment_name(model: str) -> str:
    """Serve deployment name of a model (dots are not welcome in deployment names)."""
    return "model-" + model.replace(".", "_")


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=8, health_check_period_s=5,
                  health_check_timeout_s=30, graceful_shutdown_timeout_s=60)
class ModelServer:
    def __init__(self, spec: dict, batch_wait_timeout_s: float = 0.02, batching: bool = True):
        self.spec = ModelSpec.model_validate(spec)
        self.renderer = Renderer(self.spec)
        self.render.set_max_batch_size(self.spec.max_batch_size if batching else 1)
        self.render.set_batch_wait_timeout_s(batch_wait_timeout_s)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.02)
    async def render(self, requests: list[RenderRequest]) -> list[list[RenderResult]]:
        results = await asyncio.to_thread(self.renderer.render, requests)
        grouped: list[list[RenderResult]] = [[] for _ in requests]
        for result in results:
            grouped[result.request_index].append(result)
        return grouped

    async def ping(self) -> str:
        """Answers while a render runs (the render is in another thread)."""
        return self.spec.name

    def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy and replaces it."""
        self.renderer.check_health()
