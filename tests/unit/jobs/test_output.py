"""Job output is exactly once as each format's reader sees it (jobs/output.py), whatever Ray
re-ran: the same batch twice, the same images in two differently grouped batches, a crashed
attempt's shard."""

from __future__ import annotations

import io
import tarfile

import pyarrow.parquet as pq
import pytest

from cluster.storage import Storage
from jobs.output import OutputSink, finalize, read_metadata


def rows(keys):
    return [{"key": k, "id": k.split("/")[0], "index": int(k.split("/")[1]), "prompt": "p", "negative_prompt": None,
             "seed": 1, "model": "m", "width": 8, "height": 8, "steps": 1, "guidance": 1.0, "error": None,
             "render_s": 0.1} for k in keys]


def commit(sink, keys):
    sink.commit(rows(keys), {k: f"png-of-{k}".encode() for k in keys})


def samples(storage: Storage, fmt: str) -> list[str]:
    """Every image key as the format's own reader sees it (shards/data files, not the metadata)."""
    if fmt == "files":
        return sorted(p.split("/images/")[1][:-4] for p in storage.fs.find(storage.path("images")))
    if fmt == "webdataset":
        names = []
        for shard in storage.fs.ls(storage.path("shards"), detail=False):
            with tarfile.open(fileobj=io.BytesIO(storage.fs.cat_file(shard))) as tar:
                names += [m.name[:-4].replace("_", "/") for m in tar.getmembers() if m.name.endswith(".png")]
        return sorted(names)
    keys = []
    for part in storage.fs.ls(storage.path("data"), detail=False):
        keys += pq.read_table(io.BytesIO(storage.fs.cat_file(part)), columns=["key"]).column("key").to_pylist()
    return sorted(keys)


@pytest.mark.parametrize("fmt", ["files", "webdataset", "parquet"])
def test_a_batch_run_twice_overwrites(tmp_path, fmt):
    sink = OutputSink(str(tmp_path), fmt)
    commit(sink, ["a/0", "a/1", "b/0"])
    once = storage_files(tmp_path)
    commit(sink, ["b/0", "a/1", "a/0"])  # the same batch again (a retry), in another order
    assert storage_files(tmp_path) == once  # overwritten under the same names, nothing added
    table = finalize(Storage(str(tmp_path)), fmt, compact_parts=False)
    assert sorted(table.column("key").to_pylist()) == ["a/0", "a/1", "b/0"]
    assert samples(Storage(str(tmp_path)), fmt) == ["a/0", "a/1", "b/0"]


def storage_files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("fmt", ["files", "webdataset", "parquet"])
def test_regrouped_batches_and_orphans_read_once(tmp_path, fmt):
    storage = Storage(str(tmp_path))
    sink = OutputSink(str(tmp_path), fmt)
    commit(sink, ["a/0", "a/1"])
    commit(sink, ["a/1", "b/0"])  # a/1 again, grouped with another image
    commit(sink, ["c/0"])
    if fmt != "files":  # a crashed attempt's shard that no metadata points to
        folder = "shards" if fmt == "webdataset" else "data"
        storage.write(f"{folder}/deadbeef.{'tar' if fmt == 'webdataset' else 'parquet'}",
                      storage.read(next(p for p in storage.fs.ls(storage.path(folder), detail=False))
                                   .split(str(tmp_path) + "/")[1]))
    table = finalize(storage, fmt, compact_parts=False)
    assert sorted(table.column("key").to_pylist()) == ["a/0", "a/1", "b/0", "c/0"]
    assert samples(storage, fmt) == ["a/0", "a/1", "b/0", "c/0"]
    assert read_metadata(storage).num_rows == 4  # the metadata as read from disk, too
    for row in read_metadata(storage).to_pylist():  # every path points at a file holding that image
        assert storage.exists(row["path"].split("#")[0])
