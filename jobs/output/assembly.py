"""A shard assembled from its units' parts and committed once (`commit_shard`), run as a Ray task
once every unit of the shard is back.

Exactly once. The shard gets its parts' rows and images in the order of its units (and, for a
shard redone after retryable failures, what the earlier run finished first), under the shard's
content-fixed names, through the same `ShardWriter` and commit as ever: data, metadata, then
stats. Its parts are removed only after the stats are written. So a commit that Ray runs again
after its worker died either finds every part and writes the same shard again, or finds the
stats and some parts already gone: an earlier attempt committed, and its stats are the answer.
"""

from __future__ import annotations

import json
import posixpath

from cluster.storage.results import Storage
from jobs.driver.plan import ShardPlan
from jobs.output.layout import ShardStats, stats_key
from jobs.output.shard_writer import ShardWriter, earlier_run
from jobs.output.unit_part import PARTS, part_key, part_keys, read_part


def commit_shard(storage: Storage, fmt: str, image_format: str, plan: ShardPlan, units: list[str],
                 redo: bool) -> ShardStats:
    """Assemble shard `plan` from the parts of `units` (`start-stop` names, in input order) and
    commit it; `redo`: carry over what the shard's earlier commit finished."""
    folder = f"{PARTS}/{plan.name}"
    present = ({posixpath.basename(p) for p in storage.fs.ls(storage.path(folder), detail=False)}
               if storage.exists(folder) else set())
    if any(posixpath.basename(part_key(plan.name, unit)) not in present for unit in units):
        if storage.exists(stats_key(plan.name)):  # an earlier attempt committed and was removing parts
            return ShardStats(**json.loads(storage.read(stats_key(plan.name))))
        raise FileNotFoundError(f"shard {plan.name}: a unit's part is missing from {storage.path(folder)}")
    writer = ShardWriter(storage, fmt, image_format, plan)
    try:
        if redo:  # what the shard's last commit finished, less what the parts hold now (an
            # attempt of this commit that died after committing has those in the shard already)
            redone = {key for unit in units for key in part_keys(storage, plan.name, unit)}
            for row, image in earlier_run(storage, fmt, image_format, plan.name):
                if row["key"] not in redone:
                    writer.carry(row, image)
        for unit in units:
            for row, image in read_part(storage, plan.name, unit):
                writer.place(row, image)
        stats = writer.commit()
    except BaseException:
        writer.abort()
        raise
    storage.delete_prefix(folder)
    return stats
