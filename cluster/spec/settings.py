"""Settings types the config names for engines it does not load: what `quality: fast` means for a
model (the engine's step cache, cluster/engine/speed.py), weight quantization, and a SIMULATED
GPU's timing (cluster/doubles/simulated_gpu.py). Here, so that reading a config loads neither.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Quality = Literal["lossless", "fast"]
QUALITIES: tuple[str, ...] = ("lossless", "fast")
CacheMethod = Literal["none", "taylorseer", "first_block"]
Quantization = Literal["none", "int8_weight_only", "fp8"]


class FastSettings(BaseModel):
    """What `quality: fast` means for one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: CacheMethod = Field("none", description="Step cache for fast requests: taylorseer (a fixed schedule), "
                                                    "first_block (decided per batch: one image a batch), or none "
                                                    "(fast renders lossless).")
    cache_interval: int = Field(4, ge=2, description="TaylorSeer: a full computation every this many steps.")
    disable_cache_before_step: int = Field(3, ge=1, description="TaylorSeer: full computations for the first steps.")
    threshold: float = Field(0.08, gt=0, description="First Block Cache: relative change below which blocks are "
                                                     "skipped.")

    @property
    def batch_invariant(self) -> bool:
        """Whether what the cache skips is independent of the batch's content."""
        return self.method != "first_block"


# FLUX.1-schnell, 1024*1024, 4 steps, bf16 on one H100, as published: about 0.45 s for one image,
# about 0.375 s per image in batches of 4 (a fixed cost per call, then a cost per image).
H100_FLUX_SCHNELL_BASE_S = 0.10
H100_FLUX_SCHNELL_PER_IMAGE_S = 0.35


class SimulatedTiming(BaseModel):
    """How long a simulated GPU takes per batch: base_s + per_image_s * batch size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_s: float = Field(H100_FLUX_SCHNELL_BASE_S, ge=0, description="Fixed cost of one pipeline call.")
    per_image_s: float = Field(H100_FLUX_SCHNELL_PER_IMAGE_S, ge=0, description="Cost of each image in it.")

    def batch_s(self, batch: int) -> float:
        return self.base_s + self.per_image_s * batch


FAKE_TIMING = SimulatedTiming(base_s=0.0, per_image_s=0.0)  # the FAKE engine: no time at all
