"""`RenderWorker`: the Ray Data actor that renders work items and commits them to the output.

It renders with its own `Renderer` (one actor per GPU on clusters, per configured slot on CPU),
or, with `via_serve`, through the model deployments of a running raydiant Serve application in
the same Ray cluster (the job then shares the service's replicas instead of loading models).

The actor runs two batches at once (`max_concurrency=2`): the device is held by one of them
(`denoise`, under a lock) while the other encodes its images and commits them to storage, so
the GPU does not wait for the CPU.
"""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any

import pandas as pd
import torch

from cluster.config import load_config
from cluster.engine import Renderer, sort_results
from cluster.errors import ErrorCode, RenderError, first_line
from cluster.models import deployment_name
from cluster.request import ResolvedRequest, WorkClass
from cluster.weights import ModelLoadError
from jobs.output import OutputSink

RESULT_COLUMNS = ["key", "id", "index", "model", "error_code", "error", "render_s", "row_images"]
CONCURRENT_BATCHES = 2  # one on the device, one encoding and committing


class RenderWorker:
    def __init__(self, config: str | None, output: str, fmt: str, batch_size: int, pool_size: int = 1,
                 via_serve: str | None = None, image_format: str = "png"):
        self.via_serve = via_serve  # the Serve application's name, when rendering through it
        if not torch.cuda.is_available() and not via_serve:
            # Ray pins a 1-CPU actor to one intra-op thread; a CPU renderer should use its share
            # of the machine instead (bench/batch.py: job/bare ratio 0.71 before this, 0.91 after).
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // pool_size))
        self.config = load_config(config)
        self.sink = OutputSink(output, fmt, image_format)
        self.batch_size = batch_size
        self.image_format = image_format
        self.renderers: dict[str, Renderer | _ServedModel | RenderError] = {}  # model -> renderer, or why not
        self._device = threading.Lock()  # held while a batch denoises
        self._loading = threading.Lock()

    def _renderer(self, model: str) -> "Renderer | _ServedModel | RenderError":
        with self._loading:  # two concurrent batches must not load the same model twice
            return self._load(model)

    def _load(self, model: str) -> "Renderer | _ServedModel | RenderError":
        if model not in self.renderers and self.via_serve:
            self.renderers[model] = _ServedModel.connect(self.via_serve, model)
        if model not in self.renderers:
            try:
                spec = self.config.spec(model).model_copy(update={"max_batch_size": self.batch_size})
                self.renderers[model] = Renderer(spec)
            except ModelLoadError as exc:  # retryable: a rerun after the source is fixed renders them
                self.renderers[model] = RenderError(ErrorCode.MODEL_LOAD_FAILED, str(exc))
        return self.renderers[model]

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        # pandas holds a missing value as NaN (in string columns too): None is what it means.
        rows: list[dict[str, Any]] = [{k: None if _is_nan(v) else v for k, v in row.items()}
                                      for row in batch.to_dict("records")]
        images: dict[str, bytes] = {}
        for model in dict.fromkeys(r["model"] for r in rows if r["error_code"] is None):
            group = [r for r in rows if r["model"] == model and r["error_code"] is None]
            renderer = self._renderer(model)
            if isinstance(renderer, RenderError):
                for row in group:
                    row["error_code"], row["error"] = renderer.code.value, renderer.text()
                continue
            started = time.perf_counter()
            results = self._render(renderer, [self._request(r) for r in group])
            elapsed = (time.perf_counter() - started) / max(len(group), 1)
            for row, result in zip(group, results):
                row["render_s"] = elapsed
                if result.ok:
                    images[row["key"]] = result.image
                else:
                    row["error_code"], row["error"] = result.error.code.value, result.error.text()
        self.sink.commit(rows, images)
        return pd.DataFrame([{c: r.get(c) for c in RESULT_COLUMNS} for r in rows], columns=RESULT_COLUMNS)

    def _render(self, renderer: "Renderer | _ServedModel", requests: list[ResolvedRequest]) -> list:
        if isinstance(renderer, _ServedModel):
            return renderer.render(requests)
        refused, batches = renderer.plan(requests)
        results = list(refused)
        for batch in batches:
            with self._device:
                denoised = renderer.denoise(batch)
            for part in denoised:  # encoded while the other batch holds the device
                results.extend(renderer.encode(part, self.image_format))
        return sort_results(results)

    @staticmethod
    def _request(row: dict[str, Any]) -> ResolvedRequest:
        """The work item as the request `expand_row` resolved (one image: its own seed)."""
        return ResolvedRequest(model=row["model"], prompt=row["prompt"], negative_prompt=row["negative_prompt"],
                               width=int(row["width"]), height=int(row["height"]), steps=int(row["steps"]),
                               guidance=float(row["guidance"]), seed=int(row["seed"]), n=1,
                               add_sampling_metadata=True, request_id=row["key"])


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


class _ServedModel:
    """A model deployment of a running Serve application, with the `render` of a Renderer."""

    def __init__(self, handle):
        self.handle = handle

    @classmethod
    def connect(cls, app_name: str, model: str) -> "_ServedModel | RenderError":
        from ray import serve

        try:
            return cls(serve.get_deployment_handle(deployment_name(model), app_name=app_name))
        except Exception as exc:  # noqa: BLE001 - Serve raises several types for "not there"
            # Retryable: a rerun once the app is up renders these images.
            return RenderError(ErrorCode.MODEL_UNAVAILABLE, f"model {model} is not served by Serve application "
                                                            f"'{app_name}': {first_line(exc)}")

    def render(self, requests: list[ResolvedRequest]) -> list:
        # Send everything first, so the replicas can batch the requests together; as batch work,
        # so that the service's interactive requests go first on the same replicas.
        responses = [self.handle.render.remote(request, WorkClass.BATCH) for request in requests]
        return [response.result()[0] for response in responses]
