"""Job output (jobs/output/shard_writer.py, assembled from units' parts) as its readers see it: the real Hugging Face `datasets` loaders,
the `webdataset` package and pyarrow load each format as written, with no conversion; a shard
rendered twice (a retried task, a rerun) rewrites the same files with the same images. Written
by the render actor without Ray, with the FAKE engine (solid colours, no model)."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from cluster.storage.results import Storage
from jobs.driver.plan import ShardPlan
from jobs.driver.spec import RowDefaults
from jobs.output.layout import read_metadata, read_stats
from jobs.output.shard_writer import remove_staging
from jobs.worker.unit_worker import UnitWorker
from tests.factories import render_shard

ROWS = [{"id": f"r{i}", "prompt": f"prompt {i}", "seed": i, "n": 1} for i in range(5)] + [
    {"id": "bad", "prompt": None, "seed": 1, "n": 1}]
SHARDS = [(0, 3), (3, 6)]  # two shards of three rows; the second holds the bad row


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def write_output(tmp_path, fmt: str) -> Storage:
    prompts = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), prompts)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"models": {"flux-schnell": {"source": "fake:flux", "warmup": False}}}))
    worker = UnitWorker(str(config), str(tmp_path / fmt), "png", batch_size=2, job_seed=0,
                        defaults=RowDefaults(width=256, height=320, steps=1))
    for index, (start, stop) in enumerate(SHARDS):
        render_shard(worker, ShardPlan(index, str(prompts), start, stop, stop - start), fmt)
    return Storage(str(tmp_path / fmt))


def files_of(storage: Storage) -> list[str]:
    return sorted(storage.fs.find(storage.root))


def images_of(storage: Storage) -> dict[str, str]:
    return {r["key"]: r["sha256"] for r in read_metadata(storage).to_pylist()}


def load(fmt: str, storage: Storage, cache):
    import datasets

    out = storage.root
    if fmt == "files":
        return datasets.load_dataset("imagefolder", data_dir=out, split="train", cache_dir=str(cache))
    if fmt == "webdataset":
        return datasets.load_dataset("webdataset", data_files=f"{out}/shards/*.tar", split="train", cache_dir=str(cache))
    return datasets.load_dataset("parquet", data_files=f"{out}/data/*.parquet", split="train", cache_dir=str(cache))


@pytest.mark.parametrize("fmt", ["files", "webdataset", "parquet"])
def test_hugging_face_datasets_loads_every_format_as_written(tmp_path, fmt):
    storage = write_output(tmp_path, fmt)
    loaded = load(fmt, storage, tmp_path / "cache")
    assert loaded.num_rows == 5  # the rendered images; the bad row is a metadata row only
    image_column, meta = ("png", lambda r: r["json"]) if fmt == "webdataset" else ("image", lambda r: r)
    assert type(loaded.features[image_column]).__name__ == "Image"  # decoded as images, no cast
    rows = {r["key"]: r for r in read_metadata(storage).to_pylist()}
    for sample in loaded:
        row = rows[meta(sample)["key"]]
        assert (meta(sample)["prompt"], meta(sample)["seed"]) == (row["prompt"], row["seed"])
        assert np.asarray(sample[image_column]).shape == (320, 256, 3)


def test_the_webdataset_package_iterates_the_shards(tmp_path):
    import webdataset as wds

    storage = write_output(tmp_path, "webdataset")
    shards = sorted(storage.fs.glob(storage.path("shards/*.tar")))
    samples = list(wds.WebDataset(shards, shardshuffle=False).decode("pil").to_tuple("png", "json", "__key__"))
    assert len(samples) == 5 and len({key for *_, key in samples}) == 5
    assert all("." not in key and image.size == (256, 320) and meta["key"].replace("/", "_") == key
               for image, meta, key in samples)
    assert len({tuple(sorted(meta)) for _, meta, _ in samples}) == 1  # every sample has the same fields


@pytest.mark.parametrize("fmt", ["files", "webdataset", "parquet"])
def test_metadata_is_one_table_with_failures_and_shard_stats(tmp_path, fmt):
    storage = write_output(tmp_path, fmt)
    table = pq.read_table(storage.path("metadata"))  # every shard's metadata, as pyarrow reads a folder
    assert table.num_rows == 6 and sorted(table.column("shard").unique().to_pylist()) == ["000000", "000001"]
    [bad] = [r for r in table.to_pylist() if r["error_code"]]
    assert (bad["id"], bad["error_code"], bad["path"]) == ("bad", "empty_prompt", None)
    stats = read_stats(storage)
    assert [(s.images, s.rendered, s.failed) for _, s in sorted(stats.items())] == [(3, 3, 0), (3, 2, 1)]
    assert all(s.bytes > 0 and len(s.sha256) == 64 for s in stats.values())
    if fmt != "files":  # the data file's sha256 is what the stats say
        folder, suffix = ("shards", "tar") if fmt == "webdataset" else ("data", "parquet")
        data = storage.read(f"{folder}/000001.{suffix}")
        assert hashlib.sha256(data).hexdigest() == stats["000001"].sha256


@pytest.mark.parametrize("fmt", ["files", "webdataset", "parquet"])
def test_a_shard_rendered_again_rewrites_the_same_files(tmp_path, fmt):
    storage = write_output(tmp_path, fmt)
    names, images = files_of(storage), images_of(storage)
    write_output(tmp_path, fmt)  # every shard again: a retried task, or a rerun without stats
    assert files_of(storage) == names and images_of(storage) == images  # the same names, the same images
    assert len(images) == 6


@pytest.mark.parametrize("fmt", ["files", "webdataset", "parquet"])
def test_staging_files_of_writers_killed_mid_write_are_removed(tmp_path, fmt):
    """A SIGKILLed writer leaves its hidden staging file; the shard's next commit (files) or the
    end of the run (the flat folders) removes it, and nothing else."""
    storage = write_output(tmp_path, fmt)
    names = files_of(storage)
    stale = {"files": ["images/000001/.r4_0-0.png.0badc0de.tmp"],
             "webdataset": ["shards/.000001.tar.0badc0de.tmp"],
             "parquet": ["data/.000001.parquet.0badc0de.tmp"]}[fmt]
    stale += ["metadata/.000001.parquet.0badc0de.tmp", "stats/.000001.json.0badc0de.tmp", ".manifest.json.0badc0de.tmp"]
    for key in stale:
        (tmp_path / fmt / key).write_bytes(b"half a file")
    write_output(tmp_path, fmt)  # the run again: each shard commits, then the run ends
    assert remove_staging(storage, fmt) == len(stale) - (fmt == "files")
    assert files_of(storage) == names
