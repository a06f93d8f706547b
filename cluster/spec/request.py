"""The records both doors speak to the render core: `RenderRequest` in, `RenderResult` out.

Plain dataclasses: cheap to pickle across Ray, no web framework attached. Wire formats (DashScope,
AceData, OpenAI, Parquet rows) are read into a `RenderRequest` at the edges, validated once into a
`ResolvedRequest`, and carried as that to the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

from cluster.spec.errors import RenderError
from cluster.spec.loras import AppliedLora, Lora, LoraRef


# text: text to image; image: image to image (an input image, `strength`); inpaint: an input
# image repainted where its mask says, the rest kept exactly; edit: an edit model's instruction.
Mode = Literal["text", "image", "inpaint", "edit"]
ImageFormat = Literal["png", "jpeg", "webp"]
IMAGE_FORMATS: tuple[ImageFormat, ...] = ("png", "jpeg", "webp")


@dataclass(frozen=True)
class RenderRequest:
    """One prompt to render `n` times, as a caller wrote it: unset fields take the model's
    defaults, and nothing is checked yet (`ModelSpec.resolve` makes a `ResolvedRequest` of it)."""

    model: str
    prompt: str
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    n: int = 1
    add_sampling_metadata: bool = True
    # An input image (encoded): an edit model edits it; any other model renders image to image
    # from it, or inpaints it where `mask` says.
    init_image: bytes | None = field(default=None, repr=False)
    mask: bytes | None = field(default=None, repr=False)  # a canonical mask (cluster/images/masks.py)
    strength: float | None = None  # how far from the input image: 0 < s <= 1 (image to image, inpaint)
    request_id: str = ""  # the caller's id, echoed in results
    loras: tuple[LoraRef, ...] = ()  # adapters with their scales, in the order their deltas add
    quality: str | None = None  # "lossless" (default) or "fast" (cluster/engine/speed.py)
    output_format: str | None = None  # png (default), jpeg or webp
    output_quality: int | None = None  # 0..100, JPEG and WebP (default 95)
    partial_images: int | None = None  # previews while it renders, 0..3 (cluster/engine/previews.py)


@dataclass(frozen=True)
class ResolvedRequest:
    """A validated request with every default filled in and its seed chosen: what the engine
    renders. Made only by `ModelSpec.resolve`; every later stage takes it as it is."""

    model: str
    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    n: int
    add_sampling_metadata: bool
    init_image: bytes | None = field(default=None, repr=False)
    request_id: str = ""
    loras: tuple[Lora, ...] = ()
    quality: str = "lossless"  # what renders it: "fast" only where the model has a step cache
    mode: Mode = "text"  # what the model does with it (decided by `ModelSpec.resolve`)
    mask: bytes | None = field(default=None, repr=False)  # inpaint only: canonical (255 = repaint)
    strength: float | None = None  # image to image and inpaint only
    output_format: ImageFormat = "png"
    output_quality: int = 95  # JPEG and WebP
    partial_images: int = 0  # previews at evenly spaced steps (they never change the final pixels)

    @property
    def denoise_steps(self) -> int:
        """The steps the pipeline runs: from an input image, the last `strength` of the schedule
        (diffusers' `get_timesteps`: at least one)."""
        if self.strength is None:
            return self.steps
        return self.steps - int(max(self.steps - self.steps * self.strength, 0))


@dataclass(frozen=True)
class RenderResult:
    """One image of one request: its PNG bytes, or the error that stopped it."""

    request_id: str
    request_index: int  # position of the request in the `render()` call
    index: int  # image i of that request (seeded seed + i)
    seed: int
    width: int
    height: int
    image: bytes | None = field(default=None, repr=False)  # PNG
    error: RenderError | None = None
    inference_s: float = 0.0  # wall time of the batch this image was rendered in
    batch_size: int = 0  # images in that batch
    loras: tuple[AppliedLora, ...] = ()  # the adapters it was rendered with, by content hash

    @property
    def ok(self) -> bool:
        return self.error is None


class WorkClass(IntEnum):
    """Which waiting requests a replica starts first: lower goes first. Interactive requests (the
    API doors, the page) wait at most for the device batch in progress; batch work (a batch job
    rendering through the service) fills every gap, so a replica never idles while any waits."""

    INTERACTIVE = 0
    BATCH = 1
