"""`ShardFormat`: how one output format lays out a shard's images. `ShardWriter` (shard_writer.py)
does everything else (rows, metadata, stats, the commit) the same way for every format.

A format writes each rendered image as it comes (`write`), closes the shard's data when the
shard commits (`close`: the sha256 the stats record), drops it on failure (`abort`), and reads a
committed shard's images back for a rerun that carries them over (`read_back`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterator

from cluster.storage.results import Storage
from jobs.output.layout import Hashing
from jobs.worker.rows import sample_name

Row = dict[str, Any]  # one image's metadata row (layout.METADATA_SCHEMA)


class ShardFormat(ABC):
    folder: ClassVar[str]  # where this format's shards go under the output
    one_file: ClassVar[bool] = True  # a shard is one file `folder/NNNNNN.<suffix>` (else a folder of files)

    def __init__(self, storage: Storage, shard: str, ext: str):
        self.storage, self.shard, self.ext = storage, shard, ext

    @property
    def path(self) -> str:
        """The shard's file or folder, without a suffix."""
        return f"{self.folder}/{self.shard}"

    @abstractmethod
    def write(self, sample: str, image: bytes, row: Row) -> str:
        """Store one rendered image of the shard; returns the `path` its row records."""

    def carry(self, row: Row, image: bytes) -> int:
        """An image an earlier run of this shard rendered, stored into this run's data; returns
        its size."""
        self.write(sample_name(row["key"]), image, row)
        return len(image)

    @abstractmethod
    def close(self, rows: list[Row]) -> str | None:
        """Finish the shard's data (all its rows given, in order); the sha256 of its data file
        or index, or None when it holds no image."""

    def abort(self) -> None:
        """Drop what was written (the shard stays uncommitted)."""

    @classmethod
    @abstractmethod
    def read_back(cls, storage: Storage, shard: str, ext: str, rendered: dict[str, Row]) -> Iterator[tuple[Row, bytes | None]]:
        """The images of `rendered` (rows by sample name) in a committed shard, with their bytes."""


class StreamedShard(ShardFormat):
    """A shard written as one file, streamed as images come: atomically (no reader sees half a
    shard) and hashed on the way."""

    suffix: ClassVar[str]

    def __init__(self, storage: Storage, shard: str, ext: str):
        super().__init__(storage, shard, ext)
        self._target = None
        self._data: Hashing | None = None

    def stream(self) -> Hashing:
        """The shard's file, opened on its first image."""
        if self._data is None:
            self._target = self.storage.open_atomic(f"{self.path}.{self.suffix}")
            self._data = Hashing(self._target.__enter__())
            self.opened(self._data)
        return self._data

    def opened(self, stream: Hashing) -> None:
        """Start the format's container on the new file."""

    @abstractmethod
    def finish(self) -> None:
        """Write the container's end (the file is closed after)."""

    def close(self, rows: list[Row]) -> str | None:
        if self._data is None:
            return None
        self.finish()
        target, self._target = self._target, None
        target.__exit__(None, None, None)
        return self._data.sha256.hexdigest()

    def abort(self) -> None:
        if self._target is not None:
            target, self._target = self._target, None
            try:
                target.__exit__(RuntimeError, RuntimeError("aborted"), None)
            except RuntimeError:
                pass
