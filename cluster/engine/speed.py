"""Faster renders of a loaded pipeline: step caching per request, regional compile, quantized weights.

- **Step caching** is a per-request choice, `quality: "fast"` (the default, `"lossless"`, is
  bit-identical to a render without any of this). It uses diffusers' own cache hooks on the
  denoiser (`enable_cache`): TaylorSeer by default, which computes every block on a fixed
  schedule of steps and predicts the others, so what it skips does not depend on the batch's
  content and a fast request renders the same pixels alone or in any batch of fast requests;
  First Block Cache decides from the batch's own activations, so its requests are rendered one
  image per batch to keep that promise. Caching is switched per device batch (a batch holds one
  quality). Only pipelines that give the denoiser a cache context take it (FLUX and Kontext in
  diffusers 0.42; not SDXL or SD 1.5), and distilled few-step models gain nothing: for those a
  `fast` request renders lossless, and its record and metadata say so.
- **Regional compile** (`compile: true`): `compile_repeated_blocks` compiles one transformer
  block and reuses it for all, with dynamic shapes; the replica warms it up at start at each of
  `compile_sizes` and at batch sizes 1 and its largest, so no request pays a compile, and other
  sizes and batch sizes within those seen run without recompiling. A compiled model has no
  step cache (its hooks keep per-step state that the compiled code guards on: they would
  recompile at every step), so its `fast` requests render lossless, and say so.
- **Quantized weights** (`quantize:`): torchao's `fp8` (float8 weights and activations, on GPUs
  of compute capability 8.9 and up: Ada, Hopper) or `int8_weight_only` (anywhere, the CPU
  included, which is how the plumbing is tested here). A lossy, per-model choice: a model entry
  of its own (`flux-dev-fp8: {like: flux-dev, quantize: fp8}`) offers it beside the full one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from cluster.spec.settings import FastSettings, Quantization

if TYPE_CHECKING:  # the config names these settings; torch loads with the pipeline, not before
    import torch

log = logging.getLogger(__name__)

def denoiser(pipeline) -> "torch.nn.Module | None":
    return getattr(pipeline, "transformer", None) or getattr(pipeline, "unet", None)


def takes_cache(pipeline) -> bool:
    """Whether diffusers' cache hooks work here: the denoiser has them, and the pipeline gives
    it a cache context (FLUX-family pipelines do; SD pipelines in diffusers 0.42 do not)."""
    from diffusers import FluxKontextPipeline, FluxPipeline

    module = denoiser(pipeline)
    return hasattr(module, "enable_cache") and isinstance(pipeline, (FluxPipeline, FluxKontextPipeline))


class StepCache:
    """Switches a pipeline's step cache on and off between device batches (its device thread)."""

    def __init__(self, pipeline, settings: FastSettings):
        self.module = denoiser(pipeline)
        self.settings = settings
        self.available = settings.method != "none" and takes_cache(pipeline)
        self._on = False

    def apply(self, quality: str) -> None:
        wanted = quality == "fast" and self.available
        if wanted == self._on:
            return
        if wanted:
            self.module.enable_cache(self._config())
        else:
            self.module.disable_cache()
        self._on = wanted

    def _config(self):
        from diffusers.hooks import FirstBlockCacheConfig, TaylorSeerCacheConfig

        if self.settings.method == "first_block":
            return FirstBlockCacheConfig(threshold=self.settings.threshold)
        # Factors in the denoiser's own dtype: bf16 on GPUs, fp32 on the CPU.
        return TaylorSeerCacheConfig(cache_interval=self.settings.cache_interval,
                                     disable_cache_before_step=self.settings.disable_cache_before_step,
                                     taylor_factors_dtype=next(self.module.parameters()).dtype)


def compile_regions(pipeline) -> None:
    """Regional compile of the denoiser's repeated blocks (dynamic shapes: sizes and batch sizes
    share compiled code once warmed)."""
    module = denoiser(pipeline)
    if not hasattr(module, "compile_repeated_blocks"):
        raise ValueError(f"{type(module).__name__} has no repeated blocks to compile")
    module.compile_repeated_blocks(fullgraph=True, dynamic=True)


def quantize_weights(pipeline, method: Quantization, device: "torch.device") -> None:
    """The denoiser's linear weights through torchao (`fp8` needs an Ada or Hopper GPU)."""
    import torch

    if method == "none":
        return
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Int8WeightOnlyConfig, quantize_
    except ImportError as exc:
        raise ValueError(f"quantize: {method} needs torchao (pip install torchao): {exc}") from None
    if method == "fp8":
        if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
            raise ValueError("quantize: fp8 needs a GPU of compute capability 8.9 or more (Ada, Hopper); "
                             "int8_weight_only runs anywhere")
        config = Float8DynamicActivationFloat8WeightConfig()
    else:
        config = Int8WeightOnlyConfig()
    quantize_(denoiser(pipeline), config)
    log.info("quantized the denoiser's weights: %s", method)
