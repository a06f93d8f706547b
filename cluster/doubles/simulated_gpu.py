"""`sim:<family>` and `fake:<family>` weight sources: a SIMULATED GPU, and the FAKE engine (the
same pipeline taking no time). Each is named as what it is everywhere it appears.

No GPU is lent to this project, yet what decides a GPU cluster's cost is how much of each GPU's
time goes to denoising. This pipeline takes time like a GPU: a batch of b images costs
`base_s + per_image_s * b`, spent *waiting* (the CPU is free meanwhile, as it is while a real GPU
works), and it answers with solid colours, one per image, coloured by the first numbers its
generator yields (seeds still decide pixels). No model runs at all. With zero time (`fake:`) it
measures the plumbing around the engine (batch-job streaming, queue throughput) at rates no real
model reaches on a CPU.

It records its busy time: every batch appends its (start, end) to a file of its process under
`$RAYDIANT_SIM_DIR` when set, so a benchmark can report utilization = busy time / wall time per
simulated GPU, and the batch sizes it was given.

A test can hold every simulated GPU of a directory still: while `$RAYDIANT_SIM_DIR/hold` exists, no
new batch starts (the one running finishes). A queue then fills at a rate no loaded machine's
round trips can outrun, so a test of a full queue does not race the device that drains it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

from PIL import Image

from cluster.spec.settings import SimulatedTiming

if TYPE_CHECKING:  # torch is loaded by the pipeline's first call, not by the config that names it
    import torch

HOLD_FILE = "hold"


class SimulatedGpuPipeline:
    """Stands in for a diffusers pipeline on a GPU: `__call__(prompt=[...], width, height,
    generator=[...])`, returning solid colours after the batch's simulated time."""

    components: dict = {}

    def __init__(self, family: str, timing: SimulatedTiming):
        self.family = family
        self.timing = timing
        self.busy_s = 0.0
        self.batches: list[int] = []  # batch sizes, in order
        self.busy_now = False
        self._lock = threading.Lock()  # one GPU: one batch at a time
        directory = os.environ.get("RAYDIANT_SIM_DIR")
        self._log = Path(directory) / f"sim-{os.getpid()}-{id(self):x}.jsonl" if directory else None
        self._hold = Path(directory) / HOLD_FILE if directory else None

    def to(self, *_args, **_kwargs) -> "SimulatedGpuPipeline":
        return self

    def set_progress_bar_config(self, **_kwargs) -> None:
        return None

    def __call__(self, prompt: list[str], width: int, height: int, generator: list[torch.Generator],
                 num_inference_steps: int = 1, callback_on_step_end=None, **_ignored) -> SimpleNamespace:
        with self._lock:
            while self._hold is not None and self._hold.exists():
                time.sleep(0.05)
            started = time.time()
            self.busy_now = True
            steps = max(1, num_inference_steps)
            step_s = self.timing.batch_s(len(prompt)) / steps
            done = 0
            try:
                for step in range(steps):
                    time.sleep(step_s)  # the GPU works; the CPU is free
                    done += 1
                    if callback_on_step_end is not None:
                        callback_on_step_end(self, step, None, {})  # may stop the render (cancel)
            finally:  # a batch stopped early (canceled) is recorded too, with the steps it ran
                self.busy_now = False
                self._record(started, time.time(), prompt, done, steps)
        import torch  # the generators' owner has loaded it already

        images = []
        for gen in generator:
            r, g, b = (int(v) for v in torch.randint(0, 256, (3,), generator=gen))
            images.append(Image.new("RGB", (width, height), (r, g, b)))
        return SimpleNamespace(images=images)

    def _record(self, started: float, ended: float, prompts: list[str], done: int, steps: int) -> None:
        self.busy_s += ended - started
        self.batches.append(len(prompts))
        if self._log is not None:
            entry = {"start": started, "end": ended, "batch": len(prompts), "steps_done": done, "steps": steps,
                     "prompts": [p[:64] for p in prompts]}
            with open(self._log, "a") as log:
                log.write(json.dumps(entry) + "\n")


@contextmanager
def held(directory: str | Path) -> Iterator[None]:
    """Within the block, the simulated GPUs recording under `directory` start no batch."""
    hold = Path(directory) / HOLD_FILE
    hold.touch()
    try:
        yield
    finally:
        hold.unlink()


def read_busy_intervals(directory: str | Path) -> dict[str, list[dict]]:
    """Every simulated GPU's recorded batches under `directory`: file name -> [{start, end, batch,
    steps_done, steps, prompts}]."""
    return {path.name: [json.loads(line) for line in path.read_text().splitlines() if line]
            for path in sorted(Path(directory).glob("sim-*.jsonl"))}


def utilization(intervals: list[dict], window_start: float, window_end: float) -> float:
    """Busy time / wall time of one simulated GPU within [window_start, window_end]."""
    busy = sum(max(0.0, min(i["end"], window_end) - max(i["start"], window_start)) for i in intervals)
    return busy / (window_end - window_start)
