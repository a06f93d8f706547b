"""The shard plan: the input cut into shards of at most `shard_size` images, before any work.

A shard is a slice of rows of one input file (`file`, rows `start` to `stop`), so what a shard
holds is fixed by its position in the input: a re-executed task or a rerun after a kill renders
the same images into the same shard name and overwrites, never adds. Shards never span files,
so every shard but the last of each file is full.

The driver plans from the Parquet footers (row counts) and, when the input has an `n` column,
from that one column read a record batch at a time; it holds one entry per shard, never one per
row. Each input file is fingerprinted by its footer (sizes, offsets and statistics of every
column chunk), so a rerun can tell whether it is resuming the same input.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import fsspec
import pyarrow.parquet as pq

_N_BATCH_ROWS = 65_536  # rows of the `n` column read at a time while planning
_FOOTER_READERS = 16


class InputError(Exception):
    """The input cannot be read as Parquet prompts."""


@dataclass(frozen=True)
class ShardPlan:
    index: int
    file: str  # path on the input filesystem
    start: int  # first row of the file in this shard
    stop: int  # one past the last row
    images: int  # as planned: the rows' `n` (a row that turns out bad yields one error item)

    @property
    def name(self) -> str:
        return f"{self.index:06d}"

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class InputFile:
    path: str
    rows: int
    footer_sha256: str


def input_files(uri: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """A Parquet file, a directory of them, or a glob, on any fsspec filesystem."""
    fs, path = fsspec.core.url_to_fs(uri)
    if any(ch in path for ch in "*?["):
        files = sorted(fs.glob(path))
    elif fs.isdir(path):
        files = sorted(p for p in fs.find(path) if p.endswith(".parquet"))
    else:
        files = [path] if fs.exists(path) else []
    if not files:
        raise InputError(f"no Parquet input at {uri}")
    return fs, files


def describe_inputs(fs: fsspec.AbstractFileSystem, files: list[str]) -> list[InputFile]:
    """Row count and footer fingerprint of every input file (footers only: no data is read),
    several at a time: a glob over thousands of objects on S3 should not take minutes."""
    with ThreadPoolExecutor(_FOOTER_READERS) as readers:
        return list(readers.map(lambda path: _describe(fs, path), files))


def _describe(fs: fsspec.AbstractFileSystem, path: str) -> InputFile:
    try:
        with fs.open(path, "rb") as f:
            f.seek(-8, 2)
            length, magic = int.from_bytes(f.read(4), "little"), f.read(4)
            if magic != b"PAR1":
                raise ValueError("not a Parquet file (no PAR1 footer)")
            f.seek(-8 - length, 2)
            footer = f.read(length)
        rows = pq.ParquetFile(path, filesystem=fs).metadata.num_rows
    except Exception as exc:  # noqa: BLE001 - pyarrow and fsspec raise many kinds for "not Parquet"
        raise InputError(f"cannot read Parquet {path}: {exc}") from None
    return InputFile(path, rows, hashlib.sha256(footer).hexdigest())


def plan_shards(fs: fsspec.AbstractFileSystem, inputs: list[InputFile], shard_size: int, default_n: int,
                limit: int | None = None) -> Iterator[ShardPlan]:
    """Shards of at most `shard_size` images (a row asking for more is a shard of its own), in
    input order, over the first `limit` rows."""
    index, rows_left = 0, limit if limit is not None else 1 << 62
    for source in inputs:
        if rows_left <= 0:
            return
        rows = min(source.rows, rows_left)
        rows_left -= rows
        for start, stop, images in _cuts(fs, source.path, rows, shard_size, default_n):
            yield ShardPlan(index, source.path, start, stop, images)
            index += 1


def _cuts(fs, path: str, rows: int, shard_size: int, default_n: int) -> Iterator[tuple[int, int, int]]:
    parquet = pq.ParquetFile(path, filesystem=fs)
    if "n" not in parquet.schema_arrow.names:  # every row asks for default_n: cut by row count
        per_shard = max(1, shard_size // default_n)
        for start in range(0, rows, per_shard):
            stop = min(start + per_shard, rows)
            yield start, stop, (stop - start) * default_n
        return
    start, row, images = 0, 0, 0
    for batch in parquet.iter_batches(batch_size=_N_BATCH_ROWS, columns=["n"]):
        for n in batch.column(0).to_pylist():
            if row >= rows:
                break
            wanted = n if isinstance(n, int) and n > 0 else default_n
            if images and images + wanted > shard_size:
                yield start, row, images
                start, images = row, 0
            images, row = images + wanted, row + 1
    if row > start:
        yield start, row, images


def count_plan(shards: list[ShardPlan]) -> tuple[int, int]:
    """Rows and images of a plan."""
    return sum(s.rows for s in shards), sum(s.images for s in shards)
