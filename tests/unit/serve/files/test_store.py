"""Batch input files (serve/files/store.py) on a local storage: per key, streamed through checks
that keep nothing of a refused upload, listed by id order, expiring."""

from __future__ import annotations

import io
import time

import pytest

from cluster.storage.results import Storage
from serve.edge.errors import ErrorKind, ServiceError
from serve.files.store import BatchFiles, FileLimits, FileObject

LIMITS = FileLimits(max_bytes=4096, max_lines=5, max_line_bytes=100, max_per_key=3, retention_s=3600)
LINE = b'{"custom_id": "a", "method": "POST", "url": "/v1/images/generations", "body": {"prompt": "x"}}\n'


@pytest.fixture
def files(tmp_path) -> BatchFiles:
    return BatchFiles(Storage(str(tmp_path / "store")), LIMITS)


def upload(files: BatchFiles, data: bytes, key: str = "k1", purpose: str = "batch") -> FileObject | ServiceError:
    return files.create(key, io.BytesIO(data), "in.jsonl", purpose)


def stored(files: BatchFiles) -> list[str]:
    """Every file under the files folder, staging files included."""
    return sorted(p.rsplit("/", 1)[-1] for p in files.storage.fs.find(files.storage.path("files")))


def test_a_file_round_trips_for_its_key_only(files):
    created = upload(files, LINE * 3)
    assert isinstance(created, FileObject) and created.bytes == len(LINE) * 3 and created.purpose == "batch"
    assert created.expires_at == created.created_at + 3600
    assert files.get("k1", created.id) == created
    assert b"".join(files.content("k1", created.id)) == LINE * 3
    other = files.get("k2", created.id)
    assert isinstance(other, ServiceError) and other.kind == ErrorKind.NOT_FOUND  # as if unknown
    assert files.delete("k1", created.id) == {"id": created.id, "object": "file", "deleted": True}
    assert isinstance(files.get("k1", created.id), ServiceError) and stored(files) == []


@pytest.mark.parametrize(("data", "kind", "words"), [
    (b"x" * 5000, ErrorKind.BODY_TOO_LARGE, "larger than 4096 bytes"),
    (LINE[:50] * 6, None, "line 1 is longer than 100 bytes"),
    (LINE + b"y" * 101, None, "line 2 is longer than 100 bytes"),
    (b"{}\n" * 6, None, "more than 5 lines"),
    (b"{}\n" * 5 + b"{}", None, "more than 5 lines"),  # a last line without its newline counts
    (b'{"a": "\xff"}\n', None, "not UTF-8 text (line 1)"),
    (b'{"a": "\xc3', None, "ends inside a character"),
    (b"", None, "empty"),
], ids=["bytes", "first-line", "second-line", "lines", "last-line", "utf8", "utf8-end", "empty"])
def test_a_refused_upload_names_why_and_keeps_nothing(files, data, kind, words):
    refused = upload(files, data)
    assert isinstance(refused, ServiceError) and words in refused.message and refused.param == "file"
    assert refused.kind == (kind or refused.kind)
    assert stored(files) == []


def test_exactly_at_the_limits_is_taken(files):
    assert isinstance(upload(files, b"{}\n" * 5), FileObject)
    assert isinstance(upload(files, b"z" * 100 + b"\n"), FileObject)


def test_purpose_must_be_batch(files):
    refused = upload(files, LINE, purpose="fine-tune")
    assert isinstance(refused, ServiceError) and refused.param == "purpose"


def test_a_key_keeps_a_bounded_number_of_files(files):
    for _ in range(3):
        assert isinstance(upload(files, LINE), FileObject)
    full = upload(files, LINE)
    assert isinstance(full, ServiceError) and full.kind == ErrorKind.RATE_LIMITED and "delete some" in full.message
    assert isinstance(upload(files, LINE, key="k2"), FileObject)  # another key's room is its own


def test_pages_follow_upload_order_both_ways(files):
    ids = []
    for _ in range(3):
        ids.append(upload(files, LINE).id)
        time.sleep(0.002)  # ids hold the upload time in milliseconds
    newest, more = files.page("k1", 2, None, newest_first=True)
    assert [f.id for f in newest] == ids[::-1][:2] and more
    rest, more = files.page("k1", 2, newest[-1].id, newest_first=True)
    assert [f.id for f in rest] == [ids[0]] and not more
    oldest, _ = files.page("k1", 10, ids[0], newest_first=False)
    assert [f.id for f in oldest] == ids[1:]


def test_an_expired_file_is_not_found_and_goes(tmp_path):
    files = BatchFiles(Storage(str(tmp_path / "store")), FileLimits(4096, 5, 100, 3, retention_s=0))
    created = upload(files, LINE)
    assert files.page("k1", 10, None, True) == ([], False)
    assert isinstance(files.get("k1", created.id), ServiceError) and stored(files) == []


@pytest.mark.parametrize("file_id", ["../../etc/passwd", "file-xyz", "file-" + "0" * 23, "batch_123", ""])
def test_ids_not_of_ours_are_not_found_without_touching_storage(files, file_id):
    for answer in (files.get("k1", file_id), files.content("k1", file_id), files.delete("k1", file_id)):
        assert isinstance(answer, ServiceError) and answer.kind == ErrorKind.NOT_FOUND


def test_a_key_has_a_bounded_number_of_uploads_in_flight(files):
    with files.uploading("k1") as first, files.uploading("k1") as second:
        assert first is None and second is None
        with files.uploading("k1") as third, files.uploading("k2") as other:
            assert isinstance(third, ServiceError) and third.kind == ErrorKind.RATE_LIMITED and third.retry_after_s
            assert other is None  # another key's places are its own
    with files.uploading("k1") as again:  # places come back when uploads end, refused or not
        assert again is None
    assert files._uploading == {}
