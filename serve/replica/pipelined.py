"""`PipelinedRenderer`: continuous batching in a model replica, with encoding off the device's path.

- Batches form without waiting: a request that finds the device idle starts at once; requests
  that arrive while a batch is on the device form the next batch (up to `max_requests`), which
  starts the moment the device is free. (`@serve.batch` cannot do both: with one batch at a
  time the next batch waits for the previous one's encoding; with two, the second forms at
  once from whatever has arrived, however little.)
- One thread owns the device (`Renderer.denoise`); encoding (`Renderer.encode`) runs on other
  threads while the next batch denoises. At most `encode_backlog` denoised batches wait for
  the encoders, so memory stays bounded: the device pauses rather than piling up pictures.
- Each request is a stream of events (`serve/replica/render_events.py`): started, progress,
  previews (when asked: taken on the device's thread, scaled and encoded on the encoders),
  finished; a progress report that later events overtook before the stream was read is not sent.
- Two classes of work (`WorkClass`): the next batch is formed from interactive requests first,
  then batch work in arrival order, so an interactive request waits at most for the batch on the
  device, and batch work fills every gap. A batch that holds interactive requests takes batch
  work only with `mixed_batches` (pixels do not depend on batch company, but a larger batch takes
  longer: on a GPU four FLUX images take about three times one, so by default an interactive
  request is not slowed by the job images it would share a batch with).
- A request whose stream is closed (its caller canceled it) leaves the queue if it has not
  started; in a batch shared with others, the batch runs on and only its images are dropped
  (the others' pixels do not depend on batch company); alone, the render stops at the next step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import AsyncIterator

from PIL import Image

from cluster.engine.progress import StepProgress
from cluster.engine.renderer import Denoised, Prepared, Renderer, sort_results
from cluster.images.encoding import encode
from cluster.spec.request import RenderResult, WorkClass
from serve.replica.render_events import Finished, Preview, Progress, RenderEvent, Started

log = logging.getLogger(__name__)
ENCODE_BACKLOG = 2  # denoised batches waiting for, or in, the encoders
PREVIEW_QUALITY = 70  # JPEG and WebP previews: a glimpse, not the result


@dataclass(eq=False)
class _Job:
    """One request in the replica, and the events its caller has not read yet."""

    prepared: Prepared
    work: WorkClass = WorkClass.INTERACTIVE
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    canceled: bool = False
    batches: int = 0  # of the current group's batches, how many hold its images
    batches_done: int = 0
    last_preview: asyncio.Future | None = None  # previews go out in the order they were taken


class PipelinedRenderer:
    def __init__(self, renderer: Renderer, max_requests: int, encoders: int = 2,
                 encode_backlog: int = ENCODE_BACKLOG, mixed_batches: bool = False):
        self.renderer = renderer
        self.max_requests = max_requests
        self.mixed_batches = mixed_batches
        self._device = ThreadPoolExecutor(1, thread_name_prefix="device")
        self._encoders = ThreadPoolExecutor(encoders, thread_name_prefix="encode")
        self._backlog = asyncio.Semaphore(encode_backlog)
        self._waiting: list[_Job] = []
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._sending: set[asyncio.Future] = set()  # previews being encoded

    async def render(self, request: Prepared, work: WorkClass = WorkClass.INTERACTIVE) -> list[RenderResult]:
        """The request's results in image order, once its batch is denoised and encoded."""
        async for event in self.stream(request, work):
            if isinstance(event, Finished):
                return event.results
        raise RuntimeError("the render stream ended without results")

    async def stream(self, request: Prepared,
                     work: WorkClass = WorkClass.INTERACTIVE) -> AsyncIterator[RenderEvent]:
        """The request's events, ending with `Finished`. Closing the stream early cancels it.
        The request was prepared (`Renderer.prepare`), so forming batches does no I/O here."""
        job = _Job(request, work)
        # Stable: within a class, arrival order. Interactive ones go ahead of all batch work.
        position = next((i for i, waiting in enumerate(self._waiting) if waiting.work > work), len(self._waiting))
        self._waiting.insert(position, job)
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._feed_device())
        try:
            while True:
                event = _latest(job.events, await job.events.get())
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            job.canceled = True  # no effect once finished
            if job in self._waiting:
                self._waiting.remove(job)

    async def _feed_device(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            await self._backlog.acquire()  # never more than the backlog of pictures held
            taken = self._next_batch()
            if not self._waiting:
                self._arrived.clear()
            if not taken:  # every waiting request was canceled
                self._backlog.release()
                continue
            try:
                refused, batches = self.renderer.plan([job.prepared for job in taken])
                for batch in batches:
                    for index in {image.request_index for image in batch}:
                        taken[index].batches += 1
                denoised: list[Denoised] = []
                for batch in batches:
                    denoised += await self._denoise(loop, taken, batch)
            except Exception as exc:  # noqa: BLE001 - fail these requests, keep serving
                log.exception("a batch of %d requests failed", len(taken))
                self._backlog.release()
                for job in taken:
                    job.events.put_nowait(exc)
                continue
            asyncio.create_task(self._encode_and_answer(taken, refused, denoised))

    def _next_batch(self) -> list[_Job]:
        """The waiting requests the next device batch takes (interactive ones come first in
        `_waiting`); batch work joins interactive requests only in mixed batches."""
        count = min(self.max_requests, len(self._waiting))
        if not self.mixed_batches and self._waiting and self._waiting[0].work == WorkClass.INTERACTIVE:
            count = sum(1 for job in self._waiting[:count] if job.work == WorkClass.INTERACTIVE)
        taken, self._waiting = self._waiting[:count], self._waiting[count:]
        return taken

    async def _denoise(self, loop: asyncio.AbstractEventLoop, taken: list[_Job], batch) -> list[Denoised]:
        jobs = [taken[i] for i in sorted({image.request_index for image in batch})]
        if all(job.canceled for job in jobs):
            return []
        for job in jobs:
            if job.batches_done == 0:
                job.events.put_nowait(Started(batch_size=len(batch)))

        def on_step(progress: StepProgress) -> None:  # on the device's thread
            loop.call_soon_threadsafe(self._report, jobs, progress)

        def on_preview(image, index: int, picture) -> None:  # on the device's thread: encoded elsewhere
            loop.call_soon_threadsafe(self._preview, taken[image.request_index], image, index, picture)

        denoised = await loop.run_in_executor(self._device, self.renderer.denoise, batch, on_step,
                                              lambda: all(job.canceled for job in jobs), on_preview)
        for job in jobs:
            job.batches_done += 1
        return denoised

    @staticmethod
    def _report(jobs: list[_Job], progress: StepProgress) -> None:
        for job in jobs:
            if job.canceled:
                continue
            total = job.batches * progress.steps
            done = job.batches_done * progress.steps + progress.step
            job.events.put_nowait(Progress(step=done, steps=total, eta_s=round(progress.step_s * (total - done), 3)))

    def _preview(self, job: _Job, image, index: int, picture) -> None:
        """Scale a preview up to the image's size and encode it on an encoder, then tell the job."""
        if job.canceled:
            return
        request = image.request

        def encoded() -> bytes:
            full = picture.resize((request.width, request.height), Image.Resampling.BILINEAR)
            return encode(full, request.output_format, None, min(request.output_quality, PREVIEW_QUALITY))

        before = job.last_preview

        async def send() -> None:
            data = await asyncio.get_running_loop().run_in_executor(self._encoders, encoded)
            if before is not None:  # encoded side by side, told in order
                await asyncio.wait({before})
            job.events.put_nowait(Preview(index=image.index, partial_image_index=index, image=data))

        task = job.last_preview = asyncio.ensure_future(send())
        self._sending.add(task)  # held until done: the loop keeps only a weak reference
        task.add_done_callback(self._sending.discard)

    async def _encode_and_answer(self, taken: list[_Job], refused: list[RenderResult],
                                 denoised: list[Denoised]) -> None:
        loop = asyncio.get_running_loop()
        try:
            wanted = [d for d in (_without_canceled(d, taken) for d in denoised) if d.batch]
            encoded = await asyncio.gather(*(loop.run_in_executor(self._encoders, self.renderer.encode, d)
                                             for d in wanted))
            grouped: list[list[RenderResult]] = [[] for _ in taken]
            for result in sort_results(refused + [r for results in encoded for r in results]):
                grouped[result.request_index].append(result)
            for job, results in zip(taken, grouped):
                if job.last_preview is not None:  # its previews before its images
                    await asyncio.wait({job.last_preview})
                job.events.put_nowait(Finished(results))
        except Exception as exc:  # noqa: BLE001
            log.exception("encoding a batch failed")
            for job in taken:
                job.events.put_nowait(exc)
        finally:
            self._backlog.release()


def _latest(events: asyncio.Queue, event):
    """A progress report with later events already waiting is stale: the caller hears the
    latest (each event is a message to the caller, and a store write there). Fast steps queue
    several reports before the stream is read; a slow step's report goes out alone."""
    while isinstance(event, Progress) and not events.empty():
        event = events.get_nowait()
    return event


def _without_canceled(denoised: Denoised, taken: list[_Job]) -> Denoised:
    """The batch less the images of canceled requests: nobody will read them, so none is encoded."""
    keep = [i for i, image in enumerate(denoised.batch) if not taken[image.request_index].canceled]
    if len(keep) == len(denoised.batch):
        return denoised
    return dataclasses.replace(
        denoised, batch=[denoised.batch[i] for i in keep],
        pictures=None if denoised.pictures is None else [denoised.pictures[i] for i in keep],
        failed=None if denoised.failed is None else [r for r in denoised.failed
                                                    if not taken[r.request_index].canceled])
