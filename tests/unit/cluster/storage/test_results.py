"""Storage keys cannot escape the root; signed URLs verify only as issued and until expiry."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import pytest

from cluster.storage.results import Storage, StorageError, safe_key


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "", ".", "a\\b", "a/\x00"])
def test_unsafe_keys_refused(key):
    with pytest.raises(StorageError):
        safe_key(key)


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    storage = Storage(str(tmp_path), signing_key=b"k")
    storage.write("tasks/t/0.png", b"data")
    assert storage.read("tasks/t/0.png") == b"data"
    assert [p.name for p in (tmp_path / "tasks" / "t").iterdir()] == ["0.png"]


def test_a_streamed_file_appears_whole_or_not_at_all(tmp_path):
    storage = Storage(str(tmp_path))
    with storage.open_atomic("shards/000000.tar") as f:
        f.write(b"first half ")
        assert not storage.exists("shards/000000.tar")  # a reader sees nothing before the end
        f.write(b"second half")
    assert storage.read("shards/000000.tar") == b"first half second half"
    with pytest.raises(RuntimeError), storage.open_atomic("shards/000001.tar") as f:
        f.write(b"half")
        raise RuntimeError("the task died")
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["000000.tar"]


def test_signed_url_round_trip_and_expiry(tmp_path):
    storage = Storage(str(tmp_path), signing_key=b"secret", public_url="http://host:1")
    url = storage.url("tasks/t/0.png", 60)
    parsed = urlparse(url)
    assert url.startswith("http://host:1/files/tasks/t/0.png?")
    query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
    expires, signature = int(query["expires"]), query["signature"]
    assert storage.verify("tasks/t/0.png", expires, signature)
    assert storage.url_problem("tasks/t/1.png", expires, signature) == "invalid"
    assert storage.url_problem("tasks/t/0.png", expires + 1, signature) == "invalid"
    assert storage.url_problem("../tasks/t/0.png", expires, signature) == "invalid"
    assert storage.url_problem("tasks/t/0.png", expires, "é" + signature[1:]) == "invalid"  # was a 500
    past = int(time.time()) - 1
    assert storage.url_problem("tasks/t/0.png", past, storage._signature("tasks/t/0.png", past)) == "expired"
    assert storage.url_problem("tasks/t/0.png", past, "0" * len(signature)) == "invalid"  # no oracle without one


def test_remove_staging_takes_hidden_staging_files_of_one_folder_only(tmp_path):
    storage = Storage(str(tmp_path))
    for name in ("a/.x.png.1234.tmp", "a/x.png", "a/.hidden", "a/plain.tmp", "a/b/.y.png.99.tmp", ".m.json.7.tmp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert storage.remove_staging("a") == 1
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [".hidden", "b", "plain.tmp", "x.png"]
    assert (tmp_path / "a/b/.y.png.99.tmp").exists()  # one folder, not its subfolders
    assert storage.remove_staging() == 1 and storage.remove_staging("nowhere") == 0
