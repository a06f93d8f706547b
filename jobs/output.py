"""Job output: images in one of three formats, plus a metadata table, committed per batch.

Layout under the output URI:
- `images/<key>.png`                        files format (`.webp` / `.jpg` when asked)
- `shards/<batch>.tar` (`<name>.png` + `<name>.json` per sample)   webdataset format
- `data/<batch>.parquet` (metadata columns + `image` bytes)        parquet format
- `metadata/part-<batch>.parquet`           one per committed batch; the commit record
- `summary.json`                            figures of the last run

Exactly once. Every file a batch writes is named by its content: `<batch>` is a hash of the
batch's image keys. Ray may run a batch twice (task retries, outputs lost with a node); the
second run writes the same names, so it overwrites instead of adding. A batch is committed by
writing its metadata part last, atomically. At the end of a run `finalize()` checks what a
reader would see and repairs it: one metadata row per image, no sample in two shards, no
shard that no metadata row points to (left by a crashed attempt).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.errors import ErrorCode
from cluster.storage import Storage

METADATA_SCHEMA = pa.schema([
    ("id", pa.string()), ("index", pa.int64()), ("prompt", pa.string()), ("negative_prompt", pa.string()),
    ("seed", pa.int64()), ("model", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
    ("steps", pa.int64()), ("guidance", pa.float64()), ("path", pa.string()), ("sha256", pa.string()),
    ("error_code", pa.string()), ("error", pa.string()), ("render_s", pa.float64()), ("key", pa.string()), ("committed_at", pa.float64()),
])
METADATA_COLUMNS = METADATA_SCHEMA.names


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def sample_name(key: str) -> str:
    """A webdataset sample name: no dots or slashes (they split keys from extensions)."""
    return key.replace("/", "_")


EXTENSIONS = {"png": "png", "webp": "webp", "jpeg": "jpg"}


class OutputSink:
    def __init__(self, output: str, fmt: str, image_format: str = "png"):
        self.storage = Storage(output)
        self.fmt = fmt
        self.ext = EXTENSIONS[image_format]

    def commit(self, rows: list[dict[str, Any]], images: dict[str, bytes]) -> None:
        """Write the images of `rows` (by key, in `images`), then their metadata part."""
        batch = batch_name(r["key"] for r in rows)
        now = time.time()
        for row in rows:
            row["committed_at"] = now
            png = images.get(row["key"])
            row["sha256"] = hashlib.sha256(png).hexdigest() if png is not None else None
        rendered = [r for r in rows if r["key"] in images]
        if rendered:
            getattr(self, f"_write_{self.fmt}")(batch, rendered, images)
        for row in rows:
            row.setdefault("path", None)
        table = pa.Table.from_pylist([{c: r.get(c) for c in METADATA_COLUMNS} for r in rows], schema=METADATA_SCHEMA)
        self.storage.write(f"metadata/part-{batch}.parquet", _parquet_bytes(table))

    def _write_files(self, batch: str, rows: list[dict[str, Any]], images: dict[str, bytes]) -> None:
        for row in rows:
            row["path"] = f"images/{row['key']}.{self.ext}"
            self.storage.write(row["path"], images[row["key"]])

    def _write_webdataset(self, batch: str, rows: list[dict[str, Any]], images: dict[str, bytes]) -> None:
        shard = f"shards/{batch}.tar"
        for row in rows:
            row["path"] = f"{shard}#{sample_name(row['key'])}.{self.ext}"
        self.storage.write(shard, _tar_bytes(rows, images, self.ext))

    def _write_parquet(self, batch: str, rows: list[dict[str, Any]], images: dict[str, bytes]) -> None:
        part = f"data/{batch}.parquet"
        for row in rows:
            row["path"] = part
        self.storage.write(part, _image_parquet_bytes(rows, images))


def batch_name(keys) -> str:
    """The name of a batch's files: a hash of its image keys (order does not matter)."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:32]


def _tar_bytes(rows: list[dict[str, Any]], images: dict[str, bytes], ext: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for row in rows:
            name = sample_name(row["key"])
            sidecar = {c: row.get(c) for c in METADATA_COLUMNS if c not in ("path", "committed_at")}
            for member, data in ((f"{name}.{ext}", images[row["key"]]), (f"{name}.json", json.dumps(sidecar).encode())):
                info = tarfile.TarInfo(member)
                info.size, info.mtime = len(data), int(row["committed_at"])
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


IMAGE_SCHEMA = METADATA_SCHEMA.append(pa.field("image", pa.binary()))


def _image_parquet_bytes(rows: list[dict[str, Any]], images: dict[str, bytes]) -> bytes:
    table = pa.Table.from_pylist([{**{c: r.get(c) for c in METADATA_COLUMNS}, "image": images[r["key"]]}
                                  for r in rows], schema=IMAGE_SCHEMA)
    return _parquet_bytes(table)


def metadata_parts(storage: Storage) -> list[str]:
    root = storage.path("metadata")
    if not storage.fs.exists(root):
        return []
    return sorted(p for p in storage.fs.ls(root, detail=False) if p.endswith(".parquet"))


def read_metadata(storage: Storage, columns: list[str] | None = None) -> pa.Table:
    parts = metadata_parts(storage)
    if not parts:
        return METADATA_SCHEMA.empty_table() if columns is None else \
            pa.schema([METADATA_SCHEMA.field(c) for c in columns]).empty_table()
    return pa.concat_tables(pq.read_table(p, filesystem=storage.fs, columns=columns, schema=METADATA_SCHEMA)
                            for p in parts)


def committed_keys(storage: Storage) -> frozenset[str]:
    """Images that need no more work: rendered, or refused for a reason a rerun cannot change
    (a code that is not `retryable`: a bad row stays final, a model that failed to load does not)."""
    table = read_metadata(storage, ["key", "error_code"]).to_pylist()
    return frozenset(r["key"] for r in table if r["error_code"] is None or not ErrorCode(r["error_code"]).retryable)


def finalize(storage: Storage, fmt: str, compact_parts: bool) -> pa.Table:
    """Make the output read right whatever Ray re-ran: one metadata row per image (its newest
    success, else its newest error), no image in two shards, no shard that no row points to.
    Rewrites the metadata as one part when asked (reruns) or when it had to repair anything.
    Returns the metadata, one row per image."""
    parts = metadata_parts(storage)
    rows = read_metadata(storage).to_pylist()
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        current = best.get(row["key"])
        if current is None or _rank(row) > _rank(current):
            best[row["key"]] = row
    repaired = fmt in SHARD_FOLDERS and _reconcile_shards(storage, fmt, rows, best)
    kept = sorted(best.values(), key=lambda r: (r["id"], r["index"]))
    table = pa.Table.from_pylist(kept, schema=METADATA_SCHEMA)
    if compact_parts or repaired or len(kept) < len(rows):
        storage.write(f"metadata/part-{batch_name(best)}.parquet", _parquet_bytes(table))
        for part in parts:
            if part != storage.path(f"metadata/part-{batch_name(best)}.parquet"):
                storage.fs.rm(part)
    return table


SHARD_FOLDERS = {"webdataset": "shards", "parquet": "data"}


def _rank(row: dict[str, Any]) -> tuple:
    return row["error"] is None, row["committed_at"] or 0, row["path"] or ""


def _shard_of(path: str | None) -> str | None:
    return path.split("#", 1)[0] if path else None


def _reconcile_shards(storage: Storage, fmt: str, rows: list[dict[str, Any]], best: dict[str, dict]) -> bool:
    """Delete shards no kept row points to; rewrite shards that hold samples kept elsewhere.
    True when anything changed."""
    kept_by_shard: dict[str, list[dict[str, Any]]] = {}
    for row in best.values():
        if (shard := _shard_of(row["path"])) is not None:
            kept_by_shard.setdefault(shard, []).append(row)
    written_by_shard: dict[str, set[str]] = {}
    for row in rows:
        if (shard := _shard_of(row["path"])) is not None:
            written_by_shard.setdefault(shard, set()).add(row["key"])
    changed = False
    folder = SHARD_FOLDERS[fmt]
    listed = storage.fs.ls(storage.path(folder), detail=False) if storage.exists(folder) else []
    for path in listed:
        name = f"{folder}/{path.rstrip('/').rsplit('/', 1)[-1]}"
        if name not in kept_by_shard:  # an orphan, or every sample in it is kept elsewhere
            storage.fs.rm(path)
            changed = True
    for shard, kept in kept_by_shard.items():
        if {r["key"] for r in kept} != written_by_shard[shard]:
            _rewrite_shard(storage, fmt, shard, kept)
            changed = True
    return changed


def _rewrite_shard(storage: Storage, fmt: str, shard: str, kept: list[dict[str, Any]]) -> None:
    """Rewrite `shard` with only the samples of `kept` (under their batch's content name)."""
    data = storage.read(shard)
    images: dict[str, bytes] = {}
    ext = kept[0]["path"].rsplit(".", 1)[-1] if fmt == "webdataset" else ""
    if fmt == "webdataset":
        names = {f"{sample_name(r['key'])}.{ext}": r["key"] for r in kept}
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                if member.name in names:
                    images[names[member.name]] = tar.extractfile(member).read()  # type: ignore[union-attr]
    else:
        table = pq.read_table(io.BytesIO(data), columns=["key", "image"]).to_pylist()
        wanted = {r["key"] for r in kept}
        images = {r["key"]: r["image"] for r in table if r["key"] in wanted}
    batch = batch_name(images)
    target = f"{SHARD_FOLDERS[fmt]}/{batch}.{'tar' if fmt == 'webdataset' else 'parquet'}"
    for row in kept:
        row["path"] = f"{target}#{sample_name(row['key'])}.{ext}" if fmt == "webdataset" else target
    storage.write(target, _tar_bytes(kept, images, ext) if fmt == "webdataset" else _image_parquet_bytes(kept, images))
    if target != shard:
        storage.fs.rm(storage.path(shard))
