"""Renderer throughput vs a bare diffusers loop on the same model, measured side by side.

    .venv/bin/python bench/engine.py [--model flux-schnell] [--rounds 5] [--config FILE]

Both sides load the same weights and produce PNG bytes with the same encoder settings; the
bare loop is what a user would write by hand (one pipeline call per batch, one generator per
image). Rounds alternate between the two sides so that machine noise hits both alike. The
ratio (Renderer img/s / bare img/s) is the Renderer's cost: validation, batching bookkeeping,
sampling metadata and, on CPU, the batch-invariance padding.

A third side renders as a Serve replica does, with progress on: the step callback checks for a
cancel at every step and reports (through an event loop in another thread, as the replica's
`call_soon_threadsafe`) at most four times a second. `progress` is its img/s over the Renderer's.
Tiny models take milliseconds a step, so this overhead is larger here than on a real model.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import threading
import time

import torch

from cluster.cli import quiet_libraries
from cluster.engine.renderer import Renderer
from cluster.images.encoding import PNG_COMPRESS_LEVEL
from cluster.spec.config import load_config
from cluster.spec.request import RenderRequest


def bare_loop(pipeline, prompts: list[str], seeds: list[int], size: int, steps: int, guidance: float) -> list[bytes]:
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    with torch.inference_mode():
        images = pipeline(prompt=prompts, width=size, height=size, num_inference_steps=steps,
                          guidance_scale=guidance, generator=generators, output_type="pil").images
    out = []
    for image in images:
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        out.append(buf.getvalue())
    return out


def render_with_progress(renderer: Renderer, requests: list[RenderRequest], loop: asyncio.AbstractEventLoop,
                         reports: list) -> None:
    """What a replica's device thread runs: denoise with the step callback, then encode."""
    refused, batches = renderer.plan([renderer.resolve(r) for r in requests])
    assert not refused

    def on_step(progress) -> None:
        loop.call_soon_threadsafe(reports.append, progress)

    for batch in batches:
        for denoised in renderer.denoise(batch, on_step, lambda: False):
            assert all(r.ok for r in renderer.encode(denoised))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="flux-schnell")
    parser.add_argument("--config", default=None)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sizes", default="512,1024")
    parser.add_argument("--batches", default="1,4")
    args = parser.parse_args()
    quiet_libraries()

    spec = load_config(args.config).spec(args.model).model_copy(update={"warmup": False})
    renderer = Renderer(spec)
    bare = type(renderer.pipeline).from_pretrained(renderer.pipeline.config._name_or_path, dtype=renderer.dtype)
    bare.to(renderer.device)
    bare.set_progress_bar_config(disable=True)
    steps, guidance = spec.default_steps, spec.default_guidance
    print(f"model {spec.name} ({spec.source}) on {renderer.device}, {steps} steps, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds after one warm-up round")
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    print(f"{'size':>9} {'batch':>5} {'bare img/s':>11} {'renderer img/s':>15} {'ratio':>6} "
          f"{'with progress':>14} {'progress':>9} {'reports':>8}")

    for size in map(int, args.sizes.split(",")):
        for batch in map(int, args.batches.split(",")):
            renderer.max_batch_size = batch
            prompts = [f"a lighthouse, variation {i}" for i in range(batch)]
            seeds = list(range(100, 100 + batch))
            request = [RenderRequest(model=spec.name, prompt=p, seed=s, width=size, height=size,
                                     steps=steps, guidance=guidance) for p, s in zip(prompts, seeds)]
            times: dict[str, list[float]] = {"bare": [], "renderer": [], "progress": []}
            reports: list = []
            for round_ in range(args.rounds + 1):
                for side in ("bare", "renderer", "progress"):
                    started = time.perf_counter()
                    if side == "bare":
                        bare_loop(bare, prompts, seeds, size, steps, guidance)
                    elif side == "renderer":
                        results = renderer.render(request)
                        assert all(r.ok for r in results) and results[0].batch_size == batch
                    else:
                        render_with_progress(renderer, request, loop, reports)
                    if round_:  # round 0 warms both up
                        times[side].append(time.perf_counter() - started)
            bare_ips = batch / statistics.median(times["bare"])
            renderer_ips = batch / statistics.median(times["renderer"])
            progress_ips = batch / statistics.median(times["progress"])
            print(f"{size}*{size:<4} {batch:>5} {bare_ips:>11.2f} {renderer_ips:>15.2f} {renderer_ips / bare_ips:>6.3f} "
                  f"{progress_ips:>14.2f} {progress_ips / renderer_ips:>9.3f} {len(reports):>8}")


if __name__ == "__main__":
    main()
