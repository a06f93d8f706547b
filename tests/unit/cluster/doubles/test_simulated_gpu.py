"""The SIMULATED GPU (cluster/doubles/simulated_gpu.py): time per batch, busy accounting, utilization."""

from __future__ import annotations

import threading
import time

import pytest

from cluster.doubles.simulated_gpu import SimulatedGpuPipeline, held, read_busy_intervals, utilization
from cluster.engine.renderer import Renderer
from cluster.spec.config import RaydiantConfig
from cluster.spec.request import RenderRequest
from cluster.spec.seeding import generator
from cluster.spec.settings import SimulatedTiming


def test_batch_costs_base_plus_per_image_and_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYDIANT_SIM_DIR", str(tmp_path))
    gpu = SimulatedGpuPipeline("flux", SimulatedTiming(base_s=0.03, per_image_s=0.02))
    started = time.perf_counter()
    out = gpu(prompt=["a", "b", "c"], width=64, height=32, generator=[generator(s, "cpu") for s in (1, 2, 3)])
    assert time.perf_counter() - started >= 0.09
    assert gpu.busy_s >= 0.09 and gpu.batches == [3]
    assert [im.size for im in out.images] == [(64, 32)] * 3
    [(name, intervals)] = read_busy_intervals(tmp_path).items()
    assert intervals[0]["batch"] == 3 and intervals[0]["end"] - intervals[0]["start"] >= 0.09


def test_a_held_gpu_starts_no_batch_until_released(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYDIANT_SIM_DIR", str(tmp_path))
    gpu = SimulatedGpuPipeline("flux", SimulatedTiming(base_s=0, per_image_s=0))
    with held(tmp_path):
        worker = threading.Thread(target=gpu, kwargs={"prompt": ["x"], "width": 8, "height": 8,
                                                      "generator": [generator(1, "cpu")]})
        worker.start()
        worker.join(0.3)
        assert worker.is_alive() and gpu.batches == []  # waiting, not started
        released = time.time()
    worker.join(5)
    [(_, [batch])] = read_busy_intervals(tmp_path).items()
    assert gpu.batches == [1] and batch["start"] >= released  # the wait is not busy time


def test_seeds_decide_pixels():
    gpu = SimulatedGpuPipeline("flux", SimulatedTiming(base_s=0, per_image_s=0))
    first = gpu(prompt=["x"], width=8, height=8, generator=[generator(5, "cpu")]).images[0]
    again = gpu(prompt=["y"], width=8, height=8, generator=[generator(5, "cpu")]).images[0]
    other = gpu(prompt=["x"], width=8, height=8, generator=[generator(6, "cpu")]).images[0]
    assert first.tobytes() == again.tobytes() != other.tobytes()


def test_utilization_is_busy_time_over_the_window():
    intervals = [{"start": 10.0, "end": 12.0}, {"start": 13.0, "end": 14.0}, {"start": 19.0, "end": 22.0}]
    assert utilization(intervals, 10.0, 20.0) == pytest.approx(0.4)  # 2 + 1 + 1 of 10 s
    assert utilization(intervals, 10.0, 12.0) == pytest.approx(1.0)


def test_a_sim_source_renders_through_the_renderer_with_config_timing():
    config = RaydiantConfig.model_validate({"models": {"flux-schnell": {
        "source": "sim:flux", "warmup": False, "simulated": {"base_s": 0.0, "per_image_s": 0.01}}}})
    renderer = Renderer(config.spec("flux-schnell"))
    results = renderer.render([RenderRequest(model="flux-schnell", prompt="x", n=3, seed=1, width=256, height=256)])
    assert [r.seed for r in results] == [1, 2, 3] and all(r.ok for r in results)
    assert renderer.pipeline.batches == [3] and renderer.pipeline.timing.per_image_s == 0.01
