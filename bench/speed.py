"""Step caching on the CPU: denoise time of `quality: lossless` against each cache setting, and
the share of transformer blocks actually computed, on a mid-size random FLUX.

    .venv/bin/python -m bench.speed [--steps 28] [--size 512]

The tiny FLUX's one-block transformer would make the cache's bookkeeping the whole cost, so
this bench swaps in a mid-size random transformer (4 double and 8 single blocks, 8 heads of 64:
hidden 512) behind the tiny text encoders and VAE: enough blocks that compute dominates, as on
a real model. Weights are random (nothing is downloaded); the figures are time ratios measured
side by side in one run, and the share of attention computations that ran (each block's
attention processor counted), which is what a GPU's time follows too. First Block Cache's
thresholds are set for random weights, whose first block changes more from step to step than a
trained model's. One image per call, the same seeds for
every setting; medians of `--repeat` runs. The pixel change of each cache setting against
lossless is printed too (mean absolute difference in 0-255 units).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

STEPS, SIZE, REPEAT = 28, 512, 3
MID = {"num_layers": 4, "num_single_layers": 8, "attention_head_dim": 64, "num_attention_heads": 8,
       "joint_attention_dim": 32, "pooled_projection_dim": 32, "axes_dims_rope": [8, 28, 28],
       "patch_size": 1, "in_channels": 16, "guidance_embeds": True}


def mid_size_pipeline():
    import diffusers

    from cluster.doubles.tiny_pipelines import TINY_DIRS, build_tiny, tiny_cache_dir
    from cluster.spec.families import Family

    pipeline = diffusers.FluxPipeline.from_pretrained(build_tiny(Family.FLUX, tiny_cache_dir() / TINY_DIRS[Family.FLUX]))
    torch.manual_seed(0)
    pipeline.transformer = diffusers.FluxTransformer2DModel(**MID).eval()
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


class AttentionCounter:
    """Counts attention computations: each attention module's processor, wrapped (a step cache
    that predicts an output never calls it). Every block has one attention."""

    def __init__(self, transformer):
        self.calls = 0
        modules = [m for m in transformer.modules() if hasattr(m, "processor") and callable(m.processor)]
        for module in modules:
            module.processor = _Counted(module.processor, self)
        self.blocks = len(modules)


class _Counted:
    def __init__(self, processor, counter: AttentionCounter):
        self.processor, self.counter = processor, counter

    def __call__(self, *args, **kwargs):
        self.counter.calls += 1
        return self.processor(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.processor, name)


def render(pipeline, seed: int, steps: int, size: int) -> np.ndarray:
    from cluster.spec.seeding import generator

    with torch.inference_mode():
        image = pipeline(prompt=["a lighthouse on a cliff"], width=size, height=size, num_inference_steps=steps,
                         guidance_scale=3.5, generator=[generator(seed, "cpu")]).images[0]
    return np.asarray(image, dtype=np.float32)


def main() -> None:
    from cluster.engine.speed import StepCache
    from cluster.spec.settings import FastSettings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--repeat", type=int, default=REPEAT)
    args = parser.parse_args()
    pipeline = mid_size_pipeline()
    counter = AttentionCounter(pipeline.transformer)
    settings = {
        "lossless": None,
        "taylorseer interval 3": FastSettings(method="taylorseer", cache_interval=3, disable_cache_before_step=3),
        "taylorseer interval 4 (default)": FastSettings(method="taylorseer"),
        "taylorseer interval 6": FastSettings(method="taylorseer", cache_interval=6, disable_cache_before_step=3),
        "first block 0.2": FastSettings(method="first_block", threshold=0.2),
        "first block 0.5": FastSettings(method="first_block", threshold=0.5),
    }
    render(pipeline, 0, 2, args.size)  # torch's own first-call costs
    results, reference = {}, None
    for name, fast in settings.items():
        cache = StepCache(pipeline, fast or FastSettings())
        cache.apply("fast" if fast else "lossless")
        times, computed, diffs = [], [], []
        for seed in range(args.repeat):
            counter.calls = 0
            started = time.perf_counter()
            picture = render(pipeline, seed, args.steps, args.size)
            times.append(time.perf_counter() - started)
            computed.append(counter.calls / (counter.blocks * args.steps))
            if reference is not None:
                diffs.append(float(np.abs(picture - reference[seed]).mean()))
        cache.apply("lossless")
        if fast is None:
            reference = {seed: render(pipeline, seed, args.steps, args.size) for seed in range(args.repeat)}
        results[name] = (statistics.median(times), statistics.median(computed), statistics.mean(diffs) if diffs else 0.0)
        print(f"{name:>32}: {results[name][0]:6.2f} s   attention computed {results[name][1]:.2f}", flush=True)
    base = results["lossless"][0]
    print(f"\nmid-size random FLUX (4 + 8 blocks, hidden 512), {args.size}*{args.size}, {args.steps} steps, CPU; "
          f"medians of {args.repeat}")
    print(f"{'setting':>32} | {'render s':>9} | {'vs lossless':>11} | {'attention computed':>15} | {'mean |diff|':>11}")
    for name, (seconds, computed, diff) in results.items():
        print(f"{name:>32} | {seconds:9.2f} | {seconds / base:11.2f} | {computed:15.2f} | {diff:11.2f}")


if __name__ == "__main__":
    main()
