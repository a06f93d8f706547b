"""files: `images/NNNNNN/<sample>.<ext>`, one file per image, and `images/NNNNNN/metadata.parquet`
(with `file_name`: what `load_dataset("imagefolder")` joins on), written when the shard commits."""

from __future__ import annotations

import hashlib
from typing import Iterator

import pyarrow as pa

from cluster.storage.results import Storage
from jobs.output.base import Row, ShardFormat
from jobs.output.layout import METADATA_SCHEMA, parquet_bytes

FOLDER_SCHEMA = pa.schema([pa.field("file_name", pa.string()), *METADATA_SCHEMA])


class ImageFolder(ShardFormat):
    folder = "images"
    one_file = False

    def write(self, sample: str, image: bytes, row: Row) -> str:
        path = f"{self.path}/{sample}.{self.ext}"
        self.storage.write(path, image)  # atomically: each image is its own file
        return path

    def carry(self, row: Row, image: bytes | None) -> int:
        return self.storage.fs.size(self.storage.path(row["path"]))  # already in place

    def close(self, rows: list[Row]) -> str | None:
        # An earlier attempt of this shard, killed mid-image, left its staging file here; no
        # other attempt of this shard runs now (Ray re-runs a shard once its actor is dead).
        self.storage.remove_staging(self.path)
        rendered = [{"file_name": r["path"].rsplit("/", 1)[-1], **r} for r in rows if r["path"]]
        if not rendered:
            return None
        index = parquet_bytes(pa.Table.from_pylist(rendered, schema=FOLDER_SCHEMA))
        self.storage.write(f"{self.path}/metadata.parquet", index)
        return hashlib.sha256(index).hexdigest()

    @classmethod
    def read_back(cls, storage: Storage, shard: str, ext: str, rendered: dict[str, Row]) -> Iterator[tuple[Row, None]]:
        yield from ((row, None) for row in rendered.values())  # the images stay where they are
