"""`random:` sources: full-size architectures counted on the meta device, and the meta ->
device materialisation path exercised end to end at tiny scale on the CPU."""

from __future__ import annotations

import torch

from cluster.doubles.random_weights import build_random_denoiser, build_random_pipeline, parameter_count


def test_full_size_flux_is_the_published_architecture():
    counts = parameter_count("flux")
    assert 11.8e9 < counts["transformer"] < 12.0e9  # FLUX.1: 11.9B
    assert 4.7e9 < counts["text_encoder_2"] < 4.8e9  # T5-XXL encoder: 4.76B
    assert 123e6 - 1e6 < counts["text_encoder"] < 124e6  # CLIP ViT-L text: 123M
    assert 83e6 < counts["vae"] < 84.5e6


def test_full_size_flux_fill_is_the_published_architecture():
    counts = parameter_count("flux-fill")
    # FLUX.1-Fill-dev: FLUX.1's transformer with a wider input (384 channels, not 64).
    assert counts["transformer"] - parameter_count("flux")["transformer"] == (384 - 64) * 3072
    fill = build_random_denoiser("flux-fill", torch.device("cpu"), torch.float32, scale="tiny")
    assert (fill.config.in_channels, fill.config.out_channels) == (16 + 16 + 256, 16)


def test_full_size_sdxl_is_the_published_architecture():
    counts = parameter_count("sdxl")
    assert 2.56e9 < counts["unet"] < 2.57e9  # SDXL base UNet: 2.567B
    assert 694e6 < counts["text_encoder_2"] < 695.5e6  # OpenCLIP bigG text: 694.7M


def test_meta_build_materialises_on_device_and_renders():
    pipeline = build_random_pipeline("flux", torch.device("cpu"), torch.float32, scale="tiny")
    for module in (pipeline.transformer, pipeline.text_encoder, pipeline.text_encoder_2, pipeline.vae):
        params = list(module.parameters())
        assert params and all(p.device.type == "cpu" and not p.is_meta for p in params)
        assert all(torch.isfinite(p).all() for p in params)
    pipeline.set_progress_bar_config(disable=True)
    image = pipeline(prompt="a cat", width=256, height=256, num_inference_steps=1, output_type="np").images[0]
    assert image.shape == (256, 256, 3) and image.std() > 0
