"""Job output: shards of a dataset's size that readers load as they are, each committed once.

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
import tarfile
import time
from dataclasses import asdict, dataclass
from typing import IO, Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.spec.errors import ErrorCode, RenderError
from cluster.spec.loras import AppliedLora
from cluster.storage.results import Storage
from jobs.driver.plan import ShardPlan
from jobs.worker.rows import WorkItem, sample_name

METADATA_SCHEMA = pa.schema([
    ("id", pa.string()), ("index", pa.int64()), ("key", pa.string()), ("prompt", pa.string()),
    ("negative_prompt", pa.string()), ("seed", pa.int64()), ("model", pa.string()), ("width", pa.int64()),
    ("height", pa.int64()), ("steps", pa.int64()), ("guidance", pa.float64()), ("loras", pa.string()), ("quality", pa.string()),
    ("shard", pa.string()),
    ("path", pa.string()), ("sha256", pa.string()), ("error_code", pa.string()), ("error", pa.string()),
    ("render_s", pa.float64()),
])
METADATA_COLUMNS = METADATA_SCHEMA.names
EXTENSIONS = {"png": "png", "webp": "webp", "jpeg": "jpg"}
FOLDERS = {"webdataset": "shards", "parquet": "data", "files": "images"}
PARQUET_ROW_GROUP_IMAGES = 100  # Hugging Face's advice for image datasets: small row groups

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


def remove_staging(storage: Storage, fmt: str) -> int:
    """After the last shard committed: the staging files killed writers left in the flat folders
    (shard data files, metadata, stats, the root's manifest and summary); each shard of the
    `files` format sweeps its own folder when it commits. Lists O(shards) names, never images."""
    folders = ["", "metadata", "stats"] + ([FOLDERS[fmt]] if fmt != "files" else [])
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


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


class _Hashing:
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


class ShardWriter:
    """Writes one shard as its images come: `add` each item's outcome, then `commit`. Images
    stream into the shard's data file; only metadata rows (small) are held until the commit."""

    def __init__(self, storage: Storage, fmt: str, image_format: str, plan: ShardPlan):
        self.storage, self.fmt, self.ext, self.plan = storage, fmt, EXTENSIONS[image_format], plan
        self.rows: list[dict[str, Any]] = []
        self.bytes, self.kept, self.kept_failed, self.started = 0, 0, 0, time.monotonic()
        self._stack: list = []
        self._data: _Hashing | None = None
        self._tar: tarfile.TarFile | None = None
        self._parquet: pq.ParquetWriter | None = None
        self._pending: list[dict[str, Any]] = []  # parquet rows not yet in a row group

    @property
    def folder(self) -> str:
        return f"{FOLDERS[self.fmt]}/{self.plan.name}"

    def add(self, item: WorkItem, image: bytes | None, error: RenderError | None, render_s: float | None,
            loras: tuple[AppliedLora, ...] = ()) -> None:
        """`loras`: the adapters the image was rendered with (path, sha256, scale), shown in its
        `loras` column as JSON instead of the ones its row asked for."""
        row = item.columns() | {"shard": self.plan.name, "render_s": render_s, "path": None, "sha256": None,
                                "error_code": error.code.value if error else None,
                                "error": error.text() if error else None}
        if loras:
            row["loras"] = json.dumps([lora.as_dict() for lora in loras])
        if image is not None:
            row["sha256"] = hashlib.sha256(image).hexdigest()
            row["path"] = self._write_image(item.sample, image, row)
            self.bytes += len(image)
        self.rows.append(row)

    def carry(self, row: dict[str, Any], image: bytes | None) -> None:
        """An image an earlier run of this shard finished (rendered, or refused for good): its
        row as it was, its image copied into the new data file (files: already in place)."""
        if row["path"] is not None and self.fmt == "files":
            self.bytes += self.storage.fs.size(self.storage.path(row["path"]))
        elif row["path"] is not None:
            self._write_image(sample_name(row["key"]), image, row)
            self.bytes += len(image)
        self.rows.append(row)
        self.kept += 1
        self.kept_failed += row["error_code"] is not None

    def _write_image(self, sample: str, image: bytes, row: dict[str, Any]) -> str:
        file_name = f"{sample}.{self.ext}"
        if self.fmt == "files":
            self.storage.write(f"{self.folder}/{file_name}", image)
            return f"{self.folder}/{file_name}"
        self._open()
        if self.fmt == "webdataset":
            sidecar = {c: row.get(c) for c in SIDECAR_COLUMNS}
            for member, data in ((file_name, image), (f"{sample}.json", json.dumps(sidecar).encode())):
                info = tarfile.TarInfo(member)
                info.size, info.mtime = len(data), 0  # no clock in the bytes: a re-run writes the same tar
                self._tar.addfile(info, io.BytesIO(data))
            return f"{self.folder}.tar#{file_name}"
        self._pending.append({**{c: row.get(c) for c in METADATA_COLUMNS}, "path": f"{self.folder}.parquet",
                              "image": {"bytes": image, "path": file_name}})
        if len(self._pending) >= PARQUET_ROW_GROUP_IMAGES:
            self._flush_row_group()
        return f"{self.folder}.parquet"

    def _open(self) -> None:
        if self._data is not None:
            return
        suffix = "tar" if self.fmt == "webdataset" else "parquet"
        target = self.storage.open_atomic(f"{self.folder}.{suffix}")
        self._stack.append(target)
        self._data = _Hashing(target.__enter__())
        if self.fmt == "webdataset":
            self._tar = tarfile.open(fileobj=self._data, mode="w|", format=tarfile.USTAR_FORMAT)
        else:
            self._parquet = pq.ParquetWriter(self._data, DATA_SCHEMA)

    def _flush_row_group(self) -> None:
        if self._pending:
            self._parquet.write_table(pa.Table.from_pylist(self._pending, schema=DATA_SCHEMA))
            self._pending = []

    def commit(self) -> ShardStats:
        """Close the data file, then write the metadata, then the stats: the shard is committed."""
        self.rows.sort(key=lambda r: (r["id"], r["index"]))
        sha256 = self._close_data()
        self.storage.write(f"metadata/{self.plan.name}.parquet",
                           _parquet_bytes(pa.Table.from_pylist(self.rows, schema=METADATA_SCHEMA)))
        failed = [r for r in self.rows if r["error_code"]]
        stats = ShardStats(shard=self.plan.name, rows=self.plan.rows, images=len(self.rows),
                           rendered=len(self.rows) - len(failed), failed=len(failed),
                           retryable=sum(ErrorCode(r["error_code"]).retryable for r in failed), bytes=self.bytes,
                           sha256=sha256, seconds=round(time.monotonic() - self.started, 3), kept=self.kept,
                           kept_failed=self.kept_failed)
        self.storage.write(stats_key(self.plan.name), json.dumps(asdict(stats)).encode())
        return stats

    def _close_data(self) -> str | None:
        if self.fmt == "files":
            # An earlier attempt of this shard, killed mid-image, left its staging file here; no
            # other attempt of this shard runs now (Ray re-runs a shard once its actor is dead).
            self.storage.remove_staging(self.folder)
            rendered = [{"file_name": r["path"].rsplit("/", 1)[-1], **r} for r in self.rows if r["path"]]
            if not rendered:
                return None
            index = _parquet_bytes(pa.Table.from_pylist(rendered, schema=FOLDER_SCHEMA))
            self.storage.write(f"{self.folder}/metadata.parquet", index)
            return hashlib.sha256(index).hexdigest()
        if self._data is None:
            return None
        if self._tar is not None:
            self._tar.close()
        else:
            self._flush_row_group()
            self._parquet.close()
        self._stack.pop().__exit__(None, None, None)
        return self._data.sha256.hexdigest()

    def abort(self) -> None:
        """Drop the data file being written (the shard stays uncommitted)."""
        while self._stack:
            try:
                self._stack.pop().__exit__(RuntimeError, RuntimeError("aborted"), None)
            except RuntimeError:
                pass


def earlier_run(storage: Storage, fmt: str, image_format: str, name: str) -> Iterator[tuple[dict, bytes | None]]:
    """What an earlier run of shard `name` finished: its metadata rows that need no more work
    (rendered, or refused for a reason a rerun cannot change), each with its image bytes."""
    rows = pq.read_table(storage.path(f"metadata/{name}.parquet"), filesystem=storage.fs).to_pylist()
    final = {r["key"]: r for r in rows if r["error_code"] is None or not ErrorCode(r["error_code"]).retryable}
    if fmt == "files":  # the images stay where they are
        yield from ((row, None) for row in final.values())
        return
    yield from ((row, None) for row in final.values() if row["path"] is None)
    rendered = {sample_name(r["key"]): r for r in final.values() if r["path"] is not None}
    folder = f"{FOLDERS[fmt]}/{name}"
    if not rendered:  # no data file was written
        return
    if fmt == "webdataset":
        with storage.fs.open(storage.path(f"{folder}.tar"), "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for member in tar:
                sample, _, ext = member.name.rpartition(".")
                if sample in rendered and ext == EXTENSIONS[image_format]:
                    yield rendered[sample], tar.extractfile(member).read()
    else:
        data = pq.ParquetFile(storage.path(f"{folder}.parquet"), filesystem=storage.fs)
        for batch in data.iter_batches(columns=["key", "image"], batch_size=PARQUET_ROW_GROUP_IMAGES):
            for key, image in zip(batch.column("key").to_pylist(), batch.column("image").to_pylist()):
                if (sample := sample_name(key)) in rendered:
                    yield rendered[sample], image["bytes"]
