"""`UnitWorker`: the Ray Data actor that renders work units (`jobs/worker/units.py`), one per call.

A unit is a few device batches of one shard, with its input rows (the read stage read them).
The call expands the rows into work items, renders them in device batches of `batch_size`,
encodes each image and writes the unit's outcomes as its part (`jobs/output/unit_part.py`); the
driver assembles the shard once its last unit is back. A unit whose part an earlier attempt
wrote whole renders nothing; a unit of a shard redone after retryable failures renders only
what the earlier run did not finish.

Where the stages run, and why:

- denoising (and, inside the pipeline call, text encoding and VAE decoding) holds the actor's
  device under `_device`: on one GPU they would run one after the other anyway, and splitting
  them into Ray Data stages would move latents and embeddings between processes for no gain;
- encoding (PNG/WebP/JPEG) runs on the call's encoder thread while the next batch denoises, up
  to `_ENCODES_AHEAD` batches behind, so the device never waits for the CPU;
- two calls run at once (`CONCURRENT_UNITS`): while one holds the device, the other expands its
  rows, finishes encoding and writes its part, so the device never waits for storage either;
- reading the input is the read stage's (Ray Data tasks with their own CPUs), and assembling a
  shard is a Ray task of its own: neither is on the device's path.

With `via_serve` the images go to a running raydiant Serve application's model deployments
instead (the job then shares the service's replicas and loads no model; `jobs/worker/served.py`
says how much it keeps in flight).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from cluster.spec.config import load_config
from cluster.spec.errors import ErrorCode, RenderError
from cluster.spec.request import RenderResult
from cluster.storage.results import Storage
from jobs.driver.spec import RowDefaults
from jobs.output.shard_writer import finished_keys
from jobs.output.unit_part import UnitPart, UnitStats, earlier_part
from jobs.worker.rows import WorkItem, expand_row
from jobs.worker.served import ServedModel
from jobs.worker.units import UnitPlan

if TYPE_CHECKING:  # torch and diffusers are the actor's (3.5 s to import): the driver names this class only
    from cluster.engine.renderer import Denoised, Renderer

CONCURRENT_UNITS = 2  # calls at once per actor: one on the device while the other prepares or writes
_ENCODES_AHEAD = 2  # denoised batches waiting for the encoder before the device waits for it


class UnitWorker:
    def __init__(self, config: str | None, output: str, image_format: str, batch_size: int,
                 defaults: RowDefaults, job_seed: int, pool_size: int = 1, via_serve: str | None = None):
        import torch

        self.via_serve = via_serve  # the Serve application's name, when rendering through it
        self.pool_size = pool_size
        if not torch.cuda.is_available() and not via_serve:
            # Ray pins a 1-CPU actor to one intra-op thread; a CPU renderer should use its share
            # of the machine instead (bench/batch.py: job/bare ratio 0.71 before this, 0.91 after).
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // pool_size))
        self.config = load_config(config)
        self.specs = self.config.specs()
        self.storage = Storage(output)
        self.image_format, self.batch_size = image_format, batch_size
        self.defaults, self.job_seed = defaults, job_seed
        self.renderers: dict[str, Renderer | ServedModel | RenderError] = {}  # model -> renderer, or why not
        self._device = threading.Lock()  # held while a batch denoises
        self._loading = threading.Lock()
        if not via_serve:
            # The job's model, before the pool counts this actor as up: every actor of the pool
            # then starts on its first unit at once. A model only some rows name loads on the
            # first unit that needs it; a model that fails to load fails its images, not the actor.
            self._renderer(defaults.model)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`map_batches` body: units in (`unit`), their stats out (`stats`), each as itself."""
        return {"stats": np.array([self.render_unit(unit) for unit in batch["unit"]], dtype=object)}

    def render_unit(self, unit: UnitPlan) -> UnitStats:
        shard = unit.shard.name
        if (earlier := earlier_part(self.storage, shard, unit.name)) is not None:
            return earlier  # an attempt before this one (a retry, a killed run) finished it
        part = UnitPart(self.storage, shard, unit.name, unit.units)
        finished = finished_keys(self.storage, shard) if unit.redo else set()
        items = [item for position, row in unit.rows
                 for item in expand_row(row, self.specs, self.defaults, self.job_seed, position)
                 if item.key not in finished]
        for item in (i for i in items if i.error is not None):
            part.add(item, None, item.error, None)
        todo = [i for i in items if i.error is None]
        for model in dict.fromkeys(i.model for i in todo):
            self._render_into(part, [i for i in todo if i.model == model])
        return part.write()

    def _render_into(self, part: UnitPart, items: list[WorkItem]) -> None:
        renderer = self._renderer(items[0].model)
        if isinstance(renderer, RenderError):
            for item in items:
                part.add(item, None, renderer, None)
        elif isinstance(renderer, ServedModel):
            for result in renderer.render([i.request for i in items]):
                self._record(part, items, [result])
        else:
            self._render_locally(renderer, part, items)

    def _render_locally(self, renderer: Renderer, part: UnitPart, items: list[WorkItem]) -> None:
        refused, batches = renderer.plan([i.request for i in items])
        self._record(part, items, refused)
        with ThreadPoolExecutor(1, thread_name_prefix="encode") as encoder:
            waiting: deque[Future] = deque()
            for batch in batches:
                with self._device:
                    denoised = renderer.denoise(batch)
                waiting.append(encoder.submit(self._encode_into, renderer, denoised, part, items))
                while len(waiting) > _ENCODES_AHEAD:
                    waiting.popleft().result()
            for future in waiting:
                future.result()

    def _encode_into(self, renderer: Renderer, denoised: list[Denoised], part: UnitPart,
                     items: list[WorkItem]) -> None:
        self._record(part, items, [r for batch in denoised for r in renderer.encode(batch, self.image_format)])

    @staticmethod
    def _record(part: UnitPart, items: list[WorkItem], results: list[RenderResult]) -> None:
        for result in results:
            render_s = result.inference_s / result.batch_size if result.batch_size else None
            part.add(items[result.request_index], result.image, result.error, render_s, result.loras)

    def _renderer(self, model: str) -> "Renderer | ServedModel | RenderError":
        with self._loading:  # two concurrent units must not load the same model twice
            if model not in self.renderers:
                self.renderers[model] = self._load(model)
            return self.renderers[model]

    def _load(self, model: str) -> "Renderer | ServedModel | RenderError":
        from cluster.engine.renderer import Renderer
        from cluster.lora.cache import cache_for
        from cluster.weights.sources import ModelLoadError

        if self.via_serve:  # the service's batch size and slots, as the job's config describes them
            return ServedModel.connect(self.via_serve, model, self.config.spec(model).max_batch_size,
                                       self.config.serve.deployment(model).max_ongoing_requests,
                                       actors=self.pool_size)
        # No warm-up render: a job's first batch is one, and a failure there is that batch's.
        spec = self.config.spec(model).model_copy(update={"max_batch_size": self.batch_size, "warmup": False})
        try:
            return Renderer(spec, lora_cache=cache_for(self.config))
        except ModelLoadError as exc:  # retryable: a rerun after the source is fixed renders them
            return RenderError(ErrorCode.MODEL_LOAD_FAILED, str(exc))
