"""`create_once` (cluster/storage/local_files.py): processes racing to create one file all read
the same content, and an existing file is never replaced."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from cluster.storage.local_files import create_once


def test_racing_creators_all_read_the_one_that_won(tmp_path):
    target = tmp_path / "keys" / "signing.key"
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: create_once(target, f"secret-{i}"), range(32)))
    assert target.read_text().startswith("secret-")
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in target.parent.iterdir()] == ["signing.key"]  # no staging file left


def test_an_existing_file_is_kept(tmp_path):
    target = tmp_path / "signing.key"
    target.write_text("operator's own")
    create_once(target, "generated")
    assert target.read_text() == "operator's own"
