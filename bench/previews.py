"""What live previews cost the device: a batch's denoise time with 0 and with 3 partial images,
measured side by side (interleaved runs, medians), on a mid-size random FLUX on the CPU.

    .venv/bin/python -m bench.previews [--steps 12] [--size 512] [--repeat 5]

The transformer is bench/speed.py's mid-size one (compute dominates, as on a real model); the
rest is the tiny FLUX. A preview's device-side work is the latent-to-RGB map (cluster/engine/
previews.py: a matrix product at latent resolution and a small copy); its scaling and encoding
run on the replica's encoders, off the device's path, and are timed apart. The goal: within 5%
of the render without previews. The final pixels are checked to be the same bit for bit.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from bench.speed import mid_size_pipeline
    from cluster.cli import quiet_libraries
    from cluster.engine.renderer import Renderer
    from cluster.images.encoding import encode
    from cluster.spec.config import load_config
    from cluster.spec.request import RenderRequest

    quiet_libraries()
    renderer = Renderer(load_config().spec("flux-dev").model_copy(update={"warmup": False}), device="cpu")
    renderer.pipeline.transformer = mid_size_pipeline().transformer
    previews: list[Image.Image] = []

    def denoise(partial_images: int) -> tuple[float, np.ndarray]:
        request = renderer.spec.resolve(RenderRequest(model="flux-dev", prompt="a lighthouse", width=args.size,
                                                      height=args.size, steps=args.steps, seed=3,
                                                      partial_images=partial_images))
        _, [batch] = renderer.plan([request])
        started = time.perf_counter()
        [denoised] = renderer.denoise(batch, on_step=lambda _: None,
                                      on_preview=lambda image, index, picture: previews.append(picture))
        return time.perf_counter() - started, np.asarray(denoised.pictures[0])

    denoise(3)  # fits the latent map once (per loaded model) and warms every path
    times: dict[int, list[float]] = {0: [], 3: []}
    finals: dict[int, np.ndarray] = {}
    for _ in range(args.repeat):
        for partial in (0, 3):
            elapsed, finals[partial] = denoise(partial)
            times[partial].append(elapsed)
    plain, with_previews = statistics.median(times[0]), statistics.median(times[3])
    started = time.perf_counter()
    for picture in previews[-3:]:
        encode(picture.resize((args.size, args.size), Image.Resampling.BILINEAR), "png")
    encode_s = (time.perf_counter() - started) / 3
    print(f"mid-size random FLUX, {args.size}*{args.size}, {args.steps} steps, CPU, median of {args.repeat}:")
    print(f"  denoise without previews {plain:.3f} s; with 3 partial images {with_previews:.3f} s "
          f"({with_previews / plain:.3f}x, goal <= 1.05x)")
    print(f"  each preview's scale-up and PNG encode, on an encoder thread: {encode_s * 1000:.1f} ms")
    print(f"  final pixels identical with and without previews: {np.array_equal(finals[0], finals[3])}")


if __name__ == "__main__":
    main()
