"""`fake:<family>` weight source: a FAKE pipeline that draws solid colours, no model at all.

Named as such everywhere it appears. It exists to test and measure the plumbing around the
engine (batch-job streaming memory, throughput of queues) at rates no real model reaches on a
CPU. It honours the pipeline call the `Renderer` makes: one image per prompt, coloured by the
first number its generator yields, so seeds still decide pixels.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from PIL import Image


class FakePipeline:
    """Stands in for a diffusers pipeline: `__call__(prompt=[...], width, height, generator=[...])`."""

    components: dict[str, Any] = {}

    def __init__(self, family: str):
        self.family = family

    def to(self, *_args, **_kwargs) -> "FakePipeline":
        return self

    def set_progress_bar_config(self, **_kwargs) -> None:
        return None

    def __call__(self, prompt: list[str], width: int, height: int, generator: list[torch.Generator],
                 num_inference_steps: int = 1, callback_on_step_end=None, **_ignored) -> SimpleNamespace:
        for step in range(num_inference_steps if callback_on_step_end is not None else 0):
            callback_on_step_end(self, step, None, {})
        images = []
        for gen in generator:
            r, g, b = (int(v) for v in torch.randint(0, 256, (3,), generator=gen))
            images.append(Image.new("RGB", (width, height), (r, g, b)))
        return SimpleNamespace(images=images)
