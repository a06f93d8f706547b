"""The batch job reading and writing S3 (s3fs) against a real S3-compatible server on loopback."""

from __future__ import annotations

import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cluster.runtime.local_ray import connect
from cluster.storage.results import Storage
from jobs.driver.job import run_job
from jobs.driver.spec import JobSpec
from jobs.output.layout import read_metadata
from tests.servers import s3_server


@pytest.fixture(scope="module")
def s3():
    with s3_server() as endpoint:
        env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
               "FSSPEC_S3_ENDPOINT_URL": endpoint}  # fsspec applies FSSPEC_<PROTOCOL>_<ARG> to s3fs
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        import fsspec.config

        fsspec.config.set_conf_env(fsspec.config.conf)  # pick the variables up in this process too
        try:
            with connect(num_cpus=2):  # the head, so its workers, inherit the environment above
                yield endpoint
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def test_s3_round_trip_and_resume(s3):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3})
    fs.mkdir("raydiant-test")
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ["a", "b"], "prompt": ["a fox", "a cat"], "n": [2, 1]}), buf)
    fs.pipe("raydiant-test/in/prompts.parquet", buf.getvalue())

    spec = JobSpec(input="s3://raydiant-test/in/", output="s3://raydiant-test/out",
                   defaults={"width": 256, "height": 256, "steps": 1})
    first = run_job(spec)
    assert (first.rendered, first.failed) == (3, 0)
    rows = read_metadata(Storage("s3://raydiant-test/out")).to_pylist()
    assert sorted((r["id"], r["index"]) for r in rows) == [("a", 0), ("a", 1), ("b", 0)]
    image = Image.open(io.BytesIO(fs.cat(f"raydiant-test/out/{rows[0]['path']}")))
    assert image.size == (256, 256)
    assert fs.exists("raydiant-test/out/summary.json")

    again = run_job(spec)
    assert (again.rendered, again.skipped) == (0, 3)


def test_many_files_and_row_groups_into_shards_on_s3(s3, tmp_path):
    import s3fs

    config = tmp_path / "fake.yaml"  # the FAKE engine: the layout is the point, not the pixels
    config.write_text("models:\n  flux-schnell: {source: 'fake:flux', warmup: false}\n")
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3})
    fs.mkdirs("raydiant-test/many", exist_ok=True)
    for part in range(3):  # three files of three rows, in row groups of two
        buf = io.BytesIO()
        pq.write_table(pa.table({"id": [f"p{part}-{i}" for i in range(3)], "prompt": [f"a fox {i}" for i in range(3)]}),
                       buf, row_group_size=2)
        fs.pipe(f"raydiant-test/many/in/part-{part}.parquet", buf.getvalue())
    spec = JobSpec(input="s3://raydiant-test/many/in/part-*.parquet", output="s3://raydiant-test/many/out",
                   format="webdataset", shard_size=2, config=str(config), defaults={"width": 256, "height": 256})
    summary = run_job(spec)
    assert (summary.rendered, summary.shards) == (9, 6)  # two shards a file: shards never span files
    objects = sorted(p.split("/many/out/", 1)[1] for p in fs.find("raydiant-test/many/out"))
    # What the job wrote, object by object: a tar, a metadata part and a stats file per shard, and
    # the manifest and summary: 6 x 3 + 2 objects.
    assert len(objects) == 20 and objects[:2] == ["manifest.json", "metadata/000000.parquet"]
    assert sorted(r["id"] for r in read_metadata(Storage("s3://raydiant-test/many/out")).to_pylist()) == sorted(
        f"p{part}-{i}" for part in range(3) for i in range(3))
