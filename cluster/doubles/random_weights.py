"""`random:<family>` weight source: the full-size architecture with random weights.

For GPU benchmarks where no real weights can be fetched: compute cost equals the real model,
outputs are noise. Modules are created on the meta device and materialised directly on the
target device in the target dtype, so the 12B FLUX transformer never exists on the CPU.
Tokenizers are the locally trained tiny ones (their ids fit in any real vocabulary).
"""

from __future__ import annotations

import diffusers
import torch
from diffusers import DiffusionPipeline

from cluster.doubles.tiny_pipelines import tiny_tokenizers
from cluster.spec.families import Family
from cluster.weights.architectures import Architecture, Scale, architecture
from cluster.weights.components import build_pipeline, materialize_, on_meta

RANDOM_SEED = 0


def build_random_pipeline(
    family: Family | str,
    device: torch.device,
    dtype: torch.dtype,
    scale: Scale = "full",
) -> DiffusionPipeline:
    """Build `family` at `scale` on the meta device, then materialise it on `device`.

    `scale="tiny"` exercises the same path on a CPU in tests.
    """
    arch: Architecture = architecture(family, scale)
    pipeline = build_pipeline(arch, tiny_tokenizers(), on_meta)
    for component in pipeline.components.values():
        if isinstance(component, torch.nn.Module):
            materialize_(component, device, dtype, RANDOM_SEED)
    return pipeline


def build_random_denoiser(family: Family | str, device: torch.device, dtype: torch.dtype,
                          scale: Scale = "full") -> torch.nn.Module:
    """The denoiser of `family` alone (a FLUX model's Fill weights: no second set of text encoders)."""
    arch = architecture(family, scale)
    denoiser_class = getattr(diffusers, arch.denoiser_class)
    module = on_meta(lambda: denoiser_class(**arch.denoiser))
    materialize_(module, device, dtype, RANDOM_SEED)
    return module


def parameter_count(family: Family | str, scale: Scale = "full") -> dict[str, int]:
    """Parameters per component, counted on the meta device (no memory used)."""
    pipeline = build_pipeline(architecture(family, scale), tiny_tokenizers(), on_meta)
    return {
        name: sum(p.numel() for p in module.parameters())
        for name, module in pipeline.components.items()
        if isinstance(module, torch.nn.Module)
    }
