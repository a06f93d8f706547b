"""The AceData door without a server: its validation, sizes, aliases and bodies, over the real
task layer with a FAKE dispatcher. End to end with the real SDK: tests/contract/test_acedata_sdk.py."""

from __future__ import annotations

import asyncio
import base64

import pytest

from cluster.spec.errors import ErrorCode, RenderError
from serve.doors.acedata.protocol import ERRORS
from serve.edge.errors import ErrorKind, ServiceError, message, reason
from tests.unit.serve.fakes import caller, doors, png


@pytest.fixture
def door(tmp_path):
    return doors(tmp_path)


def images(door, body, key_id="key-a"):
    return asyncio.run(door.acedata.images(caller(body, key_id)))


def retrieve(door, body, key_id="key-a"):
    return asyncio.run(door.acedata.retrieve(caller(body, key_id)))


@pytest.mark.parametrize(("body", "kind", "words"), [
    ([1, 2], ErrorKind.MALFORMED, "JSON object"),
    ({"action": "generate"}, ErrorCode.EMPTY_PROMPT, "prompt"),
    ({"action": "generate", "prompt": "  "}, ErrorCode.EMPTY_PROMPT, "prompt"),
    ({"action": "paint", "prompt": "x"}, ErrorCode.INVALID_PARAMETER, "action must be generate or edit"),
    ({"action": "generate", "prompt": "x", "model": "dall-e-3"}, ErrorCode.MODEL_NOT_FOUND, "dall-e-3"),
    ({"action": "generate", "prompt": "x", "model": "flux-kontext-pro"}, ErrorCode.INVALID_PARAMETER, "edits images: use action edit"),
    ({"action": "edit", "prompt": "x", "model": "flux-dev"}, ErrorCode.INVALID_PARAMETER, "image_url is required"),
    ({"action": "generate", "prompt": "x", "mask_image_url": "data:,"}, ErrorCode.INVALID_PARAMETER,
     "mask_image_url applies to action edit only"),
    ({"action": "edit", "prompt": "x", "model": "flux-kontext-pro"}, ErrorCode.INVALID_PARAMETER, "image_url is required"),
    ({"action": "generate", "prompt": "x", "size": "big"}, ErrorCode.INVALID_PARAMETER, "size must be WxH"),
    ({"action": "generate", "prompt": "x", "size": "100x100"}, ErrorCode.INVALID_PARAMETER, "size 100*100 is not allowed"),
    ({"action": "generate", "prompt": "x", "size": "1:20"}, ErrorCode.INVALID_PARAMETER, "size 1:20 is outside the aspect ratios"),
    ({"action": "generate", "prompt": "x", "count": 9}, ErrorCode.INVALID_PARAMETER, "count must be 1..4"),
    ({"action": "generate", "prompt": "x", "count": 1.5}, ErrorCode.INVALID_PARAMETER, "count must be an integer"),
    ({"action": "generate", "prompt": "x", "count": "2"}, ErrorCode.INVALID_PARAMETER, "count must be an integer"),
    ({"action": "generate", "prompt": 5}, ErrorCode.INVALID_PARAMETER, "prompt must be a string"),
    ({"action": "generate", "prompt": "x", "async": "yes"}, ErrorCode.INVALID_PARAMETER, "async must be a boolean"),
    ({"action": "generate", "prompt": "x", "callback_url": "ftp://example.com/hook"}, ErrorCode.INVALID_PARAMETER,
     "callback_url must be an http(s)"),
    ({"action": "generate", "prompt": "x", "callback_url": "http://169.254.169.254/hook"}, ErrorCode.INVALID_PARAMETER,
     "link-local"),
    ({"action": "edit", "prompt": "x", "model": "flux-kontext-pro", "image_url": "http://10.0.0.5/a.png"},
     ErrorCode.INVALID_PARAMETER, "non-public address"),
    ({"action": "edit", "prompt": "x", "model": "flux-kontext-pro", "image_url": "data:image/png;base64,AAAA"},
     ErrorCode.INVALID_PARAMETER, "not a PNG, JPEG or WebP"),
    # Three inputs that were answered 500.
    ({"action": "generate", "prompt": "x", "size": "1" * 400 + ":1"}, ErrorCode.INVALID_PARAMETER, "size must be WxH"),
    ({"action": "edit", "prompt": "x", "model": "flux-kontext-pro", "image_url": "http://example.com:99999/a.png"},
     ErrorCode.INVALID_PARAMETER, "image_url: URL is not a valid http(s) URL"),
    ({"action": "generate", "prompt": "x", "callback_url": "http://["}, ErrorCode.INVALID_PARAMETER, "callback_url"),
    ({"action": "generate", "prompt": "x", "loras": [{"path": "./a\x00b.safetensors"}]}, ErrorCode.INVALID_PARAMETER,
     "control characters"),
])
def test_invalid_requests_name_the_problem(door, body, kind, words):
    error = images(door, body)
    assert isinstance(error, (ServiceError, RenderError)) and reason(error) == kind and words in message(error), error
    assert ERRORS[kind].status in (400, 404) and ERRORS[kind].code == "bad_request" or kind == ErrorCode.MODEL_NOT_FOUND
    assert not door.dispatcher.submitted  # nothing was started


def test_synchronous_generate_body(door):
    body = images(door, {"action": "generate", "prompt": "a fox", "model": "flux-pro", "size": "16:9", "count": 2,
                         "seed": 7})
    assert body["success"] is True and body["task_id"] and body["trace_id"]
    assert [image["seed"] for image in body["data"]] == [7, 8]
    assert all(image["prompt"] == "a fox" and image["timings"]["inference"] == 0.25 for image in body["data"])
    assert body["data"][0]["image_url"].startswith("http://testserver/files/tasks/")
    record = door.dispatcher.submitted[0]
    assert (record.model, record.request.width, record.request.height) == ("flux-dev", 1360, 768)


@pytest.mark.parametrize(("size", "expected"), [
    ("1:1", (1024, 1024)), ("16:9", (1360, 768)), ("9:16", (768, 1360)), ("4:3", (1168, 880)), ("3:2", (1248, 832)),
    ("1024x1792", (1024, 1792)), ("1792x1024", (1792, 1024)), (None, (1024, 1024)),
])
def test_sizes_map_to_what_the_model_renders(door, size, expected):
    body = {"action": "generate", "prompt": "x"} | ({"size": size} if size else {})
    assert images(door, body)["success"]
    request = door.dispatcher.submitted[-1].request
    assert (request.width, request.height) == expected
    ratio = expected[0] / expected[1]
    assert 0.95 < request.width * request.height / 1024 ** 2 < 1.05 or size and "x" in size
    if size and ":" in size:
        w, h = map(int, size.split(":"))
        assert abs(ratio / (w / h) - 1) < 0.02


def test_async_and_callback_answer_at_once(door):
    accepted = images(door, {"action": "generate", "prompt": "x", "async": True})
    assert set(accepted) == {"task_id", "trace_id"}
    hooked = images(door, {"action": "generate", "prompt": "x", "callback_url": "https://example.com/hook"})
    assert set(hooked) == {"task_id", "trace_id"}
    assert door.dispatcher.submitted[-1].webhook.url == "https://example.com/hook"


def test_edit_with_data_uri_and_with_our_own_signed_url(door):
    data_uri = "data:image/png;base64," + base64.b64encode(png(512, 512)).decode()
    body = images(door, {"action": "edits", "prompt": "make it red", "model": "flux-kontext-pro",
                         "image_url": data_uri})
    assert body["success"]
    own_url = body["data"][0]["image_url"].replace("http://testserver", "https://any-host.example")
    again = images(door, {"action": "edit", "prompt": "again", "model": "flux-kontext-pro", "image_url": own_url})
    assert again["success"]  # read from storage: no request to any-host.example was possible here
    first, second = door.dispatcher.submitted[-2:]
    assert door.storage.read(second.init_image_key) == door.storage.read(body["data"][0]["image_url"]
                                                                          .split("/files/")[1].split("?")[0])
    assert first.client_body["image_url"].startswith("<") and "omitted" in first.client_body["image_url"]


def test_failed_task_is_500_api_error_and_a_full_queue_or_store_503(door):
    door.dispatcher.fail_with = (ErrorCode.TIMEOUT, "the task did not finish before its deadline")
    error = images(door, {"action": "generate", "prompt": "x"})
    assert reason(error) == ErrorCode.TIMEOUT and message(error) == "the task did not finish before its deadline"
    assert (ERRORS[reason(error)].status, ERRORS[reason(error)].code) == (500, "api_error")
    door.dispatcher.full = True
    error = images(door, {"action": "generate", "prompt": "x"})
    assert reason(error) == ErrorKind.QUEUE_FULL and error.retry_after_s == 5 and ERRORS[reason(error)].status == 503
    door.dispatcher.full, door.dispatcher.store_full = False, True
    error = images(door, {"action": "generate", "prompt": "x"})
    assert reason(error) == ErrorKind.STORE_FULL and error.retry_after_s == 30 and ERRORS[reason(error)].status == 503
    assert "task store is full" in message(error)


def test_retrieve_and_batch_keep_response_present(door):
    door.dispatcher.hold = True
    pending = images(door, {"action": "generate", "prompt": "x", "async": True})
    item = retrieve(door, {"action": "retrieve", "id": pending["task_id"]})
    assert item["response"] is None and "response" in item and item["request"]["prompt"] == "x"
    door.dispatcher.hold = False
    done = images(door, {"action": "generate", "prompt": "y", "count": 2})
    batch = retrieve(door, {"action": "retrieve_batch", "ids": [pending["task_id"], done["task_id"], "nope"]})
    assert batch["count"] == 2 and [i["id"] for i in batch["items"]] == [pending["task_id"], done["task_id"]]
    assert batch["items"][1]["response"] == done | {"trace_id": done["trace_id"]}


def test_retrieve_errors_and_ownership(door):
    mine = images(door, {"action": "generate", "prompt": "x"})
    other = retrieve(door, {"action": "retrieve", "id": mine["task_id"]}, key_id="key-b")
    assert reason(other) == ErrorKind.NOT_FOUND
    batch = retrieve(door, {"action": "retrieve_batch", "ids": [mine["task_id"]]}, key_id="key-b")
    assert batch == {"items": [], "count": 0}
    assert reason(retrieve(door, {"action": "retrieve"})) == ErrorCode.INVALID_PARAMETER
    assert reason(retrieve(door, {"action": "delete", "id": "x"})) == ErrorCode.INVALID_PARAMETER
    assert reason(retrieve(door, {"action": "retrieve_batch", "ids": "x"})) == ErrorCode.INVALID_PARAMETER
