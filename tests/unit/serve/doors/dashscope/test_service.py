"""The DashScope door without a server: validation, ownership and bodies over the real task
layer with a FAKE dispatcher. End to end with the real SDKs: tests/contract/test_dashscope_sdk*.py."""

from __future__ import annotations

import asyncio

import pytest

from cluster.spec.errors import ErrorCode, RenderError
from serve.doors.dashscope.protocol import ERRORS
from serve.edge.errors import ErrorKind, ServiceError, message, reason
from tests.unit.serve.fakes import caller, doors


@pytest.fixture
def door(tmp_path):
    return doors(tmp_path)


def create(door, body, key_id="key-a", sync=False, edit=False):
    return asyncio.run(door.dashscope.create(caller(body, key_id), sync, edit))


@pytest.mark.parametrize(("body", "status", "code", "words"), [
    ({"model": "flux-schnell", "input": {"prompt": "x"}, "parameters": {"size": "100*100"}}, 400, "InvalidParameter", "size 100*100"),
    ({"model": "flux-schnell", "input": {"prompt": "x"}, "parameters": {"size": "1024*1792"}}, 400, "InvalidParameter", "not allowed"),
    ({"model": "flux-schnell", "input": {"prompt": "x"}, "parameters": {"size": "big"}}, 400, "InvalidParameter", "W*H"),
    ({"model": "flux-schnell", "input": {"prompt": "x"}, "parameters": {"steps": 0}}, 400, "InvalidParameter", "steps must be"),
    ({"model": "flux-schnell", "input": {"prompt": "x"}, "parameters": {"n": 5}}, 400, "InvalidParameter", "n must be 1..4"),
    ({"model": "flux-schnell", "input": {"prompt": "x"}, "parameters": {"n": "2"}}, 400, "InvalidParameter", "parameters.n must be an integer"),
    ({"model": "flux-schnell", "input": {"prompt": "x"}, "parameters": {"seed": -1}}, 400, "InvalidParameter", "seed must be"),
    ({"model": "stable-diffusion-xl", "input": {"prompt": "x"}, "parameters": {"scale": 30}}, 400, "InvalidParameter", "scale must be 1..15"),
    ({"model": "flux-schnell", "input": {"prompt": "x"}, "parameters": {"guidance": "high"}}, 400, "InvalidParameter", "parameters.guidance"),
    ({"model": "flux-schnell", "input": {"prompt": "x"}, "parameters": []}, 400, "InvalidParameter", "parameters must be an object"),
    ({"model": "flux-schnell", "input": {"prompt": "x"}, "parameters": {"callback_url": "http://10.0.0.1/h"}}, 400, "InvalidParameter", "non-public"),
    ({"model": "flux-schnell", "input": {}}, 400, "BadRequest.EmptyInput", "prompt"),
    ({"model": "flux-schnell", "input": {"prompt": " "}}, 400, "BadRequest.EmptyInput", "prompt"),
    ({"model": "flux-schnell"}, 400, "BadRequest.EmptyInput", "input"),
    ({"input": {"prompt": "x"}}, 400, "BadRequest.EmptyModel", "model"),
    ({"model": 7, "input": {"prompt": "x"}}, 400, "InvalidParameter", "model must be a string"),
    ({"model": "dall-e-3", "input": {"prompt": "x"}}, 404, "ModelNotFound", "dall-e-3"),
    ({"model": "flux-kontext", "input": {"prompt": "x"}}, 400, "InvalidParameter", "image2image"),
    (None, 400, "InvalidParameter", "JSON object"),
])
def test_request_errors(door, body, status, code, words):
    error = create(door, body)
    assert isinstance(error, (ServiceError, RenderError)), error
    assert (ERRORS[reason(error)].status, ERRORS[reason(error)].code) == (status, code)
    assert words in message(error)
    assert not door.dispatcher.submitted


def test_edit_route_needs_an_image(door):
    error = create(door, {"model": "flux-kontext", "input": {"prompt": "x"}}, edit=True)
    assert reason(error) == ErrorCode.INVALID_PARAMETER and "image_url is required" in message(error)


def test_create_async_then_sync_bodies(door):
    accepted = create(door, {"model": "flux-schnell", "input": {"prompt": "x"}, "parameters": {"n": 2, "seed": 4}})
    assert accepted["output"]["task_status"] == "PENDING" and accepted["request_id"]
    done = create(door, {"model": "flux-schnell", "input": {"prompt": "x"}, "parameters": {"n": 2, "seed": 4}},
                  sync=True)
    output = done["output"]
    assert output["task_status"] == "SUCCEEDED" and [r["seed"] for r in output["results"]] == [4, 5]
    assert output["task_metrics"] == {"TOTAL": 2, "SUCCEEDED": 2, "FAILED": 0} and done["usage"] == {"image_count": 2}
    assert "code" not in done and "code" not in output


def test_failed_task_body_has_code_inside_output(door):
    door.dispatcher.fail_with = (ErrorCode.TIMEOUT, "too slow")
    done = create(door, {"model": "flux-schnell", "input": {"prompt": "x"}}, sync=True)
    assert done["output"]["task_status"] == "FAILED" and done["output"]["code"] == "InternalError.Timeout"
    assert "code" not in done


def test_full_queue_is_503_with_retry_after(door):
    door.dispatcher.full = True
    error = create(door, {"model": "flux-schnell", "input": {"prompt": "x"}})
    assert (ERRORS[reason(error)].status, ERRORS[reason(error)].code, error.retry_after_s) == (503, "ServiceUnavailable", 5)


def test_ownership_fetch_cancel_list(door):
    door.dispatcher.hold = True
    task_id = create(door, {"model": "flux-schnell", "input": {"prompt": "x"}})["output"]["task_id"]
    theirs = asyncio.run(door.dashscope.fetch(caller(key_id="key-b"), task_id))
    assert theirs["output"]["task_status"] == "UNKNOWN"
    refused = asyncio.run(door.dashscope.cancel(caller(key_id="key-b"), task_id))
    assert reason(refused) == ErrorKind.NOT_FOUND
    listed = asyncio.run(door.dashscope.list(caller(key_id="key-b"), {}))
    assert listed["total"] == 0 and listed["tasks"] == []
    mine = asyncio.run(door.dashscope.list(caller(key_id="key-a"), {}))
    assert mine["total"] == 1 and mine["tasks"][0]["task_id"] == task_id
    assert asyncio.run(door.dashscope.fetch(caller(key_id="key-a"), task_id))["output"]["task_status"] == "PENDING"
    assert set(asyncio.run(door.dashscope.cancel(caller(key_id="key-a"), task_id))) == {"request_id"}
    assert asyncio.run(door.dashscope.fetch(caller(key_id="key-a"), task_id))["output"]["task_status"] == "CANCELED"
    assert door.dispatcher.ended_records[-1].task_id == task_id  # its webhook (if any) is told


def test_an_ended_task_cannot_be_canceled(door):
    task_id = create(door, {"model": "flux-schnell", "input": {"prompt": "x"}})["output"]["task_id"]
    error = asyncio.run(door.dashscope.cancel(caller(), task_id))
    assert (ERRORS[reason(error)].code, ERRORS[reason(error)].status) == ("UnsupportedOperation", 400)
    assert "SUCCEEDED" in message(error)


def test_list_rejects_bad_paging(door):
    assert asyncio.run(door.dashscope.list(caller(), {"page_size": "500"})).kind == ErrorCode.INVALID_PARAMETER
    assert asyncio.run(door.dashscope.list(caller(), {"start_time": "yesterday"})).kind == ErrorCode.INVALID_PARAMETER
    for huge in ("9" * 30, "9" * 5000):  # were 500s: an offset past 64 bits, a number past int()'s digits
        assert asyncio.run(door.dashscope.list(caller(), {"page_no": huge})).kind == ErrorCode.INVALID_PARAMETER


def test_record_keeps_the_resolved_request_whole(door):
    create(door, {"model": "stable-diffusion-xl", "input": {"prompt": "x", "negative_prompt": "blur"},
                  "parameters": {"size": "512*768", "scale": 7, "steps": 3, "seed": 9,
                                 "add_sampling_metadata": False, "callback_url": "https://receiver.example/h"}})
    record = door.dispatcher.submitted[0]
    assert record.request.negative_prompt == "blur" and record.request.guidance == 7.0
    assert (record.request.width, record.request.height, record.request.steps, record.request.seed) == (512, 768, 3, 9)
    assert record.request.add_sampling_metadata is False and record.api == "dashscope"
    assert record.webhook.url == "https://receiver.example/h"


def test_a_key_past_its_share_of_the_task_store_is_refused_and_others_are_not(tmp_path):
    """One key, within its rate limit, must not fill the task store that every key shares: past
    `max_kept_per_key` records it gets 429 with a reason and a retry delay; another key gets in."""
    door = doors(tmp_path, max_kept_per_key=2)
    body = {"model": "flux-schnell", "input": {"prompt": "a fox"}}
    for _ in range(2):
        assert create(door, body)["output"]["task_status"] == "PENDING"  # async: taken
    refused = create(door, body)
    assert isinstance(refused, ServiceError) and reason(refused) == ErrorKind.RATE_LIMITED
    assert ERRORS[reason(refused)].status == 429 and refused.retry_after_s == 30
    assert message(refused) == ("this key keeps 2 tasks, its share of the task store (2); new tasks are refused "
                                "until some expire (after 86400 s)")
    assert len(door.dispatcher.submitted) == 2  # nothing stored for the refused one
    assert create(door, body, key_id="key-b")["output"]["task_status"] == "PENDING"
