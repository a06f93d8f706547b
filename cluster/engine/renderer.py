"""`Renderer`: one loaded model that turns resolved requests into images.

The same class is the body of a Ray Serve model replica and the callable of a Ray Data actor
pool, so it imports neither. It takes requests already validated (`ResolvedRequest`, made once
by `ModelSpec.resolve` in the task layer or the batch job) and resolves only the raw ones handed
to `render()` (the CLI, warm-up). It expands each request into its `n` images (image i seeded
seed + i, each with its own generator), renders images of one shape together in batches of at
most `max_batch_size`, and returns one `RenderResult` per image in request order. A failing request or batch yields error results, never an exception.

Four steps, each done once per request or batch:

- `prepare()` checks what a request brings that the model has to read (its LoRA files, fetched
  and checked; its input image and mask, decoded at the render size) and refuses it otherwise.
  It blocks (downloads, file reads): a caller on an event loop runs it in a thread, before the
  request joins a batch.
- `plan()` groups prepared requests' images into device batches of one shape (no I/O).
- `denoise()` is the device's work for one batch; `encode()` (PNG/WebP/JPEG) the CPU's.

One model renders four kinds of request (`ResolvedRequest.mode`), each through its own diffusers
pipeline made from the loaded one (`from_pipe`: the same modules, so the same weights, adapters,
compiled regions and step cache): text to image; image to image (an input image and a
`strength`); inpaint (an input image repainted where its mask says, the rest composited back
from the input exactly, as clients expect of an edit); and an edit model's instruction edit.
A device batch holds one kind and one strength.

`render()` runs them one after the other; a Serve replica prepares in a thread, then runs the
next batch's `denoise()` while the previous batch is encoded.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import torch
from PIL import Image

from cluster.engine.batch_invariance import make_batch_invariant
from cluster.engine.batching import plan_batches
from cluster.engine.previews import LatentPreviewer, PreviewTaker, TinyAutoencoderPreviewer
from cluster.engine.progress import Canceled, StepProgress, StepReporter
from cluster.engine.speed import StepCache, compile_regions, quantize_weights
from cluster.images import masks
from cluster.images.encoding import ImageFormat, decode, encode, sampling_metadata
from cluster.lora.adapters import PipelineAdapters
from cluster.lora.cache import LocalLora, LoraCache, LoraUnavailable
from cluster.lora.hotswap import SlotAdapters
from cluster.spec.catalogue import ModelSpec, parse_size
from cluster.spec.errors import ErrorCode, RenderError, first_line
from cluster.spec.families import Family
from cluster.spec.loras import AppliedLora, Lora, adapter_set_id
from cluster.spec.request import RenderRequest, RenderResult, ResolvedRequest
from cluster.spec.seeding import generator, image_seeds
from cluster.spec.settings import FastSettings
from cluster.weights.base_weights import BaseWeights
from cluster.weights.sources import load_fill_transformer, load_pipeline, load_preview_decoder

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when present, else CPU (or what the caller names)."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` means bf16 on CUDA and fp32 on CPU."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[name]


@dataclass(frozen=True)
class Denoised:
    """A batch that left the device: its pictures, or the results that say why it failed."""

    batch: list["_Image"]
    pictures: list[Image.Image] | None = None
    failed: list[RenderResult] | None = None
    elapsed_s: float = 0.0
    batch_size: int = 0  # images in the device batch (`batch` may be fewer: canceled ones dropped)
    loras: tuple[AppliedLora, ...] = ()  # the adapters the batch was rendered with


@dataclass(frozen=True)
class Prepared:
    """A request whose inputs this renderer has checked: its input image decoded, its adapters'
    files local and checked (by location). Made once by `prepare`; batches only read it."""

    request: ResolvedRequest
    init_image: Image.Image | None = None
    lora_files: dict[str, LocalLora] = dataclasses.field(default_factory=dict)
    mask: Image.Image | None = None  # inpaint: 255 where the model repaints, at the render size


@dataclass(frozen=True)
class _Image:
    """One image to render: image `index` of request `request_index`."""

    request_index: int
    index: int
    seed: int
    prepared: Prepared

    @property
    def request(self) -> ResolvedRequest:
        return self.prepared.request

    @property
    def init_image(self) -> Image.Image | None:
        return self.prepared.init_image


def _batch_key(image: _Image) -> Hashable:
    """Images that can share one pipeline call: same shape and same sampling settings.

    Whether a negative prompt is present is part of the key, because SD pipelines treat a
    missing one (zeros) differently from any text, and one call takes one or the other.
    """
    r = image.request
    init_size = image.init_image.size if image.init_image is not None else None
    # One adapter set per batch: the pipeline applies one set to a whole call.
    return (r.width, r.height, r.steps, r.guidance, r.negative_prompt is not None, init_size,
            adapter_set_id(r.loras), r.quality, r.mode, r.strength)


class Renderer:
    """One model, loaded on one device, rendering batches of requests."""

    def __init__(self, spec: ModelSpec, device: str | None = None, lora_cache: LoraCache | None = None):
        """`lora_cache`: where adapter files come from (default: the node's cache, with the
        strict address rules)."""
        self.spec = spec
        self.max_batch_size = spec.max_batch_size
        self.device = pick_device(device)
        self.dtype = pick_dtype(spec.dtype, self.device)
        started = time.perf_counter()
        self.pipeline = load_pipeline(spec.name, spec.family, spec.source, self.dtype, self.device, spec.simulated)
        self.fill = self._load_fill()
        if spec.quantize != "none":
            for pipeline in (self.pipeline, self.fill) if self.fill else (self.pipeline,):
                quantize_weights(pipeline, spec.quantize, self.device)
        self._place_on_device()
        self.pipeline.set_progress_bar_config(disable=True)
        self.base = BaseWeights({name: c for name, c in self.pipeline.components.items()
                                 if isinstance(c, torch.nn.Module)}
                                | ({"fill_transformer": self.fill.transformer} if self.fill else {}),
                                fixed_storage=not spec.offload)
        self.lora_cache = lora_cache or LoraCache()
        self._pipelines: dict[str, Any] = {"text": self.pipeline, "edit": self.pipeline}
        if self.fill:
            self._pipelines["inpaint"] = self.fill
        self.previewer = self._previewer()
        self.adapters = self._adapters()
        self.step_cache = StepCache(self.pipeline, spec.fast if spec.step_cache else FastSettings())
        if spec.compile:
            compile_regions(self.pipeline)
        self.load_s = time.perf_counter() - started
        log.info("loaded %s from %s on %s (%s) in %.1fs", spec.name, spec.source, self.device,
                 self.dtype, self.load_s)
        if spec.warmup:
            self.warm_up()
        if spec.compile:
            self.warm_up_compiled()

    # --- set-up -------------------------------------------------------------------------------

    def _load_fill(self):
        """The FLUX.1 Fill pipeline that renders this model's inpaints, when `fill` names its
        weights: that transformer, and this model's own text encoders, VAE and scheduler (one
        copy of each in memory). None otherwise: FluxInpaintPipeline on the model's weights."""
        from diffusers import DiffusionPipeline, FluxFillPipeline

        if self.spec.fill is None or not isinstance(self.pipeline, DiffusionPipeline):  # SIMULATED: itself
            return None
        transformer = load_fill_transformer(self.spec.name, self.spec.fill, self.dtype, self.device)
        shared = ("scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
        fill = FluxFillPipeline(transformer=transformer, **{name: self.pipeline.components[name] for name in shared})
        fill.set_progress_bar_config(disable=True)
        return fill

    def _previewer(self) -> LatentPreviewer | TinyAutoencoderPreviewer:
        """The configured tiny autoencoder on this model's device, else the fitted linear map."""
        from diffusers import DiffusionPipeline

        if self.spec.preview_decoder is None or not isinstance(self.pipeline, DiffusionPipeline):
            return LatentPreviewer()
        decoder = load_preview_decoder(self.spec.name, self.spec.preview_decoder, self.dtype,
                                       self.pipeline.vae.config.latent_channels)
        return TinyAutoencoderPreviewer(decoder.to(self.device))

    def _modules(self) -> list[torch.nn.Module]:
        modules = [c for c in self.pipeline.components.values() if isinstance(c, torch.nn.Module)]
        return modules + [self.fill.transformer] if self.fill else modules

    def _place_on_device(self) -> None:
        if self.spec.offload and self.device.type == "cuda":
            self.pipeline.enable_model_cpu_offload(device=self.device)
            return
        if self.spec.offload:
            log.info("%s: offload has no effect on %s; running fully on it", self.spec.name, self.device)
        self.pipeline.to(self.device)
        if self.fill:
            self.fill.transformer.to(self.device)
        if self.device.type == "cpu":
            make_batch_invariant(self._modules())

    def _adapters(self) -> PipelineAdapters | SlotAdapters:
        """A compiled model that takes adapters gets one slot, added before the compile."""
        if self.spec.compile and self.spec.loras.max:
            return SlotAdapters(self.pipeline, self.spec.lora_slots, self.spec.lora_rank, self.spec.name,
                                after_load=self._after_adapter_load)
        return PipelineAdapters(self.pipeline, self.spec.lora_slots, self.spec.name, self.spec.loras.max_rank,
                                after_load=self._after_adapter_load)

    def _after_adapter_load(self) -> None:
        if self.device.type == "cpu":
            make_batch_invariant(self._modules())  # the adapters' new layers too

    def warm_up(self) -> None:
        """Render one full batch at the default size with the fewest steps, so that a model that
        cannot run (OOM, broken weights) fails at load rather than under traffic."""
        width, height = parse_size(self.spec.default_size)  # type: ignore[misc]
        init = encode(Image.new("RGB", (width, height), "gray")) if self.spec.edit else None
        request = RenderRequest(model=self.spec.name, prompt="warm-up", width=width, height=height,
                                steps=self.spec.min_steps, seed=0, n=1, init_image=init,
                                add_sampling_metadata=False)
        started = time.perf_counter()
        requests = [request] * self.max_batch_size
        if self.fill:  # its Fill weights too: a model that cannot inpaint fails at load as well
            mask = encode(Image.new("L", (width, height), 255))
            inpaint = dataclasses.replace(request, init_image=encode(Image.new("RGB", (width, height), "gray")),
                                          mask=mask)
            requests += [inpaint] * self.max_batch_size
        results = self.render(requests)
        failed = [r.error for r in results if r.error]
        if failed:
            raise RuntimeError(f"warm-up of {self.spec.name} failed: {failed[0].message}")
        log.info("warmed up %s (batch %d) in %.1fs", self.spec.name, self.max_batch_size,
                 time.perf_counter() - started)

    def warm_up_compiled(self) -> None:
        """Compile at every configured size, at batch sizes 1 and the largest (dynamic shapes:
        the sizes and batch sizes between run on that code), lossless and fast, so that no
        request pays a compile."""
        sizes = [parse_size(s) for s in (self.spec.compile_sizes or [self.spec.default_size])]
        started = time.perf_counter()
        for width, height in sizes:  # type: ignore[misc]
            for batch in sorted({1, min(2, self.max_batch_size), self.max_batch_size}):
                for quality in ("lossless", "fast") if self.step_cache.available else ("lossless",):
                    init = encode(Image.new("RGB", (width, height), "gray")) if self.spec.edit else None
                    request = RenderRequest(model=self.spec.name, prompt="warm-up", width=width, height=height,
                                            steps=max(self.spec.min_steps, 2), seed=0, n=batch, init_image=init,
                                            add_sampling_metadata=False, quality=quality)
                    failed = [r.error for r in self.render([request]) if r.error]
                    if failed:
                        raise RuntimeError(f"compiled warm-up of {self.spec.name} failed: {failed[0].message}")
        log.info("compiled %s and warmed it up at %s in %.1fs", self.spec.name,
                 ", ".join(self.spec.compile_sizes or [self.spec.default_size]), time.perf_counter() - started)

    def check_health(self) -> None:
        """Raise if the device cannot compute (a small computation on it, synchronised) or the
        base model is no longer the one loaded (`BaseWeights`: nothing a request brought may
        change it; a replica whose model changed must be replaced, not go on serving)."""
        probe = torch.arange(8, device=self.device, dtype=torch.float32)
        if float((probe * 2).sum().item()) != 56.0:
            raise RuntimeError(f"health check failed: wrong arithmetic on {self.device}")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if (changed := self.base.problem()) is not None:
            raise RuntimeError(f"health check failed: the base weights of {self.spec.name} changed: {changed}")

    # --- rendering ----------------------------------------------------------------------------

    def resolve(self, request: RenderRequest) -> ResolvedRequest | RenderError:
        """A raw request (the CLI's, warm-up's) checked against this renderer's model."""
        if request.model != self.spec.name:
            return RenderError(ErrorCode.MODEL_NOT_FOUND, f"this renderer serves {self.spec.name}, not {request.model}")
        return self.spec.resolve(request)

    def render(self, requests: Sequence[RenderRequest | ResolvedRequest],
               image_format: ImageFormat | None = None) -> list[RenderResult]:
        """Render every image of every request; results in request order, then image order.

        Raw `RenderRequest`s are resolved first; one that does not resolve (and any request
        `prepare` refuses) yields one result (index 0) carrying its error.
        """
        refused: list[RenderResult] = []
        resolved: list[ResolvedRequest] = []
        positions: list[int] = []  # resolved[i] is requests[positions[i]]
        for position, request in enumerate(requests):
            checked = self.resolve(request) if isinstance(request, RenderRequest) else request
            if isinstance(checked, RenderError):
                refused.append(RenderResult(request_id=request.request_id, request_index=position, index=0,
                                            seed=request.seed or 0, width=request.width or 0,
                                            height=request.height or 0, error=checked))
            else:
                resolved.append(checked)
                positions.append(position)
        results, batches = self.plan(resolved)
        for batch in batches:
            for denoised in self.denoise(batch):
                results.extend(self.encode(denoised, image_format))
        return sort_results(refused + [dataclasses.replace(r, request_index=positions[r.request_index])
                                       for r in results])

    def plan(self, requests: Sequence[ResolvedRequest | Prepared]) -> tuple[list[RenderResult], list[list[_Image]]]:
        """The results of requests refused outright, and the batches of images to render.
        `request_index` is the position in `requests`. Requests not yet prepared are prepared
        here (blocking: callers on an event loop prepare in a thread first)."""
        refused: list[RenderResult] = []
        images: list[_Image] = []
        for request_index, request in enumerate(requests):
            prepared = request if isinstance(request, Prepared) else self.prepare(request)
            if isinstance(prepared, RenderError):
                refused.append(self.refused(request, prepared, request_index))
                continue
            images.extend(_Image(request_index, i, seed, prepared)
                          for i, seed in enumerate(image_seeds(prepared.request.seed, prepared.request.n)))
        return refused, plan_batches(images, self._batch_key, self.max_batch_size)

    def prepare(self, request: ResolvedRequest) -> Prepared | RenderError:
        """The request with what it brings checked and made local, or why it is refused: another
        model's request, adapters this model cannot take or whose files fail their check, an
        input image that does not decode. Blocks on downloads and file reads."""
        if request.model != self.spec.name:  # a caller routed it to the wrong replica
            return RenderError(ErrorCode.MODEL_NOT_FOUND, f"this renderer serves {self.spec.name}, not {request.model}")
        files: dict[str, LocalLora] = {}
        if request.loras:
            files = self._lora_files(request.loras)
            if isinstance(files, RenderError):
                return files
        init_image = mask = None
        if request.init_image is not None:
            try:
                init_image = decode(request.init_image).convert("RGB")
            except Exception:  # noqa: BLE001 - any undecodable upload is the caller's error
                return RenderError.invalid("image", "cannot be decoded")
            size = (request.width, request.height)
            if request.mode in ("image", "inpaint") and init_image.size != size:
                init_image = init_image.resize(size, Image.Resampling.LANCZOS)  # what is kept is at the output size
        if request.mode == "inpaint":
            try:
                mask = masks.read(request.mask, (request.width, request.height))  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - checked at the door; a mask that still fails is the caller's
                return RenderError.invalid("mask", "cannot be decoded")
        return Prepared(request, init_image, files, mask)

    def _lora_files(self, loras: tuple[Lora, ...]) -> dict[str, LocalLora] | RenderError:
        """The adapters' local files, fetched (on the node's first use) and checked, or why they
        cannot be applied here."""
        if not self.adapters.supported:
            return RenderError.invalid("loras", f"are not taken by model {self.spec.name} (its engine cannot "
                                                f"load adapters)")
        try:
            files = {lora.location: self.lora_cache.get(lora) for lora in loras}
            problem = self.adapters.problem(loras, files)
        except LoraUnavailable as exc:
            return exc.error
        except Exception as exc:  # noqa: BLE001 - whatever a file does to a reader fails its own request
            log.warning("%s: adapters %s could not be checked: %s", self.spec.name,
                        [lora.path for lora in loras], first_line(exc))
            return RenderError.invalid("loras", f"could not be read as LoRA adapters ({type(exc).__name__})")
        return files if problem is None else problem

    def _batch_key(self, image: _Image) -> Hashable:
        # A step cache that decides from a batch's content (First Block Cache) renders its
        # requests one image a batch, so each is the same alone or among others.
        if image.request.quality == "fast" and not self.spec.fast.batch_invariant:
            return (_batch_key(image), image.request_index, image.index)
        return _batch_key(image)

    @staticmethod
    def refused(request: ResolvedRequest | Prepared, error: RenderError, request_index: int = 0) -> RenderResult:
        """The one result of a request refused outright."""
        request = request.request if isinstance(request, Prepared) else request
        return RenderResult(request_id=request.request_id, request_index=request_index, index=0,
                            seed=request.seed, width=request.width, height=request.height, error=error)

    def _pipeline_for(self, mode: str):
        """The pipeline that renders `mode`, made on first use from the loaded one: the same
        modules (weights, adapters, compiled regions, step-cache hooks), a different call."""
        if mode not in self._pipelines:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, DiffusionPipeline

            if not isinstance(self.pipeline, DiffusionPipeline):  # a SIMULATED GPU takes every kind as it is
                self._pipelines[mode] = self.pipeline
            else:
                auto = AutoPipelineForImage2Image if mode == "image" else AutoPipelineForInpainting
                pipeline = auto.from_pipe(self.pipeline)
                pipeline.set_progress_bar_config(disable=True)
                self._pipelines[mode] = pipeline
        return self._pipelines[mode]

    def _pipeline_kwargs(self, batch: list[_Image]) -> dict[str, Any]:
        first = batch[0].request
        kwargs: dict[str, Any] = {
            "prompt": [image.request.prompt for image in batch],
            "width": first.width,
            "height": first.height,
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance,
            # CPU generators: the starting noise of a seed is the same on every device.
            "generator": [generator(image.seed, "cpu") for image in batch],
            "output_type": "pil",
        }
        if first.negative_prompt is not None:
            kwargs["negative_prompt"] = [image.request.negative_prompt for image in batch]
        if self.spec.family == Family.FLUX_KONTEXT:
            kwargs["image"] = [image.init_image for image in batch]
            kwargs["max_area"] = first.width * first.height  # keep the requested size
        elif first.mode in ("image", "inpaint"):
            kwargs["image"] = [image.init_image for image in batch]
            kwargs["strength"] = first.strength
            if first.mode == "inpaint":
                kwargs["mask_image"] = [image.prepared.mask for image in batch]
            if "width" not in _parameters(self._pipeline_for(first.mode)):  # SDXL's image to image: the image's size
                del kwargs["width"], kwargs["height"]
        return kwargs

    def denoise(self, batch: list[_Image], on_step: Callable[[StepProgress], None] | None = None,
                canceled: Callable[[], bool] | None = None,
                on_preview: Callable[[_Image, int, Image.Image], None] | None = None) -> list[Denoised]:
        """The device's work for one batch (retried in halves when it runs out of memory).

        `on_step` hears the batch's progress a few times a second; when `canceled()` turns true
        the render stops at the next step and its images fail with code `Canceled`.
        `on_preview(image, preview index, picture)` gets the previews of the images whose
        requests asked for them (`partial_images`), small and unencoded, on the device's thread.
        """
        started = time.perf_counter()
        kwargs = self._pipeline_kwargs(batch)
        first = batch[0].prepared  # a batch holds one adapter set, checked when its requests were prepared
        try:
            applied = (self.adapters.activate(first.request.loras, first.lora_files)
                       if self.adapters.supported else ())
        except LoraUnavailable as exc:  # its file went since it was prepared (evicted, removed), or a slot refused it
            return [Denoised(batch, failed=self._failed(batch, exc.error))]
        except Exception as exc:  # noqa: BLE001 - a batch holds one set: only its requests fail
            log.exception("%s: adapters of a batch of %d could not be applied", self.spec.name, len(batch))
            return [Denoised(batch, failed=self._failed(batch, RenderError(
                ErrorCode.INTERNAL, f"the adapters could not be applied: {first_line(exc)}")))]
        self.step_cache.apply(batch[0].request.quality)  # one quality per batch
        if on_step is not None or canceled is not None or on_preview is not None:
            kwargs["callback_on_step_end"] = self._step_callback(batch, on_step, canceled, on_preview)
        try:
            with torch.inference_mode():
                pictures = self._pipeline_for(batch[0].request.mode)(**kwargs).images
            if len(pictures) != len(batch):  # never a silent loss: every image gets a result
                raise RuntimeError(f"the pipeline returned {len(pictures)} images for a batch of {len(batch)}")
            if batch[0].request.mode == "inpaint":  # outside the mask, the input's pixels exactly
                pictures = [masks.composite(picture, image.init_image, image.prepared.mask)
                            for picture, image in zip(pictures, batch)]
        except Canceled:
            return [Denoised(batch, failed=self._failed(batch, RenderError(
                ErrorCode.CANCELED, "the task was canceled while it rendered")))]
        except torch.OutOfMemoryError:
            if len(batch) > 1:  # retry in halves: a smaller batch may fit
                half = len(batch) // 2
                log.warning("%s: out of memory at batch %d, retrying in halves", self.spec.name, len(batch))
                return (self.denoise(batch[:half], on_step, canceled, on_preview)
                        + self.denoise(batch[half:], on_step, canceled, on_preview))
            return [Denoised(batch, failed=self._failed(batch, RenderError(
                ErrorCode.OUT_OF_MEMORY, "the device ran out of memory rendering this image")))]
        except Exception as exc:  # noqa: BLE001 - a failed batch fails its images, not the caller
            log.exception("%s: batch of %d failed", self.spec.name, len(batch))
            return [Denoised(batch, failed=self._failed(batch, RenderError(ErrorCode.INTERNAL, f"rendering failed: {first_line(exc)}")))]
        return [Denoised(batch, pictures, elapsed_s=time.perf_counter() - started, batch_size=len(batch),
                         loras=applied)]

    def _step_callback(self, batch: list[_Image], on_step, canceled, on_preview):
        """The pipeline's `callback_on_step_end` for one batch: progress and cancel, then the
        previews asked for (the latents are read, never changed)."""
        first = batch[0].request
        reporter = StepReporter(first.denoise_steps, on_step or (lambda _: None), canceled or (lambda: False))
        wanted = [image.request.partial_images for image in batch]
        taker = None
        if on_preview is not None and any(wanted):
            taker = PreviewTaker(self.previewer, wanted, first.width, first.height,
                                 lambda position, index, picture: on_preview(batch[position], index, picture))

        def on_step_end(pipeline, step_index: int, timestep, callback_kwargs: dict) -> dict:
            reporter(pipeline, step_index, timestep, callback_kwargs)
            if taker is not None and "latents" in callback_kwargs:  # a SIMULATED GPU has none: no previews
                steps = getattr(pipeline, "num_timesteps", None) or first.denoise_steps
                taker(pipeline, step_index + 1, steps, callback_kwargs["latents"])
            return callback_kwargs

        return on_step_end

    def encode(self, denoised: Denoised, image_format: ImageFormat | None = None) -> list[RenderResult]:
        """The CPU's work for one denoised batch: each picture encoded in its request's format
        (`image_format` overrides: a batch job's), with its sampling metadata (PNG text chunks)
        when asked."""
        if denoised.failed is not None:
            return denoised.failed
        return [
            RenderResult(
                request_id=image.request.request_id, request_index=image.request_index,
                index=image.index, seed=image.seed, width=picture.width, height=picture.height,
                image=encode(picture, image_format or image.request.output_format,
                             sampling_metadata(image.request, image.seed, denoised.loras)
                             if image.request.add_sampling_metadata else None, image.request.output_quality),
                inference_s=denoised.elapsed_s, batch_size=denoised.batch_size or len(denoised.batch),
                loras=denoised.loras,
            )
            for image, picture in zip(denoised.batch, denoised.pictures or [])
        ]

    @staticmethod
    def _failed(batch: list[_Image], error: RenderError) -> list[RenderResult]:
        return [
            RenderResult(request_id=image.request.request_id, request_index=image.request_index,
                         index=image.index, seed=image.seed, width=image.request.width,
                         height=image.request.height, error=error)
            for image in batch
        ]


def _parameters(pipeline) -> set[str]:
    """The arguments a pipeline's call takes (a SIMULATED GPU takes any)."""
    import inspect

    parameters = inspect.signature(pipeline.__call__).parameters
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return {"width", "height"}
    return set(parameters)


def sort_results(results: list[RenderResult]) -> list[RenderResult]:
    """Request order, then image order."""
    return sorted(results, key=lambda r: (r.request_index, r.index))
