"""`UnitPart`: what one work unit rendered, kept in storage until its shard is assembled.

A render actor writes each unit's outcomes (metadata rows and encoded images) as one Parquet
file, `parts/NNNNNN/<start>-<stop>.parquet`, named by the unit's rows in the input: a retried
unit writes the same name with the same content, atomically, so a part is whole or absent and
never there twice. The shard is assembled from its parts once every unit is back
(`jobs/output/assembly.py`), and its parts are removed then.

A part outlives a killed job: a rerun finds it and renders nothing for that unit, unless it holds
failures a rerun can change (a model that did not load), which are rendered again.

Parts are the price of units that are not shards: each image is written twice (its part, then
its shard) and read once. A part is a few device batches, so it is held in memory until written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.spec.errors import ErrorCode, RenderError
from cluster.spec.loras import AppliedLora
from cluster.storage.results import Storage
from jobs.output.layout import METADATA_SCHEMA, parquet_bytes
from jobs.worker.rows import WorkItem

PARTS = "parts"
PART_SCHEMA = METADATA_SCHEMA.append(pa.field("image", pa.binary()))
_STATS_KEY = b"raydiant.unit"  # the part's counts, in its footer: a rerun reads them without the data


@dataclass(frozen=True)
class UnitStats:
    shard: str
    unit: str  # `start-stop`
    units: int  # in its shard
    rendered: int
    failed: int
    retryable: int  # failed for a cause a rerun can change
    reused: bool = False  # the part was written by an earlier attempt: nothing rendered this time


def part_key(shard: str, unit: str) -> str:
    return f"{PARTS}/{shard}/{unit}.parquet"


def outcome_row(item: WorkItem, shard: str, image: bytes | None, error: RenderError | None,
                render_s: float | None, loras: tuple[AppliedLora, ...] = ()) -> dict[str, Any]:
    """An image's metadata row (layout.METADATA_SCHEMA; `path` is set where its shard stores it).
    `loras`: the adapters it was rendered with (path, sha256, scale), shown instead of the ones
    its row asked for."""
    row = item.columns() | {"shard": shard, "render_s": render_s, "path": None,
                            "sha256": hashlib.sha256(image).hexdigest() if image is not None else None,
                            "error_code": error.code.value if error else None,
                            "error": error.text() if error else None}
    if loras:
        row["loras"] = json.dumps([lora.as_dict() for lora in loras])
    return row


class UnitPart:
    """Collects one unit's outcomes (`add`), then writes them as the unit's part (`write`)."""

    def __init__(self, storage: Storage, shard: str, unit: str, units: int):
        self.storage, self.shard, self.unit, self.units = storage, shard, unit, units
        self.rows: list[dict[str, Any]] = []

    def add(self, item: WorkItem, image: bytes | None, error: RenderError | None, render_s: float | None,
            loras: tuple[AppliedLora, ...] = ()) -> None:
        self.rows.append(outcome_row(item, self.shard, image, error, render_s, loras) | {"image": image})

    def write(self) -> UnitStats:
        failed = [r for r in self.rows if r["error_code"]]
        stats = UnitStats(self.shard, self.unit, self.units, len(self.rows) - len(failed), len(failed),
                          sum(ErrorCode(r["error_code"]).retryable for r in failed))
        table = pa.Table.from_pylist(self.rows, schema=PART_SCHEMA)
        table = table.replace_schema_metadata({_STATS_KEY: json.dumps(asdict(stats)).encode()})
        self.storage.write(part_key(self.shard, self.unit), parquet_bytes(table))
        return stats


def earlier_part(storage: Storage, shard: str, unit: str) -> UnitStats | None:
    """The stats of this unit's part written by an earlier attempt, when it needs no more work;
    reads the part's footer only."""
    key = part_key(shard, unit)
    if not storage.exists(key):
        return None
    stats = UnitStats(**json.loads(pq.read_schema(storage.path(key), filesystem=storage.fs).metadata[_STATS_KEY]))
    return None if stats.retryable else UnitStats(**(asdict(stats) | {"reused": True}))


def read_part(storage: Storage, shard: str, unit: str) -> Iterator[tuple[dict[str, Any], bytes | None]]:
    """A part's rows, each with its image (None for a failure), a row group at a time."""
    part = pq.ParquetFile(storage.path(part_key(shard, unit)), filesystem=storage.fs)
    for batch in part.iter_batches():
        for row in batch.to_pylist():
            yield row, row.pop("image")


def part_keys(storage: Storage, shard: str, unit: str) -> list[str]:
    """The image keys a part holds (its `key` column only)."""
    return pq.read_table(storage.path(part_key(shard, unit)), filesystem=storage.fs,
                         columns=["key"]).column("key").to_pylist()
