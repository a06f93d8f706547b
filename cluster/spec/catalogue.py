"""The model catalogue: API name -> pipeline family, weight source, defaults and limits.

Limits come from the providers' documentation as recorded in `shared/contracts/dashscope.md`.
Each model has two size rules: `api_sizes`, what the HTTP APIs accept (the provider's list), and
`render_sizes`, what the model can render at all (batch jobs and the CLI accept any of these).

`resolve()` turns a `RenderRequest` into a `ResolvedRequest` (defaults filled, prompt truncated,
seed chosen) or a `RenderError` naming the offending parameter. It never raises for bad input, and
it is the only place a request is checked: everything after it takes the `ResolvedRequest`.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cluster.spec.errors import ErrorCode, RenderError
from cluster.spec.families import Family
from cluster.spec.loras import LoraPolicy, resolve_loras
from cluster.spec.request import IMAGE_FORMATS, Mode, RenderRequest, ResolvedRequest
from cluster.spec.seeding import MAX_SEED, draw_seed
from cluster.spec.settings import QUALITIES, FastSettings, Quantization, SimulatedTiming

MAX_PARTIAL_IMAGES = 3  # previews a request may ask for (OpenAI's `partial_images`)
# How far from the input image a request goes when it does not say: image to image keeps its
# composition; an inpaint repaints the masked area from noise (the rest is the input's anyway).
DEFAULT_STRENGTH: dict[str, float] = {"image": 0.8, "inpaint": 1.0}
# FLUX.1 Fill [dev] is distilled for a guidance far above FLUX.1 [dev]'s (its model card: 30).
FILL_GUIDANCE = 30.0

_SIZE = re.compile(r"^\s*(\d+)\s*[*xX]\s*(\d+)\s*$")


def parse_size(size: str) -> tuple[int, int] | None:
    """`"1024*1024"` (or `1024x1024`) -> (width, height); None when not of that form."""
    match = _SIZE.match(size)
    return (int(match[1]), int(match[2])) if match else None


def format_size(width: int, height: int) -> str:
    return f"{width}*{height}"


MODEL_DEPLOYMENT_PREFIX = "model-"


def deployment_name(model: str) -> str:
    """The name of a model's Serve deployment (dots are not welcome in deployment names). Here,
    in the core, because both doors need it: the service deploys under it and a batch job
    rendering through the service (`--via-serve`) looks its model up by it."""
    return MODEL_DEPLOYMENT_PREFIX + model.replace(".", "_")


class SizeRule(BaseModel):
    """Sizes a model takes: an explicit list, or a grid (each side in [min, max], a multiple of
    `multiple`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed: list[str] | None = Field(None, description="Exact 'W*H' sizes; when set, only these.")
    min_side: int = Field(256, description="Smallest width or height.")
    max_side: int = Field(2048, description="Largest width or height.")
    multiple: int = Field(16, description="Width and height must be multiples of this.")

    def check(self, width: int, height: int) -> str | None:
        """None when allowed, else why not (the words that follow "size")."""
        if self.allowed is not None:
            if format_size(width, height) in self.allowed:
                return None
            return f"{format_size(width, height)} is not allowed; allowed: {', '.join(self.allowed)}"
        for side, value in (("width", width), ("height", height)):
            if not self.min_side <= value <= self.max_side or value % self.multiple:
                return (f"{format_size(width, height)} is not allowed: {side} must be "
                        f"{self.min_side}..{self.max_side} in steps of {self.multiple}")
        return None


class ModelSpec(BaseModel):
    """One servable model: what it is, where its weights are, and what requests it accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="API name, e.g. flux-schnell.")
    family: Family = Field(description="Pipeline family: flux, flux-kontext, sdxl or sd15.")
    source: str = Field(description="Weights: hub id, local dir, fsspec URI, tiny:<family> or random:<family>.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bfloat16 on CUDA, float32 on CPU.")
    default_size: str = Field("1024*1024", description="Size when a request gives none.")
    api_sizes: SizeRule = Field(description="Sizes the HTTP APIs accept.")
    render_sizes: SizeRule = Field(description="Sizes the model can render (batch jobs, CLI).")
    default_steps: int = Field(description="Denoising steps when a request gives none.")
    min_steps: int = Field(1, description="Fewest steps accepted.")
    max_steps: int = Field(description="Most steps accepted.")
    guidance_name: Literal["guidance", "scale"] = Field(
        "guidance", description="Name of the guidance parameter on the DashScope API.")
    default_guidance: float = Field(description="Guidance when a request gives none.")
    min_guidance: float = Field(description="Smallest guidance accepted.")
    max_guidance: float = Field(description="Largest guidance accepted.")
    max_n: int = Field(4, description="Most images per request.")
    prompt_limit: int = Field(description="Prompts longer than this are truncated.")
    prompt_unit: Literal["chars", "words"] = Field(description="Unit of prompt_limit.")
    max_batch_size: int = Field(4, ge=1, description="Most images the engine renders in one batch.")
    offload: bool = Field(False, description="Diffusers model CPU offload (GPU only; no-op on CPU).")
    warmup: bool = Field(True, description="Render once at load so failures (OOM) show at boot.")
    simulated: SimulatedTiming | None = Field(
        None, description="Timing of a SIMULATED GPU (sim: sources only; default: H100 FLUX-schnell figures).")
    loras: LoraPolicy = Field(default_factory=LoraPolicy, description="Which LoRA adapters requests may name.")
    lora_slots: int = Field(3, ge=1, description="Adapter sets a replica keeps loaded (LRU).")
    lora_rank: int = Field(64, ge=1, le=1024, description="Compiled models: the rank of the one adapter slot, "
                                                           "the most a request's adapters may add up to.")
    fast: FastSettings = Field(default_factory=FastSettings, description="What quality 'fast' means (step cache).")
    compile: bool = Field(False, description="Regional compile of the denoiser, warmed up at load.")
    compile_sizes: list[str] = Field(default_factory=list, description="W*H sizes warmed up at load when compiled "
                                                                        "(default: the default size).")
    quantize: Quantization = Field("none", description="Denoiser weights: none, int8_weight_only, or fp8 (Ada/Hopper).")
    fill: str | None = Field(None, description="FLUX models: weights of a FLUX.1 Fill transformer (a source, e.g. "
                                               "black-forest-labs/FLUX.1-Fill-dev or tiny:flux-fill). Inpaints are "
                                               "rendered by it, with this model's text encoders and VAE; without it, "
                                               "by this model's own weights (FluxInpaintPipeline).")
    preview_decoder: str | None = Field(None, description="A tiny autoencoder (AutoencoderTiny: madebyollin/taef1 for "
                                                          "FLUX, madebyollin/taesdxl for SDXL) that draws previews "
                                                          "at full size; without it, a linear latent-to-RGB map at "
                                                          "an eighth of each side.")

    @model_validator(mode="after")
    def _fill_is_for_flux(self) -> "ModelSpec":
        if self.fill is not None and self.family != Family.FLUX:
            raise ValueError(f"fill: only FLUX models take Fill weights; {self.name} is {self.family.value}")
        if self.fill is not None and self.offload:
            raise ValueError("fill: not with offload (the Fill pipeline shares this model's modules, which "
                             "offload moves on its own pipeline's schedule)")
        return self

    @property
    def step_cache(self) -> bool:
        """Whether `fast` requests get a step cache here. Not on compiled models: the cache
        hooks keep per-step state that torch.compile guards on, so they would recompile at
        every step."""
        return self.fast.method != "none" and not self.compile

    @property
    def edit(self) -> bool:
        """Edit models take an input image."""
        return self.family == Family.FLUX_KONTEXT

    def resolve(self, req: RenderRequest, sizes: Literal["api", "render"] = "render") -> ResolvedRequest | RenderError:
        """Validate `req` against this model and fill in its defaults: the one check a request
        gets. Errors name the parameter in the core's terms (`RenderError.param`)."""
        prompt = (req.prompt or "").strip()
        if not prompt:
            return RenderError(ErrorCode.EMPTY_PROMPT, "must not be empty", "prompt")
        mode = self.mode_of(req)
        if isinstance(mode, RenderError):
            return mode
        width, height = (req.width, req.height)
        if width is None or height is None:
            width, height = parse_size(self.default_size)  # type: ignore[misc]
        rule = self.api_sizes if sizes == "api" else self.render_sizes
        if problem := rule.check(width, height):
            return RenderError.invalid("size", f"{problem} for model {self.name}")
        steps = self.default_steps if req.steps is None else req.steps
        if not self.min_steps <= steps <= self.max_steps:
            return RenderError.invalid("steps", f"must be {self.min_steps}..{self.max_steps} for model {self.name}, "
                                                f"got {steps}")
        guidance = self.default_guidance if req.guidance is None else float(req.guidance)
        if req.guidance is None and mode == "inpaint" and self.fill:
            guidance = FILL_GUIDANCE
        elif not self.min_guidance <= guidance <= self.max_guidance:
            return RenderError.invalid("guidance", f"must be {self.min_guidance:g}..{self.max_guidance:g} "
                                                   f"for model {self.name}, got {guidance:g}")
        if not 1 <= req.n <= self.max_n:
            return RenderError.invalid("n", f"must be 1..{self.max_n} for model {self.name}, got {req.n}")
        if req.seed is not None and not 0 <= req.seed <= MAX_SEED:
            return RenderError.invalid("seed", f"must be 0..{MAX_SEED}, got {req.seed}")
        loras = resolve_loras(req.loras, self.loras, self.name)
        if isinstance(loras, RenderError):
            return loras
        if mode == "inpaint" and self.fill and (problem := self._fill_refuses(req)):
            return problem
        quality = req.quality or "lossless"
        if quality not in QUALITIES:
            return RenderError.invalid("quality", f"must be {' or '.join(QUALITIES)}, got {quality!r}")
        if not self.step_cache or (mode == "inpaint" and self.fill):
            quality = "lossless"  # a model without a step cache renders every request lossless
        strength = DEFAULT_STRENGTH.get(mode) if req.strength is None else float(req.strength)
        if strength is not None and not (0 < strength <= 1):
            return RenderError.invalid("strength", f"must be more than 0 and at most 1, got {strength:g}")
        if strength is not None and steps * strength < 1:  # SD pipelines run int(steps x strength) steps
            return RenderError.invalid("strength", f"{strength:g} of {steps} steps runs no denoising step: "
                                                   f"steps x strength must be at least 1")
        output_format = req.output_format or "png"
        if output_format not in IMAGE_FORMATS:
            return RenderError.invalid("output_format", f"must be {', '.join(IMAGE_FORMATS)}, got {output_format!r}")
        output_quality = 95 if req.output_quality is None else req.output_quality
        if not 0 <= output_quality <= 100:
            return RenderError.invalid("output_quality", f"must be 0..100, got {output_quality}")
        partial_images = req.partial_images or 0
        if not 0 <= partial_images <= MAX_PARTIAL_IMAGES:
            return RenderError.invalid("partial_images", f"must be 0..{MAX_PARTIAL_IMAGES}, got {partial_images}")
        return ResolvedRequest(
            model=self.name,
            prompt=self.truncate(prompt),
            negative_prompt=self.truncate(req.negative_prompt.strip()) if req.negative_prompt else None,
            width=width,
            height=height,
            steps=steps,
            guidance=guidance,
            seed=draw_seed() if req.seed is None else req.seed,
            n=req.n,
            add_sampling_metadata=req.add_sampling_metadata,
            init_image=req.init_image,
            request_id=req.request_id,
            loras=loras,
            quality=quality,
            mode=mode,
            mask=req.mask if mode == "inpaint" else None,
            strength=strength,
            output_format=output_format,  # type: ignore[arg-type]
            output_quality=output_quality,
            partial_images=partial_images,
        )

    def mode_of(self, req: RenderRequest) -> Mode | RenderError:
        """What this model does with the request's inputs: an edit model edits its input image (a
        mask or a strength is not for it); any other model renders text to image, image to image
        from an input image, or inpaints where a mask says."""
        if self.edit:
            if not req.init_image:
                return RenderError.invalid("image", f"is required: model {self.name} edits an image")
            if req.mask:
                return RenderError.invalid("mask", f"is not taken by model {self.name}: it edits the whole image "
                                                   f"by its instruction (inpaint with a text-to-image model)")
            if req.strength is not None:
                return RenderError.invalid("strength", f"is not taken by model {self.name} (it edits by instruction)")
            return "edit"
        if req.mask and not req.init_image:
            return RenderError.invalid("mask", "needs an input image to repaint")
        if req.strength is not None and not req.init_image:
            return RenderError.invalid("strength", "is taken only with an input image (image to image, inpaint)")
        if not req.init_image:
            return "text"
        return "inpaint" if req.mask else "image"

    def _fill_refuses(self, req: RenderRequest) -> RenderError | None:
        """What the Fill weights cannot take: adapters trained for this model's own transformer,
        and a negative prompt (the Fill pipeline has no true guidance)."""
        if req.loras:
            return RenderError.invalid("loras", f"are not taken by model {self.name}'s inpaints: they are "
                                                f"rendered by its Fill weights, which the adapters were not made for")
        if req.negative_prompt:
            return RenderError.invalid("negative_prompt", f"is not taken by model {self.name}'s inpaints "
                                                          f"(its Fill weights take the prompt alone)")
        return None

    def size_for_aspect(self, ratio_w: int, ratio_h: int) -> tuple[int, int] | RenderError:
        """The renderable size nearest to aspect `ratio_w:ratio_h` at about this model's native
        area (that of its default size: one megapixel for FLUX and SDXL)."""
        if ratio_w <= 0 or ratio_h <= 0:
            return RenderError.invalid("size", f"{ratio_w}:{ratio_h} is not an aspect ratio: its sides must be positive")
        wanted = ratio_w / ratio_h
        rule = self.render_sizes
        if rule.allowed is not None:
            candidates = [parse_size(s) for s in rule.allowed]
            width, height = min(candidates, key=lambda wh: abs(math.log(wh[0] / wh[1] / wanted)))  # type: ignore[index]
        else:
            area = math.prod(parse_size(self.default_size))  # type: ignore[arg-type]
            m = rule.multiple
            height = min(rule.max_side, max(rule.min_side, round(math.sqrt(area / wanted) / m) * m))
            width = min(rule.max_side, max(rule.min_side, round(height * wanted / m) * m))
        if abs(math.log(width / height / wanted)) > math.log(1.1):
            return RenderError.invalid("size", f"{ratio_w}:{ratio_h} is outside the aspect ratios model {self.name} "
                                               f"renders (nearest: {width}x{height})")
        return width, height

    def truncate(self, text: str) -> str:
        if self.prompt_unit == "chars":
            return text[: self.prompt_limit]
        words = text.split()
        return text if len(words) <= self.prompt_limit else " ".join(words[: self.prompt_limit])


# --- The built-in catalogue ---------------------------------------------------------------

_FLUX_API_SIZES = SizeRule(allowed=["512*1024", "768*512", "768*1024", "1024*576", "576*1024", "1024*1024"])
_FLUX_RENDER_SIZES = SizeRule(min_side=256, max_side=2048, multiple=16)
_SD_RENDER_SIZES = SizeRule(min_side=256, max_side=2048, multiple=8)


def _flux(name: str, source: str, steps: int, family: Family = Family.FLUX) -> ModelSpec:
    return ModelSpec(
        name=name, family=family, source=source,
        api_sizes=_FLUX_API_SIZES, render_sizes=_FLUX_RENDER_SIZES,
        default_steps=steps, max_steps=100,
        guidance_name="guidance", default_guidance=3.5, min_guidance=0.0, max_guidance=20.0,
        prompt_limit=500, prompt_unit="chars",
        # Many-step models gain from a step cache; a distilled few-step one (schnell) does not.
        fast=FastSettings(method="taylorseer" if steps >= 20 else "none"),
    )


def _sd(name: str, family: Family, source: str, default_size: str, api_sizes: SizeRule) -> ModelSpec:
    return ModelSpec(
        name=name, family=family, source=source, default_size=default_size,
        api_sizes=api_sizes, render_sizes=_SD_RENDER_SIZES,
        default_steps=50, max_steps=500,
        guidance_name="scale", default_guidance=10.0, min_guidance=1.0, max_guidance=15.0,
        prompt_limit=75, prompt_unit="words",
    )


# Sources here are the public weights; configs/local.yaml points every model at tiny weights.
CATALOGUE: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        _flux("flux-schnell", "black-forest-labs/FLUX.1-schnell", steps=4),
        _flux("flux-dev", "black-forest-labs/FLUX.1-dev", steps=50),
        _flux("flux-merged", "sayakpaul/FLUX.1-merged", steps=30),
        _flux("flux-kontext", "black-forest-labs/FLUX.1-Kontext-dev", steps=28, family=Family.FLUX_KONTEXT),
        _sd("stable-diffusion-xl", Family.SDXL, "stabilityai/stable-diffusion-xl-base-1.0", "1024*1024",
            SizeRule(min_side=512, max_side=1024, multiple=128)),
        _sd("stable-diffusion-v1.5", Family.SD15, "stable-diffusion-v1-5/stable-diffusion-v1-5", "512*512",
            SizeRule(allowed=["512*512"])),
    ]
}
