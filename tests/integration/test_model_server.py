"""Keeping the device busy (serve/replica/deployment.py, serve/replica/pipelined.py).

- A real Serve replica on the SIMULATED GPU: a request at idle starts at once (a batch of 1),
  and requests arriving during a render form the next batches, up to max_batch_size: observed
  as the batch sizes the simulated GPU was given, not by wall time.
- The encode pipeline keeps order, loses no image, and holds at most the batches in flight.
- Tiny-model pixels through the pipelined path equal single renders.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
from ray import serve

from cluster.engine.renderer import Renderer
from cluster.runtime.local_ray import connect
from cluster.spec.catalogue import CATALOGUE
from cluster.spec.request import RenderRequest, ResolvedRequest
from cluster.spec.settings import SimulatedTiming
from serve.replica.deployment import ModelServer
from serve.replica.pipelined import ENCODE_BACKLOG, PipelinedRenderer
from tests.conftest import pixels


def sim_spec(local_config, per_image_s: float):
    return local_config.spec("flux-schnell").model_copy(update={
        "source": "sim:flux", "warmup": False, "max_batch_size": 4,
        "simulated": SimulatedTiming(base_s=0.0, per_image_s=per_image_s)})


def request(seed: int, **changes) -> ResolvedRequest:
    """A request as the task layer hands it to a replica: resolved once, at submission."""
    raw = RenderRequest(**({"model": "flux-schnell", "prompt": f"p{seed}", "seed": seed, "width": 256,
                            "height": 256, "steps": 2} | changes))
    return CATALOGUE["flux-schnell"].resolve(raw)


def test_batches_start_at_once_when_idle_and_fill_under_load(local_config):
    with connect(num_cpus=1):
        handle = serve.run(ModelServer.options(name="model-flux-schnell", ray_actor_options={"num_cpus": 0},
                                               max_ongoing_requests=16).bind(
            sim_spec(local_config, per_image_s=1.5).model_dump(mode="json")), name="batching", route_prefix=None)
        try:
            assert [r.seed for r in handle.render.remote(request(0)).result()] == [0]
            assert handle.simulated_gpu.remote().result()["batches"] == [1]  # no wait for company at idle
            first = handle.render.remote(request(1))
            deadline = time.monotonic() + 30
            while not handle.simulated_gpu.remote().result()["busy_now"]:  # the device is busy with it...
                assert time.monotonic() < deadline
                time.sleep(0.01)
            queued = [handle.render.remote(request(10 + i)) for i in range(8)]  # ...while 8 arrive
            assert [r.seed for r in first.result()] == [1]
            assert [[r.seed for r in q.result()] for q in queued] == [[10 + i] for i in range(8)]
            assert handle.simulated_gpu.remote().result()["batches"] == [1, 1, 4, 4]
        finally:
            serve.shutdown()


def test_encode_pipeline_keeps_order_loses_nothing_and_bounds_memory(local_config):
    renderer = Renderer(sim_spec(local_config, per_image_s=0.01))
    encode = renderer.encode
    in_encoders, most, overlapped = [0], [0], [False]
    lock = threading.Lock()

    def slow_encode(denoised, image_format="png"):
        with lock:
            in_encoders[0] += 1
            most[0] = max(most[0], in_encoders[0])
        time.sleep(0.05)  # a slow CPU: pictures would pile up if nothing bounded them
        overlapped[0] |= renderer.pipeline.busy_now  # the device worked meanwhile
        try:
            return encode(denoised, image_format)
        finally:
            with lock:
                in_encoders[0] -= 1

    renderer.encode = slow_encode

    async def scenario():
        pipelined = PipelinedRenderer(renderer, max_requests=4, encoders=8)
        return await asyncio.gather(*(pipelined.render(renderer.prepare(request(i, n=1 + i % 3)))
                                     for i in range(24)))

    answers = asyncio.run(scenario())
    for i, results in enumerate(answers):
        assert [r.seed for r in results] == [i + k for k in range(1 + i % 3)] and all(r.ok and r.image for r in results)
    assert overlapped[0]  # encoding ran while the device denoised the next batch
    # Batches of pictures held for the encoders: at most the backlog (each of up to 3 device
    # batches: 4 requests of up to 3 images, 4 images per device batch).
    assert most[0] <= ENCODE_BACKLOG * 3


def test_tiny_pixels_through_the_pipelined_path_equal_single_renders(local_config, flux_renderer):
    spec = local_config.spec("flux-schnell").model_copy(update={"warmup": False, "max_batch_size": 4})
    requests = [request(7, n=2), request(11, width=256, height=384), request(13), request(17, steps=3)]

    async def scenario():
        renderer = Renderer(spec, device="cpu")
        pipelined = PipelinedRenderer(renderer, max_requests=4)
        return await asyncio.gather(*(pipelined.render(renderer.prepare(r)) for r in requests))

    batched = asyncio.run(scenario())
    for req, results in zip(requests, batched):
        single = flux_renderer.render([req])
        assert len(results) == len(single) == req.n
        for got, alone in zip(results, single):
            assert np.array_equal(pixels(got.image), pixels(alone.image)), (req, got.index)
