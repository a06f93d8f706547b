"""Job output: images in one of three formats, plus a metadata table, committed per batch.

Layout under the output URI:
- `images/<key>.png`                        files format
- `shards/<uuid>.tar` (`<name>.png` + `<name>.json` per sample)   webdataset format
- `data/<uuid>.parquet` (metadata columns + `image` bytes)        parquet format
- `metadata/part-<uuid>.parquet`            one per committed batch; the commit record
- `summary.json`                            figures of the last run

A batch is committed by writing its metadata part last, atomically: images written before a
crash but never committed are re-rendered on the rerun into the same key (files) or left as
unreferenced shards (never counted). `compact()` rewrites the parts so each image appears once.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.storage import Storage

METADATA_SCHEMA = pa.schema([
    ("id", pa.string()), ("index", pa.int64()), ("prompt", pa.string()), ("negative_prompt", pa.string()),
    ("seed", pa.int64()), ("model", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
    ("steps", pa.int64()), ("guidance", pa.float64()), ("path", pa.string()), ("sha256", pa.string()),
    ("error", pa.string()), ("render_s", pa.float64()), ("key", pa.string()), ("committed_at", pa.float64()),
])
METADATA_COLUMNS = METADATA_SCHEMA.names


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def sample_name(key: str) -> str:
    """A webdataset sample name: no dots or slashes (they split keys from extensions)."""
    return key.replace("/", "_")


class OutputSink:
    def __init__(self, output: str, fmt: str):
        self.storage = Storage(output)
        self.fmt = fmt

    def commit(self, rows: list[dict[str, Any]], images: dict[str, bytes]) -> None:
        """Write the images of `rows` (by key, in `images`), then their metadata part."""
        now = time.time()
        for row in rows:
            row["committed_at"] = now
            png = images.get(row["key"])
            row["sha256"] = hashlib.sha256(png).hexdigest() if png is not None else None
        rendered = [r for r in rows if r["key"] in images]
        if rendered:
            getattr(self, f"_write_{self.fmt}")(rendered, images)
        for row in rows:
            row.setdefault("path", None)
        table = pa.Table.from_pylist([{c: r.get(c) for c in METADATA_COLUMNS} for r in rows], schema=METADATA_SCHEMA)
        self.storage.write(f"metadata/part-{uuid.uuid4().hex}.parquet", _parquet_bytes(table))

    def _write_files(self, rows: list[dict[str, Any]], images: dict[str, bytes]) -> None:
        for row in rows:
            row["path"] = f"images/{row['key']}.png"
            self.storage.write(row["path"], images[row["key"]])

    def _write_webdataset(self, rows: list[dict[str, Any]], images: dict[str, bytes]) -> None:
        shard = f"shards/{uuid.uuid4().hex}.tar"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for row in rows:
                name = sample_name(row["key"])
                row["path"] = f"{shard}#{name}.png"
                sidecar = {c: row.get(c) for c in METADATA_COLUMNS if c not in ("path", "committed_at")}
                for member, data in ((f"{name}.png", images[row["key"]]),
                                     (f"{name}.json", json.dumps(sidecar).encode())):
                    info = tarfile.TarInfo(member)
                    info.size, info.mtime = len(data), int(row["committed_at"])
                    tar.addfile(info, io.BytesIO(data))
        self.storage.write(shard, buf.getvalue())

    def _write_parquet(self, rows: list[dict[str, Any]], images: dict[str, bytes]) -> None:
        part = f"data/{uuid.uuid4().hex}.parquet"
        for row in rows:
            row["path"] = part
        table = pa.Table.from_pylist([{**{c: r.get(c) for c in METADATA_COLUMNS}, "image": images[r["key"]]}
                                      for r in rows],
                                     schema=METADATA_SCHEMA.append(pa.field("image", pa.binary())))
        self.storage.write(part, _parquet_bytes(table))


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
    """Images that need no more work: rendered, or refused for a reason a rerun cannot change."""
    table = read_metadata(storage, ["key", "error"]).to_pylist()
    return frozenset(r["key"] for r in table if r["error"] is None or not r["error"].startswith("InternalError"))


def compact(storage: Storage) -> pa.Table:
    """Rewrite the metadata parts as one table with each image once (its newest success, else
    its newest error); returns it."""
    parts = metadata_parts(storage)
    table = read_metadata(storage)
    best: dict[str, dict[str, Any]] = {}
    for row in table.to_pylist():
        current = best.get(row["key"])
        rank = (row["error"] is None, row["committed_at"] or 0)
        if current is None or rank > (current["error"] is None, current["committed_at"] or 0):
            best[row["key"]] = row
    rows = sorted(best.values(), key=lambda r: (r["id"], r["index"]))
    compacted = pa.Table.from_pylist(rows, schema=METADATA_SCHEMA)
    storage.write(f"metadata/part-{uuid.uuid4().hex}.parquet", _parquet_bytes(compacted))
    for part in parts:
        storage.fs.rm(part)
    return compacted
