"""The engine (cluster/engine/renderer.py) on the SIMULATED GPU (no model: solid colours, seeds decide the
pixels): warm-up, health, what it refuses, how raw and resolved requests reach it, and the
out-of-memory retry. Pixels of real tiny pipelines: tests/integration/test_engine*.py."""

from __future__ import annotations

import pytest
import torch

from cluster.doubles.simulated_gpu import SimulatedGpuPipeline
from cluster.engine.renderer import Renderer
from cluster.spec.config import load_config
from cluster.spec.errors import ErrorCode
from cluster.spec.request import RenderRequest
from cluster.spec.settings import SimulatedTiming


def spec(**changes):
    return load_config().spec("flux-schnell").model_copy(update={
        "source": "sim:flux", "simulated": SimulatedTiming(base_s=0, per_image_s=0), "max_batch_size": 3} | changes)


def raw(**changes) -> RenderRequest:
    return RenderRequest(**({"model": "flux-schnell", "prompt": "a cat", "width": 256, "height": 256, "steps": 2,
                             "seed": 3} | changes))


def test_warm_up_renders_one_full_batch_at_load():
    renderer = Renderer(spec(warmup=True))
    assert renderer.pipeline.batches == [3]  # max_batch_size images, once


def test_a_model_that_cannot_render_fails_at_load(monkeypatch):
    def broken(self, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access")

    monkeypatch.setattr(SimulatedGpuPipeline, "__call__", broken)
    with pytest.raises(RuntimeError, match="warm-up of flux-schnell failed: rendering failed: CUDA error"):
        Renderer(spec(warmup=True))


def test_health_check_computes_on_the_device(monkeypatch):
    renderer = Renderer(spec(warmup=False))
    renderer.check_health()
    monkeypatch.setattr(torch, "arange", lambda *a, **k: torch.zeros(8, **{"dtype": k.get("dtype")}))
    with pytest.raises(RuntimeError, match="health check failed"):
        renderer.check_health()


def test_render_resolves_raw_requests_and_keeps_request_order():
    renderer = Renderer(spec(warmup=False))
    results = renderer.render([raw(n=2), raw(steps=0), raw(model="flux-dev"), raw(seed=10)])
    assert [(r.request_index, r.index, r.ok) for r in results] == [
        (0, 0, True), (0, 1, True), (1, 0, False), (2, 0, False), (3, 0, True)]
    assert results[2].error.code == ErrorCode.INVALID_PARAMETER and results[2].error.param == "steps"
    assert results[3].error.code == ErrorCode.MODEL_NOT_FOUND
    assert [r.seed for r in results if r.ok] == [3, 4, 10]


def test_plan_takes_resolved_requests_and_refuses_only_what_it_cannot_render():
    renderer = Renderer(spec(warmup=False))
    good = renderer.resolve(raw(n=4))
    other = load_config().spec("flux-dev").resolve(raw(model="flux-dev"))
    kontext = Renderer(load_config().spec("flux-kontext").model_copy(update={
        "source": "sim:flux-kontext", "simulated": SimulatedTiming(base_s=0, per_image_s=0), "warmup": False}))
    undecodable = load_config().spec("flux-kontext").resolve(raw(model="flux-kontext", init_image=b"not a png"))
    refused, batches = renderer.plan([good, other])
    assert [(r.request_index, r.error.code) for r in refused] == [(1, ErrorCode.MODEL_NOT_FOUND)]
    assert [len(b) for b in batches] == [3, 1]  # 4 images in batches of at most max_batch_size
    [bad], _ = kontext.plan([undecodable])
    assert (bad.error.param, bad.error.text()) == ("image", "image cannot be decoded")


def test_out_of_memory_retries_in_halves_then_fails_alone(monkeypatch):
    calls = []
    original = SimulatedGpuPipeline.__call__

    def tight(self, prompt, **kwargs):
        calls.append(len(prompt))
        if len(prompt) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return original(self, prompt=prompt, **kwargs)

    renderer = Renderer(spec(warmup=False, max_batch_size=2))
    monkeypatch.setattr(SimulatedGpuPipeline, "__call__", tight)
    results = renderer.render([raw(n=2)])
    assert calls == [2, 1, 1] and all(r.ok for r in results)
    monkeypatch.setattr(SimulatedGpuPipeline, "__call__", lambda self, **k: (_ for _ in ()).throw(
        torch.OutOfMemoryError("CUDA out of memory")))
    [failed] = renderer.render([raw()])
    assert failed.error.code == ErrorCode.OUT_OF_MEMORY and failed.error.code.retryable
