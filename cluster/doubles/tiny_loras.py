"""Tiny LoRA adapters for the tiny pipelines, made on the spot (tests, benchmarks, the demo).

PEFT adds a LoRA of rank `rank` to the attention projections of the tiny denoiser, with random
non-zero weights from `seed` (a fresh LoRA is a no-op: its B matrix starts at zero), and the
pipeline class's own `save_lora_weights` writes it as diffusers does any adapter: one
`pytorch_lora_weights.safetensors`. Same seed, same bytes.
"""

from __future__ import annotations

from pathlib import Path

import diffusers
import torch

from cluster.doubles.tiny_pipelines import TINY_DIRS, build_tiny, tiny_cache_dir
from cluster.spec.families import PIPELINE_CLASS, Family
from cluster.weights.architectures import architecture

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def build_tiny_lora(family: Family | str, path: Path, seed: int = 0, rank: int = 4,
                    weight_scale: float = 1.0) -> Path:
    """Write a tiny adapter for `family`'s tiny pipeline into folder `path`; returns the file."""
    from peft import LoraConfig, get_peft_model_state_dict

    family = Family(family)
    base = build_tiny(family, tiny_cache_dir() / TINY_DIRS[family])
    arch = architecture(family, "tiny")
    denoiser_class = getattr(diffusers, arch.denoiser_class)
    denoiser = denoiser_class.from_pretrained(base, subfolder=arch.denoiser_name)
    torch.manual_seed(seed)
    denoiser.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGETS, init_lora_weights=False))
    layers = get_peft_model_state_dict(denoiser)
    layers = {k: v * weight_scale for k, v in layers.items()}
    pipeline_class = getattr(diffusers, PIPELINE_CLASS[family])
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pipeline_class.save_lora_weights(path, **{f"{arch.denoiser_name}_lora_layers": layers})
    return path / "pytorch_lora_weights.safetensors"
