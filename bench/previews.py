"""What live previews cost the device: a batch's denoise time with 0 and with 3 partial images,
by each previewer, measured side by side (interleaved runs, medians), on a mid-size random FLUX
on the CPU.

    .venv/bin/python -m bench.previews [--steps 12] [--size 512] [--repeat 5]

The transformer is bench/speed.py's mid-size one (compute dominates, as on a real model); the
rest is the tiny FLUX. A preview's device-side work (cluster/engine/previews.py) is either the
latent-to-RGB map (a matrix product at latent resolution and a small copy) or, where a model
configures `preview_decoder`, a tiny autoencoder's decoder at full size (here TAEF1's widths,
random weights, for this VAE's latent channels). Scaling and encoding run on the replica's
encoders, off the device's path, and are timed apart. The goal: within 5% of the render
without previews. The final pixels are checked to be the same bit for bit.
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
    import torch
    from diffusers import AutoencoderTiny

    from bench.speed import mid_size_pipeline
    from cluster.cli import quiet_libraries
    from cluster.engine.previews import TinyAutoencoderPreviewer
    from cluster.engine.renderer import Renderer
    from cluster.images.encoding import encode
    from cluster.spec.config import load_config
    from cluster.spec.request import RenderRequest

    quiet_libraries()
    renderer = Renderer(load_config().spec("flux-dev").model_copy(update={"warmup": False}), device="cpu")
    renderer.pipeline.transformer = mid_size_pipeline().transformer
    previews: list[Image.Image] = []
    linear = renderer.previewer
    torch.manual_seed(0)  # TAEF1's widths (64 per block), for this VAE's latent channels
    tiny_autoencoder = TinyAutoencoderPreviewer(AutoencoderTiny(
        latent_channels=renderer.pipeline.vae.config.latent_channels).eval())
    previewers = {"linear": linear, "tae": tiny_autoencoder}

    def denoise(partial_images: int, previewer: str = "linear") -> tuple[float, np.ndarray]:
        renderer.previewer = previewers[previewer]
        request = renderer.spec.resolve(RenderRequest(model="flux-dev", prompt="a lighthouse", width=args.size,
                                                      height=args.size, steps=args.steps, seed=3,
                                                      partial_images=partial_images))
        _, [batch] = renderer.plan([request])
        started = time.perf_counter()
        [denoised] = renderer.denoise(batch, on_step=lambda _: None,
                                      on_preview=lambda image, index, picture: previews.append(picture))
        return time.perf_counter() - started, np.asarray(denoised.pictures[0])

    runs = {"none": (0, "linear"), "linear": (3, "linear"), "tae": (3, "tae")}
    for partial, previewer in runs.values():  # fits the latent map once (per loaded model), warms every path
        denoise(partial, previewer)
    times: dict[str, list[float]] = {name: [] for name in runs}
    finals: dict[str, np.ndarray] = {}
    for _ in range(args.repeat):
        for name, (partial, previewer) in runs.items():
            elapsed, finals[name] = denoise(partial, previewer)
            times[name].append(elapsed)
    median = {name: statistics.median(elapsed) for name, elapsed in times.items()}
    started = time.perf_counter()
    for picture in previews[-3:]:
        encode(picture.resize((args.size, args.size), Image.Resampling.BILINEAR), "png")
    encode_s = (time.perf_counter() - started) / 3
    print(f"mid-size random FLUX, {args.size}*{args.size}, {args.steps} steps, CPU, median of {args.repeat}:")
    print(f"  denoise without previews {median['none']:.3f} s")
    print(f"  with 3 partial images, linear map: {median['linear']:.3f} s ({median['linear'] / median['none']:.3f}x, "
          f"goal <= 1.05x)")
    print(f"  with 3 partial images, tiny autoencoder at full size: {median['tae']:.3f} s "
          f"({median['tae'] / median['none']:.3f}x)")
    print(f"  each preview's scale-up and PNG encode, on an encoder thread: {encode_s * 1000:.1f} ms")
    same = np.array_equal(finals["none"], finals["linear"]) and np.array_equal(finals["none"], finals["tae"])
    print(f"  final pixels identical with and without previews: {same}")


if __name__ == "__main__":
    main()
