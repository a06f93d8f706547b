"""`ShardWorker`: the Ray Data actor that renders whole shards and commits each one.

One call renders one shard (`jobs/driver/plan.py`): it reads the shard's rows from the input, expands
them into work items, renders them in device batches of `batch_size` (the model's batch, not
the shard's), streams each image into the shard's files as it is encoded, and commits the shard
(`jobs/output/shard_writer.py`). A shard that an earlier run committed with retryable failures is redone:
what it finished is carried over, only the rest is rendered.

The device and the CPU overlap: while one device batch denoises (under the actor's device
lock), the previous one is encoded and written by the call's encoder thread; two calls run at
once (`CONCURRENT_SHARDS`), so one shard's reading and committing overlap the other's rendering.
With `via_serve` the images go to a running raydiant Serve application's model deployments
instead (the job then shares the service's replicas and loads no model; `jobs/worker/served.py` says
how much it keeps in flight).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterator

import fsspec
import numpy as np
import pyarrow.parquet as pq
import torch

from cluster.engine.renderer import Denoised, Renderer
from cluster.lora.cache import cache_for
from cluster.spec.config import load_config
from cluster.spec.errors import ErrorCode, RenderError
from cluster.spec.request import RenderResult
from cluster.storage.results import Storage
from cluster.weights.sources import ModelLoadError
from jobs.driver.plan import ShardPlan
from jobs.driver.spec import RowDefaults
from jobs.output.layout import ShardStats
from jobs.output.shard_writer import ShardWriter, earlier_run
from jobs.worker.rows import WorkItem, expand_row
from jobs.worker.served import ServedModel

CONCURRENT_SHARDS = 2  # calls at once per actor: one rendering while the other reads or commits
_ENCODES_AHEAD = 2  # denoised batches waiting for the encoder before the device waits for it
_READ_BATCH_ROWS = 8192


class ShardWorker:
    def __init__(self, config: str | None, output: str, fmt: str, image_format: str, batch_size: int,
                 defaults: RowDefaults, job_seed: int, input_uri: str, pool_size: int = 1,
                 via_serve: str | None = None, counter=None):
        self.via_serve = via_serve  # the Serve application's name, when rendering through it
        self.pool_size = pool_size
        if not torch.cuda.is_available() and not via_serve:
            # Ray pins a 1-CPU actor to one intra-op thread; a CPU renderer should use its share
            # of the machine instead (bench/batch.py: job/bare ratio 0.71 before this, 0.91 after).
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // pool_size))
        self.config = load_config(config)
        self.specs = self.config.specs()
        self.storage = Storage(output)
        self.fmt, self.image_format, self.batch_size = fmt, image_format, batch_size
        self.defaults, self.job_seed = defaults, job_seed
        self.input_fs, _ = fsspec.core.url_to_fs(input_uri)
        self.counter = counter  # a `jobs.driver.counter.ImageCounter` handle: progress per image for the driver
        self.renderers: dict[str, Renderer | ServedModel | RenderError] = {}  # model -> renderer, or why not
        self._device = threading.Lock()  # held while a batch denoises
        self._loading = threading.Lock()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`map_batches` body: shard plans in (`plan`, and `redo`: carry over an earlier run's
        work), their stats out (`stats`), each as itself."""
        stats = [self.render_shard(plan, bool(redo)) for plan, redo in zip(batch["plan"], batch["redo"])]
        return {"stats": np.array(stats, dtype=object)}

    def render_shard(self, plan: ShardPlan, redo: bool = False) -> ShardStats:
        writer = ShardWriter(self.storage, self.fmt, self.image_format, plan)
        try:
            finished = set()
            if redo:
                for row, image in earlier_run(self.storage, self.fmt, self.image_format, plan.name):
                    writer.carry(row, image)
                    finished.add(row["key"])
            items = [item for position, row in self._rows(plan)
                     for item in expand_row(row, self.specs, self.defaults, self.job_seed, position)
                     if item.key not in finished]
            for item in (i for i in items if i.error is not None):
                writer.add(item, None, item.error, None)
            self._tell(0, sum(i.error is not None for i in items))
            todo = [i for i in items if i.error is None]
            for model in dict.fromkeys(i.model for i in todo):
                self._render_into(writer, [i for i in todo if i.model == model])
            return writer.commit()
        except BaseException:
            writer.abort()
            raise

    def _rows(self, plan: ShardPlan) -> Iterator[tuple[str, dict[str, Any]]]:
        """The shard's input rows with their positions (`file:row`), reading only the row groups
        that hold them."""
        name = plan.file.rsplit("/", 1)[-1]
        parquet = pq.ParquetFile(plan.file, filesystem=self.input_fs)
        groups, first_row, offset = [], None, 0
        for group in range(parquet.num_row_groups):
            rows = parquet.metadata.row_group(group).num_rows
            if offset < plan.stop and offset + rows > plan.start:
                groups.append(group)
                first_row = offset if first_row is None else first_row
            offset += rows
        position = first_row or 0
        for batch in parquet.iter_batches(batch_size=_READ_BATCH_ROWS, row_groups=groups):
            if position >= plan.stop:
                return
            lo, hi = max(plan.start - position, 0), min(plan.stop - position, batch.num_rows)
            if hi > lo:
                for i, row in enumerate(batch.slice(lo, hi - lo).to_pylist()):
                    yield f"{name}:{position + lo + i}", row
            position += batch.num_rows

    def _render_into(self, writer: ShardWriter, items: list[WorkItem]) -> None:
        renderer = self._renderer(items[0].model)
        if isinstance(renderer, RenderError):
            for item in items:
                writer.add(item, None, renderer, None)
            self._tell(0, len(items))
        elif isinstance(renderer, ServedModel):
            for result in renderer.render([i.request for i in items]):
                self._record(writer, items, [result])
        else:
            self._render_locally(renderer, writer, items)

    def _render_locally(self, renderer: Renderer, writer: ShardWriter, items: list[WorkItem]) -> None:
        refused, batches = renderer.plan([i.request for i in items])
        self._record(writer, items, refused)
        with ThreadPoolExecutor(1, thread_name_prefix="encode") as encoder:
            waiting: deque[Future] = deque()
            for batch in batches:
                with self._device:
                    denoised = renderer.denoise(batch)
                waiting.append(encoder.submit(self._encode_into, renderer, denoised, writer, items))
                while len(waiting) > _ENCODES_AHEAD:
                    waiting.popleft().result()
            for future in waiting:
                future.result()

    def _encode_into(self, renderer: Renderer, denoised: list[Denoised], writer: ShardWriter,
                     items: list[WorkItem]) -> None:
        self._record(writer, items, [r for part in denoised for r in renderer.encode(part, self.image_format)])

    def _record(self, writer: ShardWriter, items: list[WorkItem], results: list[RenderResult]) -> None:
        for result in results:
            render_s = result.inference_s / result.batch_size if result.batch_size else None
            writer.add(items[result.request_index], result.image, result.error, render_s, result.loras)
        failed = sum(r.error is not None for r in results)
        self._tell(len(results) - failed, failed)

    def _tell(self, rendered: int, failed: int) -> None:
        if self.counter is not None and rendered + failed:
            self.counter.add.remote(rendered, failed)  # fire and forget: progress only

    def _renderer(self, model: str) -> "Renderer | ServedModel | RenderError":
        with self._loading:  # two concurrent shards must not load the same model twice
            if model not in self.renderers:
                self.renderers[model] = self._load(model)
            return self.renderers[model]

    def _load(self, model: str) -> "Renderer | ServedModel | RenderError":
        if self.via_serve:  # the service's batch size and slots, as the job's config describes them
            return ServedModel.connect(self.via_serve, model, self.config.spec(model).max_batch_size,
                                       self.config.serve.deployment(model).max_ongoing_requests,
                                       actors=self.pool_size)
        try:
            return Renderer(self.config.spec(model).model_copy(update={"max_batch_size": self.batch_size}),
                            lora_cache=cache_for(self.config))
        except ModelLoadError as exc:  # retryable: a rerun after the source is fixed renders them
            return RenderError(ErrorCode.MODEL_LOAD_FAILED, str(exc))
