"""The records both doors speak to the render core: `RenderRequest` in, `RenderResult` out.

Plain dataclasses: cheap to pickle across Ray, no web framework attached. Wire formats (DashScope,
AceData, OpenAI, Parquet rows) are read into a `RenderRequest` at the edges, validated once into a
`ResolvedRequest`, and carried as that to the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from cluster.spec.errors import RenderError
from cluster.spec.loras import AppliedLora, Lora, LoraRef


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
    init_image: bytes | None = field(default=None, repr=False)  # edit models only (encoded image)
    request_id: str = ""  # the caller's id, echoed in results
    loras: tuple[LoraRef, ...] = ()  # adapters with their scales, in the order their deltas add
    quality: str | None = None  # "lossless" (default) or "fast" (cluster/engine/speed.py)


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
