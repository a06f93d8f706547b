"""Job output's layout: where a shard's files go, their schemas, and the commit record.

Layout under the output URI, for shard `NNNNNN` (its position in the input, `jobs/driver/plan.py`):

    manifest.json                    the run: options, config, models, versions, inputs, shards
    summary.json                     figures of the last run
    metadata/NNNNNN.parquet          every image of the shard, rendered or failed (one view of
                                     the whole job: `pyarrow.parquet.read_table(OUT/metadata)`)
    stats/NNNNNN.json                count, failures, bytes, sha256, duration: the commit record
    webdataset  shards/NNNNNN.tar            <sample>.<ext> + <sample>.json, rendered images only
    parquet     data/NNNNNN.parquet          metadata columns + `image` as Hugging Face's Image
    files       images/NNNNNN/<sample>.<ext> + images/NNNNNN/metadata.parquet (`file_name`:
                                             what `load_dataset("imagefolder")` joins on)

The per-shard metadata sits in its own folder, not beside the data: `data/*.parquet` and
`images/**` must hold only what their readers expect. A failed image is a metadata row, never
a sample without its image.

Exactly once. A shard's files are named by its input position, so a re-executed task or a
rerun writes the same names: it overwrites, never adds, and an image is only ever in its own
shard. Every file is written atomically (`Storage.open_atomic`), and the stats file last: a
shard without stats is incomplete and is rendered again by a rerun.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.storage.results import Storage

METADATA_SCHEMA = pa.schema([
    ("id", pa.string()), ("index", pa.int64()), ("key", pa.string()), ("prompt", pa.string()),
    ("negative_prompt", pa.string()), ("seed", pa.int64()), ("model", pa.string()), ("width", pa.int64()),
    ("height", pa.int64()), ("steps", pa.int64()), ("guidance", pa.float64()), ("loras", pa.string()), ("quality", pa.string()),
    ("mode", pa.string()), ("strength", pa.float64()),
    ("shard", pa.string()),
    ("path", pa.string()), ("sha256", pa.string()), ("error_code", pa.string()), ("error", pa.string()),
    ("render_s", pa.float64()),
])
METADATA_COLUMNS = METADATA_SCHEMA.names

# The `image` column as Hugging Face's `Image` feature: a struct of bytes and path, declared in
# the schema's `huggingface` metadata, so `load_dataset("parquet")` decodes it with no cast.
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_HF_DTYPES = {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64"}
_HF_FEATURES = {"info": {"features": {
    **{f.name: {"dtype": _HF_DTYPES[f.type], "_type": "Value"} for f in METADATA_SCHEMA}, "image": {"_type": "Image"}}}}
DATA_SCHEMA = METADATA_SCHEMA.append(pa.field("image", IMAGE_TYPE)).with_metadata(
    {"huggingface": json.dumps(_HF_FEATURES)})
# A sample's JSON: its metadata, less what only a failure or the layout has (a sample is always
# a rendered image), so that every sample of every shard has the same fields.
SIDECAR_COLUMNS = [c for c in METADATA_COLUMNS if c not in ("path", "error_code", "error")]
FOLDER_SCHEMA = pa.schema([pa.field("file_name", pa.string()), *METADATA_SCHEMA])


@dataclass
class ShardStats:
    shard: str
    rows: int
    images: int  # work items: rendered + failed
    rendered: int
    failed: int
    retryable: int  # failed for a cause a rerun can change (a model that did not load)
    bytes: int  # of the shard's images
    sha256: str | None  # of the shard's data file (webdataset, parquet) or its folder index (files)
    seconds: float
    kept: int = 0  # items carried over from an earlier run of this shard
    kept_failed: int = 0  # of which refused for good (a bad row)

    @property
    def rendered_now(self) -> int:
        """Rendered by the run that wrote these stats (not carried over)."""
        return self.rendered - (self.kept - self.kept_failed)

    @property
    def failed_now(self) -> int:
        return self.failed - self.kept_failed


def remove_staging_in(storage: Storage, data_folder: str | None) -> int:
    """After the last shard committed: the staging files killed writers left in the flat folders
    (metadata, stats, the root's manifest and summary, and `data_folder`: the format's, when its
    shards are files in one folder); a format whose shards are folders sweeps each when it
    commits. Lists O(shards) names, never images."""
    folders = ["", "metadata", "stats"] + ([data_folder] if data_folder else [])
    return sum(storage.remove_staging(folder) for folder in folders)


def stats_key(name: str) -> str:
    return f"stats/{name}.json"


def read_stats(storage: Storage) -> dict[str, ShardStats]:
    """Every committed shard's stats: one listing and one small read per shard."""
    if not storage.exists("stats"):
        return {}
    paths = [p for p in storage.fs.ls(storage.path("stats"), detail=False) if p.endswith(".json")]
    contents = storage.fs.cat(paths) if paths else {}  # concurrent on object stores
    return {s.shard: s for s in (ShardStats(**json.loads(data)) for data in contents.values())}


def read_metadata(storage: Storage, columns: list[str] | None = None) -> pa.Table:
    """The metadata of every committed shard, as one table (for readers and tests: a job never
    reads it whole)."""
    committed = sorted(read_stats(storage))
    schema = METADATA_SCHEMA if columns is None else pa.schema([METADATA_SCHEMA.field(c) for c in columns])
    if not committed:
        return schema.empty_table()
    return pa.concat_tables(pq.read_table(storage.path(f"metadata/{name}.parquet"), filesystem=storage.fs,
                                          columns=columns, schema=METADATA_SCHEMA) for name in committed)


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


class Hashing:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, f: IO[bytes]):
        self.f, self.sha256, self.size, self.closed = f, hashlib.sha256(), 0, False

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.closed = True  # the underlying file is closed by its `open_atomic` block
