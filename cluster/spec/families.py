"""The pipeline families: one diffusers pipeline class and one component layout each.

Named here, apart from the architectures (cluster/weights/architectures.py), so that the
catalogue and the doors can say which family a model is without loading torch or diffusers.
"""

from __future__ import annotations

from enum import StrEnum


class Family(StrEnum):
    """A pipeline family: one diffusers pipeline class and one component layout."""

    FLUX = "flux"
    FLUX_KONTEXT = "flux-kontext"
    # FLUX.1 Fill: a transformer that also reads the masked input and the mask. Not a model of
    # its own here: a FLUX model's `fill` weights, which render that model's inpaints.
    FLUX_FILL = "flux-fill"
    SDXL = "sdxl"
    SD15 = "sd15"


PIPELINE_CLASS: dict[Family, str] = {
    Family.FLUX: "FluxPipeline",
    Family.FLUX_KONTEXT: "FluxKontextPipeline",
    Family.FLUX_FILL: "FluxFillPipeline",
    Family.SDXL: "StableDiffusionXLPipeline",
    Family.SD15: "StableDiffusionPipeline",
}
