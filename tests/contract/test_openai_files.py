"""OpenAI's Files API for batch input, driven by the real `openai` SDK: upload, retrieve, read
back, list with its cursor, delete; per key; and what is refused (the service's files here are at
most 1 MiB and 1,000 lines: tests/contract/conftest.py)."""

from __future__ import annotations

import json

import openai
import pytest

from tests.contract.conftest import FILES_KEY, OPENAI_KEY


@pytest.fixture(scope="module")
def client(service) -> openai.OpenAI:
    return openai.OpenAI(api_key=FILES_KEY, base_url=f"{service.url}/v1", max_retries=0, timeout=60)


def jsonl(count: int, prompt: str = "a lighthouse") -> bytes:
    lines = [{"custom_id": f"line-{i}", "method": "POST", "url": "/v1/images/generations",
              "body": {"model": "flux-schnell", "prompt": f"{prompt} {i}", "size": "512x512"}} for i in range(count)]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def test_a_batch_file_uploads_reads_back_lists_and_deletes(client, service):
    data = jsonl(40)
    created = client.files.create(file=("prompts.jsonl", data), purpose="batch")
    assert (created.object, created.purpose, created.bytes, created.filename) == ("file", "batch", len(data),
                                                                                  "prompts.jsonl")
    assert created.status == "processed" and created.expires_at > created.created_at
    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).read() == data
    more = [client.files.create(file=(f"more-{i}.jsonl", jsonl(2)), purpose="batch").id for i in range(3)]
    listed = client.files.list(limit=2)  # newest first, two a page: the SDK follows the cursor
    assert [f.id for f in listed.data] == more[::-1][:2] and listed.has_more
    everything = [f.id for f in client.files.list(limit=2)]
    assert everything == [*more[::-1], created.id]
    other = openai.OpenAI(api_key=OPENAI_KEY, base_url=f"{service.url}/v1", max_retries=0)
    with pytest.raises(openai.NotFoundError, match=created.id):  # another key's file is not there for it
        other.files.retrieve(created.id)
    assert created.id not in [f.id for f in other.files.list()]
    for file_id in (created.id, *more):
        deleted = client.files.delete(file_id)
        assert (deleted.id, deleted.deleted) == (file_id, True)
    with pytest.raises(openai.NotFoundError, match=f"No such File object: {created.id}"):
        client.files.content(created.id)
    assert [f.id for f in client.files.list()] == []


@pytest.mark.parametrize(("data", "purpose", "status", "words"), [
    (jsonl(1), "fine-tune", 400, "purpose must be batch"),
    (b"\xff\xfe not text\n", "batch", 400, "not UTF-8 text"),
    (b"{}\n" * 1001, "batch", 400, "more than 1000 lines"),
    (b"x" * (1024 * 1024 + 1), "batch", 413, "larger than 1048576 bytes"),
    (b"", "batch", 400, "file is empty"),
], ids=["purpose", "utf8", "lines", "bytes", "empty"])
def test_what_a_batch_file_may_not_be_is_refused_naming_it(client, data, purpose, status, words):
    with pytest.raises(openai.APIStatusError, match=words) as refused:
        client.files.create(file=("bad.jsonl", data), purpose=purpose)
    assert refused.value.status_code == status
    assert [f.id for f in client.files.list()] == []  # nothing kept


def test_malformed_uploads_and_queries_are_4xx_naming_the_problem(service):
    """What a caller can send beside the SDK's well-formed calls: never a 5xx, nothing kept."""
    import httpx

    url, auth = f"{service.url}/v1/files", {"Authorization": f"Bearer {FILES_KEY}"}
    cases = [
        ({"files": {"other": ("a.jsonl", jsonl(1))}, "data": {"purpose": "batch"}}, 400, "file is required"),
        ({"files": {"file": ("a.jsonl", b"")}, "data": {"purpose": "batch"}}, 400, "file is empty"),
        ({"files": {"file": ("a.jsonl", jsonl(1))}}, 400, "purpose is required"),
        ({"files": {"file": ("a.jsonl", jsonl(1)), "purpose": ("p.txt", b"batch")}}, 400, "Too many files"),
        ({"files": [("file", ("a.jsonl", jsonl(1))), ("file", ("b.jsonl", jsonl(1)))], "data": {"purpose": "batch"}},
         400, "multipart body"),
        ({"json": {"file": "x", "purpose": "batch"}}, 400, "multipart/form-data"),
    ]
    for kwargs, status, words in cases:
        answer = httpx.post(url, headers=auth, timeout=30, **kwargs)
        assert answer.status_code == status and words in answer.json()["error"]["message"], (kwargs, answer.text)
    for query, param in (({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"), ({"order": "up"}, "order")):
        answer = httpx.get(url, params=query, headers=auth, timeout=30)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param, answer.text
    for path in ("/file-..%2F..%2Fetc", "/%00", "/file-" + "f" * 24 + "/content"):
        assert httpx.get(url + path, headers=auth, timeout=30).status_code == 404
    assert httpx.get(url, headers=auth, timeout=30).json()["data"] == []
