"""Work units: the read stage of the batch job, which cuts each shard into units sized for the
device and hands each unit its input rows.

A shard is the dataset's unit (a tar, a data file, a folder); a unit is the device's: about
`unit_images` images (a few device batches, `JobSpec.unit_images`), so that a job of any size
spreads over every render actor from the start and ends with at most one unit per actor still
running. A unit is a slice of its shard's rows, so its name (`start-stop`, rows of the input
file) is fixed by its position in the input like the shard's: a retried or rerun unit renders
the same images under the same name. A row asking for more images than a unit holds is a unit
of its own.

This stage reads each shard's rows once (only the row groups that hold them) and sends them on
with the units, so render actors never read the input: a unit of 16 rows would otherwise read a
whole row group of the input file for itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import fsspec
import pyarrow.parquet as pq

from jobs.driver.plan import ShardPlan

_READ_BATCH_ROWS = 8192
Row = tuple[str, dict[str, Any]]  # (position `file:row`, the row's columns)


@dataclass(frozen=True)
class UnitPlan:
    shard: ShardPlan
    start: int  # first row of the input file in this unit
    stop: int  # one past the last
    units: int  # in its shard: the driver commits the shard once that many are back
    redo: bool  # the shard was committed before with failures a rerun can change
    rows: tuple[Row, ...]

    @property
    def name(self) -> str:
        return f"{self.start:09d}-{self.stop:09d}"


def images_of(row: dict[str, Any], default_n: int) -> int:
    """Images a row asks for, as the shard plan counts them (a bad `n` is the default's)."""
    n = row.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else default_n


def cut(rows: list[Row], unit_images: int, default_n: int) -> list[list[Row]]:
    """Consecutive runs of rows of at most `unit_images` images each (a bigger row alone)."""
    units: list[list[Row]] = []
    images = 0
    for row in rows:
        wanted = images_of(row[1], default_n)
        if not units or images + wanted > unit_images:
            units.append([])
            images = 0
        units[-1].append(row)
        images += wanted
    return units


def read_units(item: dict[str, Any], input_uri: str, unit_images: int, default_n: int) -> list[dict[str, Any]]:
    """`flat_map` body: one shard (`plan`, `redo`) in, its units out (`unit`, each as itself)."""
    plan: ShardPlan = item["plan"]
    fs, _ = fsspec.core.url_to_fs(input_uri)
    runs = cut(list(shard_rows(fs, plan)), unit_images, default_n)
    units = []
    for run in runs:
        start = _row_number(run[0][0])
        units.append(UnitPlan(plan, start, start + len(run), len(runs), bool(item["redo"]), tuple(run)))
    return [{"unit": unit} for unit in units]


def _row_number(position: str) -> int:
    return int(position.rsplit(":", 1)[1])


def shard_rows(fs: fsspec.AbstractFileSystem, plan: ShardPlan) -> Iterator[Row]:
    """The shard's input rows with their positions (`file:row`), reading only the row groups
    that hold them."""
    name = plan.file.rsplit("/", 1)[-1]
    parquet = pq.ParquetFile(plan.file, filesystem=fs)
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
