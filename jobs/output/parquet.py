"""parquet: `data/NNNNNN.parquet`, the metadata columns and `image` as Hugging Face's `Image`
feature (a struct of bytes and path, declared in the schema's metadata), in small row groups, so
`load_dataset("parquet")` decodes it with no cast."""

from __future__ import annotations

import json
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.storage.results import Storage
from jobs.output.base import Row, StreamedShard
from jobs.output.layout import METADATA_COLUMNS, METADATA_SCHEMA, Hashing
from jobs.worker.rows import sample_name

ROW_GROUP_IMAGES = 100  # Hugging Face's advice for image datasets: small row groups
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_HF_DTYPES = {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64"}
_HF_FEATURES = {"info": {"features": {
    **{f.name: {"dtype": _HF_DTYPES[f.type], "_type": "Value"} for f in METADATA_SCHEMA}, "image": {"_type": "Image"}}}}
DATA_SCHEMA = METADATA_SCHEMA.append(pa.field("image", IMAGE_TYPE)).with_metadata(
    {"huggingface": json.dumps(_HF_FEATURES)})


class ParquetShards(StreamedShard):
    folder = "data"
    suffix = "parquet"

    def opened(self, stream: Hashing) -> None:
        self._writer = pq.ParquetWriter(stream, DATA_SCHEMA)
        self._pending: list[Row] = []  # rows not yet in a row group

    def write(self, sample: str, image: bytes, row: Row) -> str:
        self.stream()
        self._pending.append({**{c: row.get(c) for c in METADATA_COLUMNS}, "path": f"{self.path}.parquet",
                              "image": {"bytes": image, "path": f"{sample}.{self.ext}"}})
        if len(self._pending) >= ROW_GROUP_IMAGES:
            self._flush()
        return f"{self.path}.parquet"

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_pylist(self._pending, schema=DATA_SCHEMA))
            self._pending = []

    def finish(self) -> None:
        self._flush()
        self._writer.close()

    @classmethod
    def read_back(cls, storage: Storage, shard: str, ext: str, rendered: dict[str, Row]) -> Iterator[tuple[Row, bytes]]:
        data = pq.ParquetFile(storage.path(f"{cls.folder}/{shard}.parquet"), filesystem=storage.fs)
        for batch in data.iter_batches(columns=["key", "image"], batch_size=ROW_GROUP_IMAGES):
            for key, image in zip(batch.column("key").to_pylist(), batch.column("image").to_pylist()):
                if (sample := sample_name(key)) in rendered:
                    yield rendered[sample], image["bytes"]
