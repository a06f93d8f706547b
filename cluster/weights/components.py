"""Instantiate a family's pipeline from an `Architecture`: the one builder behind `tiny:` and
`random:` weight sources.

Two ways to create the modules:
- `on_cpu`: the modules' own initialisation on the CPU, seeded (tiny models, saved to disk).
- `on_meta` + `materialize_`: shapes only on the meta device, then storage allocated and
  initialised directly on the target device, so a 12B-parameter transformer never exists on
  the CPU (full-size random models for GPU benchmarks).
"""

from __future__ import annotations

from typing import Any, Callable

import diffusers
import torch
import transformers
from accelerate import init_empty_weights

from cluster.spec.families import PIPELINE_CLASS
from cluster.weights.architectures import Architecture, TextEncoderSpec

_TEXT_CONFIG = {
    "CLIPTextModel": transformers.CLIPTextConfig,
    "CLIPTextModelWithProjection": transformers.CLIPTextConfig,
    "T5EncoderModel": transformers.T5Config,
}

ModuleFactory = Callable[[Callable[[], torch.nn.Module]], torch.nn.Module]


def on_cpu(seed: int) -> ModuleFactory:
    """Create each module normally on the CPU, every one from the same seed (reproducible)."""

    def make(create: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        torch.manual_seed(seed)
        return create().eval()

    return make


def on_meta(create: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """Create a module's parameters on the meta device (no storage); buffers stay real."""
    with init_empty_weights(include_buffers=False):
        module = create().eval()
    # transformers ties shared embeddings (T5) at init, but not under init_empty_weights.
    if hasattr(module, "tie_weights"):
        module.tie_weights()
    return module


def materialize_(module: torch.nn.Module, device: torch.device, dtype: torch.dtype, seed: int) -> None:
    """Give every meta parameter real storage on `device` and random values, in place.

    Layers with `reset_parameters` (Linear, Conv, Embedding, norms) use their own default
    initialisation; any other parameter gets ones (1-D weights, i.e. norm scales), zeros
    (biases) or N(0, 0.02). Tied parameters stay tied.
    """
    replaced: dict[int, torch.nn.Parameter] = {}
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is None:
                continue
            if id(param) not in replaced:
                empty = torch.empty(param.shape, device=device, dtype=dtype)
                replaced[id(param)] = torch.nn.Parameter(empty, requires_grad=False)
            sub._parameters[name] = replaced[id(param)]
        for name, buf in list(sub._buffers.items()):
            if buf is not None:
                sub._buffers[name] = buf.to(device)

    with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        initialised: set[int] = set()
        for sub in module.modules():
            own = [p for p in sub._parameters.values() if p is not None]
            if own and hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
                initialised.update(id(p) for p in own)
        for name, param in module.named_parameters():
            if id(param) in initialised:
                continue
            if param.ndim == 1 and name.endswith("weight"):
                param.fill_(1.0)
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.normal_(0.0, 0.02)


def _text_encoder(spec: TextEncoderSpec) -> Callable[[], torch.nn.Module]:
    config = _TEXT_CONFIG[spec.model_class](**spec.config)
    model_class = getattr(transformers, spec.model_class)
    return lambda: model_class(config)


def build_pipeline(
    arch: Architecture,
    tokenizers: dict[str, Any],
    make: ModuleFactory,
) -> diffusers.DiffusionPipeline:
    """Assemble the family's diffusers pipeline; `tokenizers` maps "clip"/"t5" to a tokenizer."""
    denoiser_class = getattr(diffusers, arch.denoiser_class)
    components: dict[str, Any] = {
        arch.denoiser_name: make(lambda: denoiser_class(**arch.denoiser)),
        "vae": make(lambda: diffusers.AutoencoderKL(**arch.vae)),
        "scheduler": getattr(diffusers, arch.scheduler_class)(**arch.scheduler),
    }
    for i, spec in enumerate(arch.text_encoders):
        suffix = "" if i == 0 else f"_{i + 1}"
        components[f"text_encoder{suffix}"] = make(_text_encoder(spec))
        components[f"tokenizer{suffix}"] = tokenizers[spec.tokenizer]
    pipeline_class = getattr(diffusers, PIPELINE_CLASS[arch.family])
    return pipeline_class(**components, **arch.extra_components)
