"""Small builders of records for tests."""

from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

from cluster.spec.request import ResolvedRequest
from jobs.driver.plan import ShardPlan
from jobs.output.assembly import commit_shard
from jobs.output.layout import ShardStats
from serve.tasks.store.record import TaskRecord


def resolved_request(**changes) -> ResolvedRequest:
    base = dict(model="flux-schnell", prompt="a cat", negative_prompt=None, width=512, height=512, steps=2,
                guidance=3.5, seed=1, n=1, add_sampling_metadata=True)
    return ResolvedRequest(**(base | changes))


def task_record(task_id: str | None = None, **fields) -> TaskRecord:
    now = time.time()
    base = dict(task_id=task_id or uuid.uuid4().hex, model="flux-schnell", submit_time=now,
                deadline=now + 600, expires_at=now + 3600, key_id="k1", request=resolved_request())
    return TaskRecord(**(base | fields))


def nested_dicts(node: Any) -> Iterator[dict]:
    """Every dict in a nested structure of dicts and lists (a manifest, a schema), outermost
    first; a dict changed by the caller is walked as changed."""
    if isinstance(node, dict):
        yield node
        for value in list(node.values()):
            yield from nested_dicts(value)
    elif isinstance(node, list):
        for value in node:
            yield from nested_dicts(value)


def render_shard(worker, plan: ShardPlan, fmt: str, redo: bool = False, unit_images: int = 2) -> ShardStats:
    """What the job's pipeline does to one shard, without Ray: its units read and rendered by
    `worker` (a `jobs.worker.unit_worker.UnitWorker`), one after the other, then the shard
    committed from their parts."""
    from jobs.worker.units import read_units

    units = [out["unit"] for out in read_units({"plan": plan, "redo": redo}, plan.file, unit_images,
                                               worker.defaults.n)]
    for unit in units:
        worker.render_unit(unit)
    return commit_shard(worker.storage, fmt, worker.image_format, plan, [u.name for u in units], redo)
