"""The GPU check, prepared: per-image latency at 1024*1024 on one H100/H200 with full-size random
weights (`random:` sources: no download), raydiant's Renderer eager / compiled / fp8 / step-cached
beside a bare diffusers loop in the same run, and peak memory.

    .venv/bin/python -m bench.gpu [--runs 3] [--models flux-schnell,flux-dev,stable-diffusion-xl]

Models and settings (one image per call, 1024*1024, bf16):
- flux-schnell, 4 steps: bare, eager, compiled, fp8 (+ compiled), lora-slot (compiled with an
  adapter slot of rank 64, rendering without adapters: what the slot costs every request)
- flux-dev, 28 steps:    bare, eager, compiled, fp8 (+ compiled), fast (TaylorSeer, eager)
- stable-diffusion-xl, 30 steps: bare, eager, compiled, fp8 (+ compiled)

Each setting builds its pipeline afresh (random weights materialised on the GPU, a few seconds),
warms up once (the compile happens there, and is reported), then times `--runs` renders and
prints the median, the ratio to the bare loop and `torch.cuda.max_memory_allocated`. It prints
each line as it is measured, so a run cut short still tells what it measured. Planned to finish
in under 8 minutes on an H100 with the defaults; `--runs 1` halves it.

`--coldstart` (not in the default run: about 6 minutes and 70 GB of disk) measures a cold start at
FLUX.1-dev's size: random full-size weights saved once as a diffusers folder on local disk (about
34 GB), then two replicas in turn, each a fresh process with one cache folder and one inductor
cache: the first fetches the folder through the shared weights cache (ranged reads from a
`file://` source), loads it onto the GPU, compiles its regions and renders a first image; the
second finds both caches filled. Each prints fetch, load and warm-up seconds.

Not run on this project's machines (no GPU has been lent): `tests/unit/bench/test_gpu_plan.py`
checks its plan on the CPU (every setting a valid model entry; fast only where a step cache is;
the cold start at tiny scale).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SIZE = 1024
PLAN = {  # model -> (steps, settings)
    "flux-schnell": (4, ["bare", "eager", "compiled", "fp8", "lora-slot"]),
    "flux-dev": (28, ["bare", "eager", "compiled", "fp8", "fast"]),
    "stable-diffusion-xl": (30, ["bare", "eager", "compiled", "fp8"]),
}
COMPILED = ("compiled", "fp8", "lora-slot")
FAMILY = {"flux-schnell": "flux", "flux-dev": "flux", "stable-diffusion-xl": "sdxl"}


@dataclass
class Measured:
    model: str
    setting: str
    median_s: float
    warmup_s: float
    peak_gib: float


def spec_for(model: str, setting: str):
    """The model entry a setting renders with: full-size random weights, one image a batch."""
    from cluster.spec.catalogue import ModelSpec
    from cluster.spec.config import load_config

    spec = load_config().spec(model)
    return ModelSpec.model_validate(spec.model_dump() | {
        "source": f"random:{FAMILY[model]}", "warmup": False, "dtype": "bfloat16", "max_batch_size": 1,
        "compile": setting in COMPILED, "compile_sizes": [f"{SIZE}*{SIZE}"],
        "quantize": "fp8" if setting == "fp8" else "none", "lora_rank": 64,
        "loras": {**spec.loras.model_dump(), "max": 3 if setting == "lora-slot" else 0}})


def renderer_for(model: str, setting: str):
    from cluster.engine.renderer import Renderer

    return Renderer(spec_for(model, setting), device="cuda")


def measure(model: str, setting: str, steps: int, runs: int) -> Measured:
    import torch

    from cluster.spec.request import RenderRequest

    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    if setting == "bare":
        from cluster.doubles.random_weights import build_random_pipeline
        from cluster.spec.seeding import generator

        pipeline = build_random_pipeline(FAMILY[model], torch.device("cuda"), torch.bfloat16)
        pipeline.set_progress_bar_config(disable=True)

        def once(seed: int) -> None:
            pipeline(prompt=["a lighthouse on a cliff"], width=SIZE, height=SIZE, num_inference_steps=steps,
                     generator=[generator(seed, "cpu")], output_type="pil")
    else:
        engine = renderer_for(model, setting)
        quality = "fast" if setting == "fast" else "lossless"

        def once(seed: int) -> None:
            [result] = engine.render([RenderRequest(model=model, prompt="a lighthouse on a cliff", width=SIZE,
                                                    height=SIZE, steps=steps, seed=seed, quality=quality)])
            assert result.ok, result.error
    once(0)  # builds, compiles (compiled settings), warms the kernels
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - started
    times = []
    for seed in range(1, runs + 1):
        begun = time.perf_counter()
        once(seed)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - begun)
    measured = Measured(model, setting, statistics.median(times), warmup_s,
                        torch.cuda.max_memory_allocated() / 2**30)
    del once
    gc.collect()
    torch.cuda.empty_cache()
    return measured


# One replica's cold start, in a process of its own: fetch, load onto the device, warm up.
REPLICA = """
import json, sys, time, torch
from pathlib import Path
from cluster.cli import quiet_libraries
quiet_libraries()
from cluster.engine.speed import compile_regions
from cluster.spec.families import Family
from cluster.weights.shared_cache import fetch
from cluster.weights.sources import load_pipeline, weights_cache_dir
source, device, size, steps, compiled = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
began = time.perf_counter()
fetched = fetch(source, weights_cache_dir())
loading = time.perf_counter()
pipeline = load_pipeline("flux-dev", Family.FLUX, source, torch.bfloat16, torch.device(device)).to(device)
pipeline.set_progress_bar_config(disable=True)
warming = time.perf_counter()
if compiled:
    compile_regions(pipeline)
with torch.inference_mode():
    pipeline(prompt=["a lighthouse"], width=size, height=size, num_inference_steps=steps,
             generator=[torch.Generator().manual_seed(0)])
if device == "cuda":
    torch.cuda.synchronize()
done = time.perf_counter()
print("REPLICA " + json.dumps({"fetched_gib": fetched.fetched_bytes / 2**30, "fetch_s": loading - began,
                               "load_s": warming - loading, "warmup_s": done - warming}))
"""


def cold_start(work: Path, scale: str = "full", device: str = "cuda", size: int = SIZE, steps: int = 4,
               compiled: bool = True) -> list[dict]:
    """FLUX.1-dev-sized random weights saved under `work`, then two replicas started in turn with
    one weights cache and one inductor cache; their splits (`scale="tiny"` runs it on a CPU)."""
    import torch

    from cluster.doubles.random_weights import build_random_pipeline

    folder = work / "flux-dev"
    if not (folder / "model_index.json").exists():
        pipeline = build_random_pipeline("flux", torch.device(device), torch.bfloat16, scale=scale)
        pipeline.save_pretrained(folder, safe_serialization=True)
        del pipeline
        gc.collect()
    env = os.environ | {"RAYDIANT_CACHE": str(work / "cache"), "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor"),
                        "TRITON_CACHE_DIR": str(work / "triton")}
    replicas = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", REPLICA, f"file://{folder}", device, str(size), str(steps),
                               "1" if compiled else "0"], capture_output=True, text=True, env=env, check=True)
        replicas.append(json.loads(done.stdout.split("REPLICA ", 1)[1]))
    return replicas


def print_cold_start(work: Path) -> None:
    first, second = cold_start(work)
    size = sum(p.stat().st_size for p in (work / "flux-dev").rglob("*") if p.is_file())
    print(f"\ncold start, FLUX.1-dev size ({size / 2**30:.1f} GiB from local disk), {SIZE}*{SIZE}, 4 steps, compiled:")
    for name, r in (("first replica", first), ("second replica", second)):
        print(f"{name:>15}: fetched {r['fetched_gib']:.1f} GiB in {r['fetch_s']:.1f} s "
              f"({r['fetched_gib'] * 1024 / max(r['fetch_s'], 1e-9):.0f} MiB/s), load {r['load_s']:.1f} s, "
              f"warm-up {r['warmup_s']:.1f} s", flush=True)


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default=",".join(PLAN))
    parser.add_argument("--coldstart", metavar="WORK_DIR", type=Path,
                        help="also measure a cold start at FLUX.1-dev's size, working in WORK_DIR (70 GB free)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA GPU (bench/speed.py is the CPU counterpart)")
    print(f"{torch.cuda.get_device_name()} (capability {torch.cuda.get_device_capability()}), torch "
          f"{torch.__version__}; {SIZE}*{SIZE}, bf16, random full-size weights, {args.runs} timed runs each", flush=True)
    print(f"{'model':>20} {'setting':>9} | {'s/image':>8} | {'vs bare':>7} | {'warm-up s':>9} | {'peak GiB':>8}", flush=True)
    for model in args.models.split(","):
        steps, settings = PLAN[model]
        bare = None
        for setting in settings:
            try:
                m = measure(model, setting, steps, args.runs)
            except Exception as exc:  # noqa: BLE001 - one setting's failure must not hide the others
                print(f"{model:>20} {setting:>9} | failed: {str(exc).splitlines()[0][:100]}", flush=True)
                continue
            bare = m.median_s if setting == "bare" else bare
            ratio = f"{m.median_s / bare:7.2f}" if bare else "      -"
            print(f"{model:>20} {setting:>9} | {m.median_s:8.3f} | {ratio} | {m.warmup_s:9.1f} | {m.peak_gib:8.1f}",
                  flush=True)
    if args.coldstart:
        print_cold_start(args.coldstart)


if __name__ == "__main__":
    main()
