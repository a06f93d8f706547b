"""`ShardWriter`: one shard of the output, written as its images come and committed once, in any
format (`FORMATS`: one `ShardFormat` each, jobs/output/base.py).

Exactly once. A shard's files are named by its input position, so a re-executed task or a
rerun writes the same names: it overwrites, never adds, and an image is only ever in its own
shard. Every file is written atomically (`Storage.open_atomic`), and the stats file last: a
shard without stats is incomplete and is rendered again by a rerun. The layout and schemas are
in jobs/output/layout.py.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.images.encoding import EXTENSIONS
from cluster.spec.errors import ErrorCode
from cluster.storage.results import Storage
from jobs.driver.plan import ShardPlan
from jobs.output.base import ShardFormat
from jobs.output.files import ImageFolder
from jobs.output.layout import METADATA_SCHEMA, ShardStats, parquet_bytes, remove_staging_in, stats_key
from jobs.output.parquet import ParquetShards
from jobs.output.unit_part import PARTS
from jobs.output.webdataset import WebDataset
from jobs.worker.rows import sample_name

FORMATS: dict[str, type[ShardFormat]] = {"webdataset": WebDataset, "parquet": ParquetShards, "files": ImageFolder}


def remove_staging(storage: Storage, fmt: str) -> int:
    """After the last shard committed: what killed writers left (layout.remove_staging_in), and
    the parts no shard needs any more (a commit killed after its stats, before removing them)."""
    shards = FORMATS[fmt]
    storage.delete_prefix(PARTS)
    return remove_staging_in(storage, shards.folder if shards.one_file else None)


class ShardWriter:
    """Writes one shard as its images come: `place` each image's outcome (or `carry` what an
    earlier run finished), then `commit`. Images stream into the shard's data (its format's);
    only metadata rows (small) are held until the commit."""

    def __init__(self, storage: Storage, fmt: str, image_format: str, plan: ShardPlan):
        self.storage, self.plan = storage, plan
        self.format = FORMATS[fmt](storage, plan.name, EXTENSIONS[image_format])
        self.rows: list[dict[str, Any]] = []
        self.bytes, self.kept, self.kept_failed, self.started = 0, 0, 0, time.monotonic()

    def place(self, row: dict[str, Any], image: bytes | None) -> None:
        """An image's outcome (its metadata row, and its bytes when it was rendered) into the
        shard: the image stored where the format puts it, its row kept for the commit."""
        if image is not None:
            row["path"] = self.format.write(sample_name(row["key"]), image, row)
            self.bytes += len(image)
        self.rows.append(row)

    def carry(self, row: dict[str, Any], image: bytes | None) -> None:
        """An image an earlier run of this shard finished (rendered, or refused for good): its
        row as it was, its image stored again where the format needs it."""
        if row["path"] is not None:
            self.bytes += self.format.carry(row, image)
        self.rows.append(row)
        self.kept += 1
        self.kept_failed += row["error_code"] is not None

    def commit(self) -> ShardStats:
        """Close the data, then write the metadata, then the stats: the shard is committed."""
        self.rows.sort(key=lambda r: (r["id"], r["index"]))
        sha256 = self.format.close(self.rows)
        self.storage.write(f"metadata/{self.plan.name}.parquet",
                           parquet_bytes(pa.Table.from_pylist(self.rows, schema=METADATA_SCHEMA)))
        failed = [r for r in self.rows if r["error_code"]]
        stats = ShardStats(shard=self.plan.name, rows=self.plan.rows, images=len(self.rows),
                           rendered=len(self.rows) - len(failed), failed=len(failed),
                           retryable=sum(ErrorCode(r["error_code"]).retryable for r in failed), bytes=self.bytes,
                           sha256=sha256, seconds=round(time.monotonic() - self.started, 3), kept=self.kept,
                           kept_failed=self.kept_failed)
        self.storage.write(stats_key(self.plan.name), json.dumps(asdict(stats)).encode())
        return stats

    def abort(self) -> None:
        """Drop the data being written (the shard stays uncommitted)."""
        self.format.abort()


def earlier_run(storage: Storage, fmt: str, image_format: str, name: str) -> Iterator[tuple[dict, bytes | None]]:
    """What an earlier run of shard `name` finished: its metadata rows that need no more work
    (rendered, or refused for a reason a rerun cannot change), each with its image bytes (None
    where the format leaves the image in place)."""
    final = {r["key"]: r for r in _final_rows(storage, name)}
    yield from ((row, None) for row in final.values() if row["path"] is None)
    rendered = {sample_name(r["key"]): r for r in final.values() if r["path"] is not None}
    if rendered:
        yield from FORMATS[fmt].read_back(storage, name, EXTENSIONS[image_format], rendered)


def finished_keys(storage: Storage, name: str) -> set[str]:
    """The keys of the images of committed shard `name` that need no more work."""
    return {row["key"] for row in _final_rows(storage, name, columns=["key", "error_code"])}


def _final_rows(storage: Storage, name: str, columns: list[str] | None = None) -> list[dict]:
    """Shard `name`'s metadata rows that need no more work: rendered, or refused for a reason a
    rerun cannot change."""
    rows = pq.read_table(storage.path(f"metadata/{name}.parquet"), filesystem=storage.fs, columns=columns).to_pylist()
    return [r for r in rows if r["error_code"] is None or not ErrorCode(r["error_code"]).retryable]
