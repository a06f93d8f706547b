"""`ModelServer`: one Ray Serve deployment per model, wrapping the shared `Renderer`.

A request is prepared once as it arrives (`Renderer.prepare`: its adapters' files fetched and
checked, its input image decoded), in a thread when it brings any, so the event loop that feeds
the device never waits on a download; a request refused there is answered at once and never
joins a batch. Prepared requests go through a `PipelinedRenderer` (serve/replica/pipelined.py):
continuous batching (an idle replica starts a request at once; requests arriving during a render
form the next batch, up to the model's `max_batch_size` requests) and encoding off the device's
path. Rendering runs in worker threads, so the replica's event loop keeps answering health
checks and pings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from ray import serve

from cluster.engine.renderer import Prepared, Renderer
from cluster.lora.cache import LoraCache
from cluster.spec.catalogue import ModelSpec
from cluster.spec.config import FetchConfig, LoraConfig
from cluster.spec.errors import RenderError
from cluster.spec.request import RenderResult, ResolvedRequest, WorkClass
from cluster.storage.guarded_fetch import FetchPolicy
from serve.replica.pipelined import PipelinedRenderer
from serve.replica.render_events import Finished, RenderEvent

log = logging.getLogger(__name__)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=8, health_check_period_s=5,
                  health_check_timeout_s=30, graceful_shutdown_timeout_s=60)
class ModelServer:
    def __init__(self, spec: dict, batching: bool = True, mixed_batches: bool = False,
                 loras: dict | None = None, fetch: dict | None = None):
        """`loras`, `fetch`: the config's `loras` section and `serve.fetch` (the node's adapter
        cache and the address rules its downloads obey)."""
        self.spec = ModelSpec.model_validate(spec)
        cache, rules = LoraConfig.model_validate(loras or {}), FetchConfig.model_validate(fetch or {})
        self.renderer = Renderer(self.spec, lora_cache=LoraCache(
            cache.cache_dir, cache.cache_bytes, cache.max_file_bytes,
            FetchPolicy(rules.allow_loopback, rules.allow_private, rules.max_redirects, rules.timeout_s)))
        self.pipelined = PipelinedRenderer(self.renderer, max_requests=self.spec.max_batch_size if batching else 1,
                                           mixed_batches=mixed_batches)
        # Serve's model multiplexing, keyed by adapter set: it tells Serve's routers which sets
        # this replica holds, so requests with a set go where it is warm (callers set
        # `multiplexed_model_id`). The pipeline decides what it keeps (`Renderer.adapters`: LRU
        # with an admission filter); after each batch with adapters, Serve's list (an LRU of as
        # many slots) is brought to the same sets (`_report_kept_sets`).
        async def hold_set(set_id: str) -> str:
            return set_id  # the files are on the node already (`_prepare` fetched them)

        self._hold_set = serve.multiplexed(max_num_models_per_replica=self.spec.lora_slots)(hold_set)

    async def _prepare(self, request: ResolvedRequest) -> Prepared | RenderResult:
        """The request prepared for the device, or its one result when refused. What blocks
        (adapter downloads and checks, image decoding) runs in a thread."""
        if request.loras or request.init_image is not None:
            prepared = await asyncio.to_thread(self.renderer.prepare, request)
        else:
            prepared = self.renderer.prepare(request)  # nothing to fetch or decode
        return self.renderer.refused(request, prepared) if isinstance(prepared, RenderError) else prepared

    async def _report_kept_sets(self) -> None:
        """Touch the kept sets in their LRU order: Serve's LRU then holds exactly them (a set it
        lacks goes in and pushes out the least recent, which by then is one no longer kept)."""
        for set_id in self.renderer.adapters.kept_sets():
            await self._hold_set(set_id)

    async def render(self, request: ResolvedRequest, work: WorkClass = WorkClass.INTERACTIVE) -> list[RenderResult]:
        """`work`: BATCH for a batch job rendering through the service (it fills the gaps that
        interactive requests leave)."""
        prepared = await self._prepare(request)
        if isinstance(prepared, RenderResult):
            return [prepared]
        try:
            return await self.pipelined.render(prepared, work)
        finally:
            if request.loras:
                await self._report_kept_sets()

    async def render_events(self, request: ResolvedRequest,
                            work: WorkClass = WorkClass.INTERACTIVE) -> AsyncIterator[RenderEvent]:
        """The request as a stream (`handle.options(stream=True)`): started, progress, finished.
        Canceling the call (Serve cancels this generator) cancels the render."""
        prepared = await self._prepare(request)
        if isinstance(prepared, RenderResult):
            yield Finished([prepared])
            return
        try:
            async for event in self.pipelined.stream(prepared, work):
                yield event
        finally:
            if request.loras:
                await self._report_kept_sets()

    def simulated_gpu(self) -> dict | None:
        """A SIMULATED GPU's record (batch sizes, busy seconds); None for real engines."""
        gpu = self.renderer.pipeline
        if not hasattr(gpu, "batches"):
            return None
        return {"batches": list(gpu.batches), "busy_s": gpu.busy_s, "busy_now": gpu.busy_now}

    def adapter_stats(self) -> dict:
        """This replica's LoRA figures: device batches whose adapter set was warm or not,
        adapter files loaded and the seconds that took (bench/lora.py reads them)."""
        return self.renderer.adapters.stats() | {"replica": serve.get_replica_context().replica_id.unique_id}

    async def ping(self) -> str:
        """Answers while a render runs (the render is in another thread)."""
        return self.spec.name

    def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy and replaces it."""
        self.renderer.check_health()
