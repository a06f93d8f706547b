"""Adapter files a hostile or careless tenant sends, made on the spot from a tiny FLUX adapter.

Each is a real safetensors file that diffusers' pipeline-wide `load_lora_weights` would take and
act on: a Control LoRA's norms (written into the base model), an A matrix wider than its layer
(the layer swapped for a wider one), and files no LoRA loader should read at all.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cluster.doubles.tiny_loras import build_tiny_lora


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in tensors.items()}, str(path))
    return path


def clean(root: Path, seed: int = 31) -> Path:
    return build_tiny_lora("flux", root / f"clean-{seed}", seed=seed)


def with_norms(root: Path, renderer) -> Path:
    """A FLUX Control LoRA's shape: LoRA layers plus `norm_q`/`norm_k` values for the base model."""
    tensors = load_file(str(clean(root)))
    transformer = renderer.pipeline.transformer
    for name in ("norm_q", "norm_k"):
        weight = getattr(transformer.transformer_blocks[0].attn, name).weight
        tensors[f"transformer.transformer_blocks.0.attn.{name}.weight"] = torch.full_like(weight, 7.0)
    return _save(root / "norms.safetensors", tensors)


def wide(root: Path, renderer) -> Path:
    """An A matrix twice as wide as its layer's input (`x_embedder`): diffusers would widen the layer."""
    layer = renderer.pipeline.transformer.x_embedder
    return _save(root / "wide.safetensors", {
        "transformer.x_embedder.lora_A.weight": torch.randn(4, 2 * layer.in_features),
        "transformer.x_embedder.lora_B.weight": torch.randn(layer.out_features, 4)})


def garbage(root: Path) -> Path:
    """A safetensors file of one tensor that is no adapter of anything."""
    return _save(root / "garbage.safetensors", {"hello": torch.zeros(3)})
