"""The shared weights cache (cluster/weights/shared_cache.py) under concurrency: processes that
start together fetch one copy between them; a downloader killed mid-download costs only the
files it was on; a source updated while its old version is loaded leaves that version whole.

The processes are real (`python -c`), reading a slow source: a local folder behind an fsspec
filesystem that takes a set time per file, so that downloads overlap as they do from S3.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.weights.shared_cache import CacheError, fetch

# `slowfile:///path`: the local file at /path, after `delay_s` times (its index + 1) a file.
FETCH = """
import json, sys, time
from pathlib import Path
import fsspec
from fsspec.implementations.local import LocalFileSystem

class SlowFiles(LocalFileSystem):
    protocol = ("slowfile",)
    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("slowfile://"))
    def cat_file(self, rpath, start=None, end=None, **kwargs):
        time.sleep(float(sys.argv[3]) * (int(Path(rpath).stem[-1]) + 1 if sys.argv[4] == "staggered" else 1))
        return super().cat_file(rpath, start=start, end=end, **kwargs)

fsspec.register_implementation("slowfile", SlowFiles, clobber=True)
from cluster.weights.shared_cache import fetch
got = fetch(sys.argv[1], Path(sys.argv[2]))
print(json.dumps({"path": str(got.path), "fetched": got.fetched_bytes, "waited": got.waited_s}))
"""
FILE_BYTES = 64 * 1024


def source(tmp_path: Path, files: int = 4) -> Path:
    folder = tmp_path / "source"
    (folder / "unet").mkdir(parents=True)
    for i in range(files):
        (folder / "unet" / f"part{i}.safetensors").write_bytes(bytes([i]) * FILE_BYTES)
    return folder


def start(folder: Path, cache: Path, delay_s: float, mode: str = "even", lease_s: float = 60) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", FETCH, f"slowfile://{folder}", str(cache), str(delay_s), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"RAYDIANT_CACHE_LEASE_S": str(lease_s)})


def outcome(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return json.loads(out)


def versions(cache: Path) -> list[Path]:
    return [p for p in cache.glob("*/versions/*") if p.is_dir()]


def test_processes_starting_together_fetch_one_copy(tmp_path):
    folder, cache = source(tmp_path), tmp_path / "cache"
    processes = [start(folder, cache, delay_s=3.0) for _ in range(4)]  # 3 s: they all start before it ends
    while any(p.poll() is None for p in processes):  # no version is ever seen partial
        assert all((v / ".complete").exists() for v in versions(cache))
        time.sleep(0.05)
    results = [outcome(p) for p in processes]
    assert len({r["path"] for r in results}) == 1
    assert sum(r["fetched"] for r in results) == 4 * FILE_BYTES  # one copy between the four
    assert max(r["waited"] for r in results) > 0  # they overlapped: someone waited for the download
    copy = Path(results[0]["path"])
    assert sorted(p.name for p in (copy / "unet").iterdir()) == [f"part{i}.safetensors" for i in range(4)]
    assert (copy / "unet" / "part3.safetensors").read_bytes() == bytes([3]) * FILE_BYTES


def test_a_downloader_killed_mid_download_costs_only_the_files_it_was_on(tmp_path):
    folder, cache = source(tmp_path), tmp_path / "cache"
    # File i takes (i + 1) s: the first is whole after 1 s, the last after 4 s.
    first = start(folder, cache, delay_s=1.0, mode="staggered", lease_s=2)
    deadline = time.monotonic() + 30
    while not list(cache.glob("*/staging/*/unet/*.safetensors")):  # whole files (partial ones end otherwise)
        assert first.poll() is None and time.monotonic() < deadline, "no file fetched whole in time"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    kept = len(list(cache.glob("*/staging/*/unet/*.safetensors")))
    assert 1 <= kept < 4, "the kill did not land mid-download"

    second = start(folder, cache, delay_s=0.0, lease_s=2)  # waits for the dead lease to expire
    result = outcome(second)
    assert result["fetched"] == (4 - kept) * FILE_BYTES
    copy = Path(result["path"])
    assert sorted(p.name for p in (copy / "unet").iterdir()) == [f"part{i}.safetensors" for i in range(4)]
    assert all((copy / "unet" / f"part{i}.safetensors").read_bytes() == bytes([i]) * FILE_BYTES for i in range(4))


def test_a_source_updated_while_loaded_leaves_the_old_version_whole(tmp_path):
    folder, cache = source(tmp_path), tmp_path / "cache"
    old = fetch(f"file://{folder}", cache)
    (folder / "unet" / "part0.safetensors").write_bytes(b"new weights")
    new = fetch(f"file://{folder}", cache)
    assert new.path != old.path and new.fetched_bytes > 0
    assert (old.path / "unet" / "part0.safetensors").read_bytes() == bytes([0]) * FILE_BYTES
    assert (new.path / "unet" / "part0.safetensors").read_bytes() == b"new weights"
    again = fetch(f"file://{folder}", cache)
    assert (again.path, again.fetched_bytes) == (new.path, 0)


def test_a_source_that_cannot_be_listed_is_named(tmp_path):
    with pytest.raises(CacheError, match="no files at"):
        (tmp_path / "empty").mkdir()
        fetch(f"file://{tmp_path / 'empty'}", tmp_path / "cache")
    with pytest.raises(CacheError, match="cannot open nosuchproto://x"):
        fetch("nosuchproto://x", tmp_path / "cache")


# A process that takes a version and keeps it (a replica with its pipeline loaded) until killed.
HOLD = """
import sys, time
from pathlib import Path
from cluster.weights.shared_cache import fetch
print(fetch(sys.argv[1], Path(sys.argv[2])).path, flush=True)
time.sleep(600)
"""


def test_old_versions_are_collected_once_no_process_reads_them(tmp_path):
    folder, cache = source(tmp_path), tmp_path / "cache"
    lapse = {"RAYDIANT_CACHE_LEASE_S": "1"}  # the readers' leases lapse 1 s after their process dies
    reader = subprocess.Popen([sys.executable, "-c", HOLD, f"file://{folder}", str(cache)],
                              stdout=subprocess.PIPE, text=True, env=os.environ | lapse)
    try:
        v1 = Path(reader.stdout.readline().strip())
        (folder / "unet" / "part0.safetensors").write_bytes(b"new weights")
        v2 = fetch(f"file://{folder}", cache)  # a new version while v1 is loaded elsewhere
        assert v2.fetched_bytes > 0 and (v1 / "unet" / "part0.safetensors").read_bytes() == bytes([0]) * FILE_BYTES
    finally:
        reader.kill()
        reader.wait()
    time.sleep(1.5)  # its lease lapses: no process reads v1 any more
    (folder / "unet" / "part1.safetensors").write_bytes(b"newer weights")
    v3 = fetch(f"file://{folder}", cache)
    assert not v1.exists()  # collected by the process that fetched the next version
    assert v2.path.exists()  # this process still holds v2 (it took it, and lives)
    assert sorted(p.name for p in versions(cache)) == sorted([v2.path.name, v3.path.name])
    assert not list(cache.glob("*/trash/*"))
