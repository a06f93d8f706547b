"""`PipelinedRenderer`: continuous batching in a model replica, with encoding off the device's path.

- Batches form without waiting: a request that finds the device idle starts at once; requests
  that arrive while a batch is on the device form the next batch (up to `max_requests`), which
  starts the moment the device is free. (`@serve.batch` cannot do both: with one batch at a
  time the next batch waits for the previous one's encoding; with two, the second forms at
  once from whatever has arrived, however little.)
- One thread owns the device (`Renderer.denoise`); encoding (`Renderer.encode`) runs on other
  threads while the next batch denoises. At most `encode_backlog` denoised batches wait for
  the encoders, so memory stays bounded: the device pauses rather than piling up pictures.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from cluster.engine import Denoised, Renderer, sort_results
from cluster.request import RenderRequest, RenderResult

log = logging.getLogger(__name__)
ENCODE_BACKLOG = 2  # denoised batches waiting for, or in, the encoders


class PipelinedRenderer:
    def __init__(self, renderer: Renderer, max_requests: int, encoders: int = 2,
                 encode_backlog: int = ENCODE_BACKLOG):
        self.renderer = renderer
        self.max_requests = max_requests
        self._device = ThreadPoolExecutor(1, thread_name_prefix="device")
        self._encoders = ThreadPoolExecutor(encoders, thread_name_prefix="encode")
        self._backlog = asyncio.Semaphore(encode_backlog)
        self._waiting: list[tuple[RenderRequest, asyncio.Future]] = []
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task | None = None

    async def render(self, request: RenderRequest) -> list[RenderResult]:
        """The request's results in image order, once its batch is denoised and encoded."""
        answer = asyncio.get_running_loop().create_future()
        self._waiting.append((request, answer))
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._feed_device())
        return await answer

    async def _feed_device(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            await self._backlog.acquire()  # never more than the backlog of pictures held
            taken, self._waiting = self._waiting[: self.max_requests], self._waiting[self.max_requests:]
            if not self._waiting:
                self._arrived.clear()
            try:
                refused, batches = self.renderer.plan([request for request, _ in taken])
                denoised: list[Denoised] = []
                for batch in batches:
                    denoised += await loop.run_in_executor(self._device, self.renderer.denoise, batch)
            except Exception as exc:  # noqa: BLE001 - fail these requests, keep serving
                log.exception("a batch of %d requests failed", len(taken))
                self._backlog.release()
                for _, answer in taken:
                    if not answer.done():
                        answer.set_exception(exc)
                continue
            asyncio.create_task(self._encode_and_answer(taken, refused, denoised))

    async def _encode_and_answer(self, taken, refused: list[RenderResult], denoised: list[Denoised]) -> None:
        loop = asyncio.get_running_loop()
        try:
            encoded = await asyncio.gather(*(loop.run_in_executor(self._encoders, self.renderer.encode, d)
                                             for d in denoised))
            grouped: list[list[RenderResult]] = [[] for _ in taken]
            for result in sort_results(refused + [r for results in encoded for r in results]):
                grouped[result.request_index].append(result)
            for (_, answer), results in zip(taken, grouped):
                if not answer.done():
                    answer.set_result(results)
        except Exception as exc:  # noqa: BLE001
            log.exception("encoding a batch failed")
            for _, answer in taken:
                if not answer.done():
                    answer.set_exception(exc)
        finally:
            self._backlog.release()
