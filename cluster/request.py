"""The records both doors speak to the render core: `RenderRequest` in, `RenderResult` out.

Plain dataclasses: cheap to pickle across Ray, no web framework attached. Wire formats (DashScope,
AceData, Parquet rows) are converted to and from these at the edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class RenderError:
    """Why a request or one image failed. `code` uses DashScope's vocabulary (the primary API);
    other façades map it to their own."""

    code: str
    message: str

    @classmethod
    def invalid(cls, message: str) -> "RenderError":
        return cls("InvalidParameter", message)


@dataclass(frozen=True)
class RenderRequest:
    """One prompt to render `n` times. Unset fields take the model's defaults."""

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


@dataclass(frozen=True)
class ResolvedRequest:
    """A validated request with every default filled in and its seed chosen."""

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

    @property
    def ok(self) -> bool:
        return self.error is None


def as_render_request(resolved: ResolvedRequest, **changes) -> RenderRequest:
    """The `RenderRequest` that resolves to `resolved` again (every field carried by name, so a
    field added to both cannot be dropped on the way)."""
    values = {f.name: getattr(resolved, f.name) for f in fields(RenderRequest)}
    return RenderRequest(**(values | changes))
