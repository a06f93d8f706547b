"""bench/gpu.py's plan, checked where no GPU is: every setting is a valid model entry, and the
step-cached setting is planned only where the model has a step cache."""

from __future__ import annotations

from bench.gpu import PLAN, spec_for


def test_every_planned_setting_is_a_valid_model_entry():
    for model, (steps, settings) in PLAN.items():
        for setting in settings:
            if setting == "bare":
                continue
            spec = spec_for(model, setting)
            assert spec.source.startswith("random:") and spec.min_steps <= steps <= spec.max_steps
            assert spec.compile == (setting in ("compiled", "fp8", "lora-slot"))
            assert spec.loras.max == (3 if setting == "lora-slot" else 0)
            assert spec.quantize == ("fp8" if setting == "fp8" else "none")
            if setting == "fast":
                assert spec.step_cache, model


def test_the_cold_start_runs_on_the_cpu_at_tiny_scale(tmp_path):
    """The GPU cold start's path at tiny scale: the first replica fetches the folder through the
    shared cache, the second finds it there."""
    from bench.gpu import cold_start

    first, second = cold_start(tmp_path, scale="tiny", device="cpu", size=64, steps=1, compiled=False)
    assert first["fetched_gib"] > 0 and second["fetched_gib"] == 0
    assert all(r["load_s"] > 0 and r["warmup_s"] > 0 for r in (first, second))
