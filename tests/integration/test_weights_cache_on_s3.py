"""The shared weights cache (cluster/weights/shared_cache.py) against a real S3 server (moto):
files read as many concurrent ranged GETs come out byte for byte, each verified by the MD5 its
ETag gives; a source changed between its listing and the download fails the fetch, naming the
file, and leaves no file of it whole in the cache."""

from __future__ import annotations

import hashlib
import os

import fsspec
import pytest
from s3fs import S3FileSystem

from cluster.weights import shared_cache
from cluster.weights.shared_cache import CacheError, Lease, fetch
from tests.servers import s3_server

RANGE = 64 * 1024  # the cache's range size, made small: one file is many ranges


@pytest.fixture
def bucket(monkeypatch):
    with s3_server() as endpoint:
        for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                            "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})
        monkeypatch.setattr(shared_cache, "_CHUNK", RANGE)
        S3FileSystem.clear_instance_cache()
        fs = S3FileSystem(endpoint_url=endpoint)
        fs.mkdir("weights")
        yield fs
        S3FileSystem.clear_instance_cache()


def put_model(fs) -> dict[str, bytes]:
    files = {"transformer/diffusion_pytorch_model.safetensors": os.urandom(RANGE * 37 + 123),
             "vae/diffusion_pytorch_model.safetensors": os.urandom(RANGE * 3),
             "model_index.json": b'{"_class_name": "FluxPipeline"}', "empty.txt": b""}
    for rel, data in files.items():
        fs.pipe_file(f"weights/flux/{rel}", data)  # one PUT each: the ETag is the file's MD5
    return files


def test_ranged_reads_copy_every_file_whole_and_verified(bucket, tmp_path):
    files = put_model(bucket)
    listing = shared_cache.list_source("s3://weights/flux")
    assert listing["vae/diffusion_pytorch_model.safetensors"][1].strip('"') == hashlib.md5(
        files["vae/diffusion_pytorch_model.safetensors"]).hexdigest()  # what the check compares
    got = fetch("s3://weights/flux", tmp_path / "cache")
    assert got.fetched_bytes == sum(len(d) for d in files.values())
    assert {rel: (got.path / rel).read_bytes() for rel in files} == files


def test_a_source_changed_while_fetched_fails_naming_the_file(bucket, tmp_path):
    files = put_model(bucket)
    fs, base = shared_cache._open("s3://weights/flux")
    listing = shared_cache._listing(fs, base, "s3://weights/flux")
    # Replaced after the listing, by bytes of the same size: only the checksum can tell.
    name = "transformer/diffusion_pytorch_model.safetensors"
    bucket.pipe_file(f"weights/flux/{name}", os.urandom(len(files[name])))
    staging = tmp_path / "staging"
    lease = Lease(tmp_path / "v.lease")
    with pytest.raises(CacheError, match=f"{name} from .*its MD5 is not the listing's"):
        shared_cache._download(fs, base, listing, staging, lease)
    assert not (staging / name).exists()  # never made whole
    assert not list(staging.rglob("*.partial-*"))  # nor left half-written


def test_which_tags_are_a_files_md5():
    md5 = hashlib.md5(b"weights").hexdigest()
    assert shared_cache._md5_of(f'"{md5}"') == md5  # S3, one PUT
    assert shared_cache._md5_of(f'"{md5}-12"') is None  # S3 multipart: not the file's MD5
    assert shared_cache._md5_of("wjU+NQ8PrS/u4xnTmr0cAw==") == "c2353e350f0fad2feee319d39abd1c03"  # GCS md5Hash
    assert shared_cache._md5_of("1700000000.5") is None  # a local file's mtime
