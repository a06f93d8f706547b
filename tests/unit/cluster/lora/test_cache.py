"""The node's LoRA file cache (cluster/lora/cache.py): fetched once and checked to be a
safetensors file, the address rules of every server-side fetch, and an LRU by bytes. Adapters
are real (tiny, made on the spot); the HTTP server is a real one on loopback that counts hits."""

from __future__ import annotations

import os
import pickle
import time

import pytest
import torch
from safetensors.torch import save_file

from cluster.lora.cache import LoraCache, LoraUnavailable
from cluster.spec.errors import ErrorCode
from cluster.spec.loras import Lora
from cluster.storage.guarded_fetch import FetchPolicy
from tests.servers import file_server


def adapter(path, seed: int, size: int = 64) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    save_file({"transformer.x.lora_A.weight": torch.randn(size, 4, generator=generator)}, str(path))
    return path.read_bytes()


def test_a_url_is_fetched_once_per_node_and_hashed(tmp_path):
    data = adapter(tmp_path / "a.safetensors", 1)
    with file_server({"/a.safetensors": data}) as server:
        lora = Lora("style", "https", f"{server.url}/a.safetensors", 1.0)
        first = LoraCache(tmp_path / "cache", fetch_policy=FetchPolicy(allow_loopback=True)).get(lora)
        again = LoraCache(tmp_path / "cache", fetch_policy=FetchPolicy(allow_loopback=True)).get(lora)  # another replica
        assert server.hits["/a.safetensors"] == 1
    assert first.file == again.file and first.file.read_bytes() == data
    import hashlib

    assert first.sha256 == again.sha256 == hashlib.sha256(data).hexdigest()


def test_loopback_is_refused_under_the_cluster_rules_before_any_connection(tmp_path):
    with file_server({"/a.safetensors": adapter(tmp_path / "a.safetensors", 1)}) as server:
        cache = LoraCache(tmp_path / "cache", fetch_policy=FetchPolicy())  # the cluster profile
        with pytest.raises(LoraUnavailable) as refused:
            cache.get(Lora("x", "https", f"{server.url}/a.safetensors", 1.0))
        assert server.hits["/a.safetensors"] == 0
    assert refused.value.error.param == "loras" and "x: could not be fetched" in refused.value.error.message
    with pytest.raises(LoraUnavailable) as private:
        cache.get(Lora("x", "https", "http://10.1.2.3/a.safetensors", 1.0))
    # One answer for every failure: a caller learns nothing of what listens where behind us.
    assert private.value.error == refused.value.error


def test_a_pickle_or_anything_else_is_refused_whatever_its_name(tmp_path):
    pickled = tmp_path / "evil.safetensors"
    pickled.write_bytes(pickle.dumps({"transformer.x.lora_A.weight": [1.0, 2.0]}))
    empty = tmp_path / "empty.safetensors"
    save_file({}, str(empty))
    with file_server({"/evil.safetensors": pickled.read_bytes()}) as server:
        cache = LoraCache(tmp_path / "cache", fetch_policy=FetchPolicy(allow_loopback=True))
        for lora in (Lora("e", "local", str(pickled), 1.0), Lora("e", "https", f"{server.url}/evil.safetensors", 1.0),
                     Lora("e", "local", str(empty), 1.0)):
            with pytest.raises(LoraUnavailable) as refused:
                cache.get(lora)
            assert refused.value.error.code == ErrorCode.INVALID_PARAMETER and "not a safetensors file" in str(refused.value)


def test_missing_and_oversized_files(tmp_path):
    cache = LoraCache(tmp_path / "cache", max_file_bytes=1000, fetch_policy=FetchPolicy(allow_loopback=True))
    with pytest.raises(LoraUnavailable, match="no such file"):
        cache.get(Lora("m", "local", str(tmp_path / "missing.safetensors"), 1.0))
    adapter(tmp_path / "big.safetensors", 2, size=4096)
    with pytest.raises(LoraUnavailable, match="larger than 1000 bytes"):
        cache.get(Lora("big", "local", str(tmp_path / "big.safetensors"), 1.0))
    with file_server({}) as server:
        with pytest.raises(LoraUnavailable) as gone:
            cache.get(Lora("g", "https", f"{server.url}/gone.safetensors", 1.0))
        with pytest.raises(LoraUnavailable) as closed:  # nothing listens there
            cache.get(Lora("g", "https", f"{server.url.rsplit(':', 1)[0]}:1/gone.safetensors", 1.0))
    # A URL that answers 404 is the caller's to fix (not retried), and reads as one that cannot be reached.
    assert gone.value.error.code == ErrorCode.INVALID_PARAMETER and not gone.value.error.code.retryable
    assert gone.value.error == closed.value.error


def test_the_disk_cache_keeps_the_most_recently_used_within_its_bytes(tmp_path):
    files = {f"/{i}.safetensors": adapter(tmp_path / f"{i}.safetensors", i) for i in range(4)}
    size = len(files["/0.safetensors"])
    with file_server(files) as server:
        cache = LoraCache(tmp_path / "cache", max_bytes=int(2.5 * size), fetch_policy=FetchPolicy(allow_loopback=True),
                          evict_grace_s=0)  # recency alone (the grace: the next test)
        loras = [Lora(str(i), "https", f"{server.url}/{i}.safetensors", 1.0) for i in range(4)]
        for lora in loras[:3]:
            cache.get(lora)
        assert cache.cached_bytes() <= 2.5 * size  # the oldest of three went
        cache._known.clear()  # another process: it knows only the disk
        cache.get(loras[2])
        assert server.hits["/2.safetensors"] == 1  # still on disk: no second download
        cache.get(loras[0])
        assert server.hits["/0.safetensors"] == 2  # evicted earlier: fetched again


def test_a_shared_cache_never_evicts_a_file_another_process_used_within_the_grace(tmp_path):
    """Two nodes share the folder (the cluster's volume): one node's burst of new adapters does
    not delete the file the other just touched to read it (over NFS: ESTALE mid-read); once it
    has lain unused past the grace, it goes first."""
    files = {f"/{i}.safetensors": adapter(tmp_path / f"{i}.safetensors", i) for i in range(3)}
    size = len(files["/0.safetensors"])
    policy = FetchPolicy(allow_loopback=True)
    with file_server(files) as server:
        loras = [Lora(str(i), "https", f"{server.url}/{i}.safetensors", 1.0) for i in range(3)]
        reader = LoraCache(tmp_path / "shared", max_bytes=int(1.5 * size), fetch_policy=policy, evict_grace_s=60)
        other = LoraCache(tmp_path / "shared", max_bytes=int(1.5 * size), fetch_policy=policy, evict_grace_s=60)
        being_read = reader.get(loras[0]).file
        other.get(loras[1])  # over the bytes: but the reader's file was used a moment ago
        assert being_read.exists() and other.cached_bytes() == 2 * size
        past = time.time() - 61
        os.utime(being_read, (past, past))  # unused for longer than the grace
        other.get(loras[2])
        assert not being_read.exists()  # the least recently used, and no longer in use: gone
        assert other.cached_bytes() == 2 * size  # the two used within the grace stay


def test_many_first_uses_at_once_make_one_download(tmp_path):
    """Four requests want the same new adapter at the same moment: while the first download is
    held in flight, a second request reaching the server would be a duplicate (the hold ends at
    once then, and the count shows it); with the node's lock the others wait and find the file."""
    import threading
    import time

    data = adapter(tmp_path / "a.safetensors", 1)
    hits_seen = threading.Event()

    def hold(path: str) -> None:
        deadline = time.monotonic() + 1.0  # bounded: a duplicate shows up within it, or none comes
        while time.monotonic() < deadline and server.hits[path] < 2:
            hits_seen.wait(0.01)

    with file_server({"/a.safetensors": data}, hold=hold) as server:
        lora = Lora("style", "https", f"{server.url}/a.safetensors", 1.0)
        start = threading.Barrier(4)
        found = []

        def first_use() -> None:
            cache = LoraCache(tmp_path / "cache", fetch_policy=FetchPolicy(allow_loopback=True))  # a replica each
            start.wait()
            found.append(cache.get(lora).sha256)

        threads = [threading.Thread(target=first_use) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert server.hits["/a.safetensors"] == 1 and len(found) == 4 and len(set(found)) == 1


def test_an_oversized_download_is_cut_at_the_cap_and_leaves_nothing(tmp_path):
    big = adapter(tmp_path / "big.safetensors", 2, size=4096)
    with file_server({"/big.safetensors": big}) as server:
        cache = LoraCache(tmp_path / "cache", max_file_bytes=1000, fetch_policy=FetchPolicy(allow_loopback=True))
        with pytest.raises(LoraUnavailable, match="could not be fetched"):
            cache.get(Lora("big", "https", f"{server.url}/big.safetensors", 1.0))
    assert not [p for p in (tmp_path / "cache" / "files").iterdir() if not p.name.endswith(".lock")]
