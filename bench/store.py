"""Task store at scale: every question is an index lookup, so its cost does not grow with the
number of live records.

    .venv/bin/python -m bench.store [--records 10000,1000000] [--backends sqlite,redis]

Fills each backend (a real SQLite file; a real Redis server on a free loopback port) with
`records` live tasks of 100 keys and 4 models, 10% of them PENDING, then times, side by side
at every size: a fetch of the newest PENDING task with its queue position (`get` +
`pending_ahead`, what GET /tasks/{id} does), a list page of 10 (the key's newest, and filtered
by status and model), a recovery tick (`claim_expired`), a webhook tick (`due_webhooks`) and a
purge tick. Prints p50/p95 in ms, and Redis memory per record.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from serve.tasks.store.base import TaskStore
from serve.tasks.store.record import TaskRecord, TaskStatus
from serve.tasks.store.redis import RedisTaskStore
from serve.tasks.store.sqlite import SQLiteTaskStore
from tests.factories import resolved_request
from tests.servers import redis_server

KEYS, MODELS, REPEAT = 100, ["flux-schnell", "flux-dev", "stable-diffusion-xl", "flux-kontext"], 200


def records(count: int, base: float):
    request = resolved_request(prompt="a lighthouse on a cliff at sunset, oil painting, " * 2)
    for i in range(count):
        pending = i % 10 == 0
        yield TaskRecord(task_id=uuid.uuid4().hex, model=MODELS[i % len(MODELS)], key_id=f"key-{i % KEYS}",
                         status=TaskStatus.PENDING if pending else TaskStatus.SUCCEEDED, request=request,
                         submit_time=base + i * 1e-3, deadline=base + 600, expires_at=base + 86400,
                         lease_until=base + 3600 if pending else 0.0)


async def fill(store: TaskStore, count: int) -> TaskRecord:
    newest, batch = None, []
    for record in records(count, time.time() - count * 1e-3):
        batch.append(store.create(record))
        if record.status == TaskStatus.PENDING:
            newest = record
        if len(batch) == 256:
            await asyncio.gather(*batch)
            batch = []
    await asyncio.gather(*batch)
    return newest


async def timed(call, repeat: int = REPEAT) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


async def measure(store: TaskStore, count: int) -> dict[str, tuple[float, float]]:
    newest = await fill(store, count)
    now = time.time()

    async def fetch_pending():
        record = await store.get(newest.task_id)
        await store.pending_ahead(record)

    return {
        "fetch PENDING + position": await timed(fetch_pending),
        "list page of 10": await timed(lambda: store.list(key_id=newest.key_id, page_size=10)),
        "list PENDING of a model": await timed(lambda: store.list(key_id=newest.key_id, status="PENDING",
                                                                  model=newest.model, page_size=10)),
        "recovery tick": await timed(lambda: store.claim_expired("bench", now, now + 30), 50),
        "webhook tick": await timed(lambda: store.due_webhooks(now), 50),
        "purge tick": await timed(lambda: store.purge_expired(now), 50),
    }


async def run(backend: str, count: int, work: Path, redis_url: str | None) -> tuple[dict, float | None]:
    if backend == "sqlite":
        store: TaskStore = SQLiteTaskStore(work / f"tasks-{count}.sqlite")
    else:
        store = RedisTaskStore(redis_url, prefix=f"bench{count}")
        await store._redis.flushdb()
    try:
        before = (await store._redis.info("memory"))["used_memory"] if backend == "redis" else 0
        figures = await measure(store, count)
        per_record = None
        if backend == "redis":
            per_record = ((await store._redis.info("memory"))["used_memory"] - before) / count
        return figures, per_record
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", default="10000,1000000")
    parser.add_argument("--backends", default="sqlite,redis")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="raydiant-store-"))
    sizes = [int(n) for n in args.records.split(",")]
    results = {}
    with redis_server() as redis_url:
        for backend in args.backends.split(","):
            for count in sizes:
                results[(backend, count)] = asyncio.run(run(backend, count, work, redis_url))
                print(backend, count, results[(backend, count)], flush=True)  # a long run shows as it goes
    print(f"\n{KEYS} keys, {len(MODELS)} models, 10% PENDING; p50 / p95 in ms")
    questions = list(next(iter(results.values()))[0])
    print(f"{'backend':>8} {'records':>9} " + " ".join(f"{q:>26}" for q in questions) + "  Redis B/record")
    for (backend, count), (figures, per_record) in results.items():
        cells = " ".join(f"{f'{p50:.2f} / {p95:.2f}':>26}" for p50, p95 in figures.values())
        print(f"{backend:>8} {count:>9} {cells}  {per_record or 0:>8.0f}")
    for backend in args.backends.split(","):
        small, large = results[(backend, sizes[0])][0], results[(backend, sizes[-1])][0]
        ratios = ", ".join(f"{q} x{large[q][0] / small[q][0]:.1f}" for q in questions)
        print(f"{backend}: p50 at {sizes[-1]} / at {sizes[0]}: {ratios}")


if __name__ == "__main__":
    main()
