"""What a model replica tells the dispatcher about one request while it renders (a Serve stream).

`Started` when the request's first batch goes on the device (until then the task is PENDING,
however long it waits inside the replica), `Progress` a few times a second while it denoises,
`Preview`s when the request asked for them (`partial_images`), `Finished` with its results. Plain dataclasses: cheap to pickle across Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

from cluster.spec.request import RenderResult


@dataclass(frozen=True)
class Started:
    batch_size: int  # images in the batch it started in, its own and others'


@dataclass(frozen=True)
class Progress:
    step: int  # denoising steps done, over all of the request's batches
    steps: int
    eta_s: float  # remaining steps at the measured step time


@dataclass(frozen=True)
class Preview:
    """A picture of image `index` of the request before it is done (its `partial_image_index`th
    preview), encoded in the request's output format."""

    index: int
    partial_image_index: int
    image: bytes


@dataclass(frozen=True)
class Finished:
    results: list[RenderResult]


RenderEvent = Started | Progress | Preview | Finished
