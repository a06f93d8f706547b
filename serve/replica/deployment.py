"""`ModelServer`: one Ray Serve deployment per model, wrapping the shared `Renderer`.

Requests go through a `PipelinedRenderer` (serve/replica/pipelined.py): continuous batching (an idle
replica starts a request at once; requests arriving during a render form the next batch, up to
the model's `max_batch_size` requests) and encoding off the device's path. Rendering runs in
worker threads, so the replica's event loop keeps answering health checks and pings.
"""

from __future__ import annotations

import logging
from typing import AsyncIterator

from ray import serve

from cluster.engine import Renderer
from cluster.models import ModelSpec
from cluster.request import RenderResult, ResolvedRequest, WorkClass
from serve.replica.pipelined import PipelinedRenderer
from serve.replica.render_events import RenderEvent

log = logging.getLogger(__name__)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=8, health_check_period_s=5,
                  health_check_timeout_s=30, graceful_shutdown_timeout_s=60)
class ModelServer:
    def __init__(self, spec: dict, batching: bool = True, mixed_batches: bool = False):
        self.spec = ModelSpec.model_validate(spec)
        self.renderer = Renderer(self.spec)
        self.pipelined = PipelinedRenderer(self.renderer, max_requests=self.spec.max_batch_size if batching else 1,
                                           mixed_batches=mixed_batches)

    async def render(self, request: ResolvedRequest, work: WorkClass = WorkClass.INTERACTIVE) -> list[RenderResult]:
        """`work`: BATCH for a batch job rendering through the service (it fills the gaps that
        interactive requests leave)."""
        return await self.pipelined.render(request, work)

    async def render_events(self, request: ResolvedRequest,
                            work: WorkClass = WorkClass.INTERACTIVE) -> AsyncIterator[RenderEvent]:
        """The request as a stream (`handle.options(stream=True)`): started, progress, finished.
        Canceling the call (Serve cancels this generator) cancels the render."""
        async for event in self.pipelined.stream(request, work):
            yield event

    def simulated_gpu(self) -> dict | None:
        """A SIMULATED GPU's record (batch sizes, busy seconds); None for real engines."""
        gpu = self.renderer.pipeline
        if not hasattr(gpu, "batches"):
            return None
        return {"batches": list(gpu.batches), "busy_s": gpu.busy_s, "busy_now": gpu.busy_now}

    async def ping(self) -> str:
        """Answers while a render runs (the render is in another thread)."""
        return self.spec.name

    def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy and replaces it."""
        self.renderer.check_health()
