"""Two classes of work in a replica's queue (serve/replica/pipelined.py), without Ray, on the
SIMULATED GPU whose own record says which prompts each device batch held: interactive requests
go ahead of all waiting batch work, batch work fills every gap, and both share a batch only where
mixed batches are allowed."""

from __future__ import annotations

import asyncio

from cluster.doubles.simulated_gpu import read_busy_intervals
from cluster.engine.renderer import Renderer
from cluster.spec.config import load_config
from cluster.spec.request import RenderRequest, WorkClass
from cluster.spec.settings import SimulatedTiming
from serve.replica.pipelined import PipelinedRenderer
from serve.replica.render_events import Finished, Started


def renderer(tmp_path, monkeypatch, per_image_s: float) -> Renderer:
    monkeypatch.setenv("RAYDIANT_SIM_DIR", str(tmp_path))
    spec = load_config().spec("flux-schnell").model_copy(update={
        "source": "sim:flux", "warmup": False, "max_batch_size": 4,
        "simulated": SimulatedTiming(base_s=0.0, per_image_s=per_image_s)})
    return Renderer(spec)


def request(engine: Renderer, prompt: str):
    """A request as a replica hands it on: resolved at submission, prepared as it arrived."""
    return engine.prepare(engine.resolve(RenderRequest(model="flux-schnell", prompt=prompt, width=256, height=256,
                                                       steps=2, seed=1)))


def device_batches(tmp_path) -> list[list[str]]:
    [record] = read_busy_intervals(tmp_path).values()
    return [batch["prompts"] for batch in record]


async def until_busy(engine: Renderer) -> None:
    while not engine.pipeline.busy_now:
        await asyncio.sleep(0.005)


def test_an_interactive_request_goes_ahead_of_waiting_batch_work(tmp_path, monkeypatch):
    engine = renderer(tmp_path, monkeypatch, per_image_s=0.2)

    async def scenario():
        replica = PipelinedRenderer(engine, max_requests=1)
        job = [asyncio.create_task(replica.render(request(engine, f"job {i}"), WorkClass.BATCH)) for i in range(4)]
        await until_busy(engine)  # "job 0" is on the device; jobs 1..3 wait
        online = asyncio.create_task(replica.render(request(engine, "online")))
        results = await asyncio.gather(*job, online)
        assert all(r and r[0].ok for r in results)

    asyncio.run(scenario())
    assert device_batches(tmp_path) == [["job 0"], ["online"], ["job 1"], ["job 2"], ["job 3"]]


def interactive_then_job(engine: Renderer, mixed_batches: bool) -> None:
    async def scenario():
        replica = PipelinedRenderer(engine, max_requests=4, mixed_batches=mixed_batches)
        first = asyncio.create_task(replica.render(request(engine, "online 0")))
        await until_busy(engine)
        job = [asyncio.create_task(replica.render(request(engine, f"job {i}"), WorkClass.BATCH)) for i in range(5)]
        await asyncio.sleep(0)
        online = asyncio.create_task(replica.render(request(engine, "online 1")))
        await asyncio.gather(first, *job, online)

    asyncio.run(scenario())


def test_batch_work_fills_the_gaps_but_no_batch_of_interactive_requests(tmp_path, monkeypatch):
    interactive_then_job(renderer(tmp_path, monkeypatch, per_image_s=0.1), mixed_batches=False)
    # The interactive request alone in the next batch (as fast as on an idle replica); the job after.
    assert device_batches(tmp_path) == [["online 0"], ["online 1"], ["job 0", "job 1", "job 2", "job 3"], ["job 4"]]


def test_mixed_batches_share_a_batch_between_interactive_requests_and_batch_work(tmp_path, monkeypatch):
    interactive_then_job(renderer(tmp_path, monkeypatch, per_image_s=0.1), mixed_batches=True)
    # The interactive request first in the next batch, the job's images after it; the rest next.
    assert device_batches(tmp_path) == [["online 0"], ["online 1", "job 0", "job 1", "job 2"], ["job 3", "job 4"]]


def test_progress_overtaken_by_later_events_is_not_sent(tmp_path, monkeypatch):
    """Steps faster than the stream is read queue several reports: the caller hears the latest,
    and the last event is always its results."""
    engine = renderer(tmp_path, monkeypatch, per_image_s=0.0)

    async def scenario():
        replica = PipelinedRenderer(engine, max_requests=1)
        stream = replica.stream(request(engine, "fast"))
        await asyncio.sleep(0)
        events = []
        started = await stream.__anext__()
        while not engine.pipeline.batches:  # the whole batch ran before the stream is read on
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # its encoding too
        async for event in stream:
            events.append(event)
        return started, events

    started, events = asyncio.run(scenario())
    assert isinstance(started, Started)
    assert [type(e) for e in events] == [Finished] and events[0].results[0].ok
