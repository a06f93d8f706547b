"""The OpenAI door without a server: validation (each error names its parameter), bodies, the
error shape, and repeats joining one task, over the real task layer with a FAKE dispatcher.
End to end with the real SDK: tests/contract/test_openai_sdk.py."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from cluster.spec.errors import ErrorCode, RenderError
from serve.doors.openai.protocol import ERRORS, error_body
from serve.doors.openai.service import EditUpload
from serve.edge.errors import REASONS, ErrorKind, ServiceError, message, reason
from tests.unit.serve.fakes import caller, doors, png


@pytest.fixture
def door(tmp_path):
    return doors(tmp_path)


def generate(door, body, key=None, key_id="key-a"):
    return asyncio.run(door.openai.generate(caller(body, key_id), key))


def edit(door, fields, images, mask=None):
    return asyncio.run(door.openai.edit(caller(), EditUpload(fields, images, mask), None))


@pytest.mark.parametrize(("body", "kind", "param", "words"), [
    ([1], ErrorKind.MALFORMED, None, "JSON object"),
    ({}, ErrorCode.EMPTY_PROMPT, "prompt", "prompt must not be empty"),
    ({"prompt": 3}, ErrorCode.INVALID_PARAMETER, "prompt", "prompt must be a string"),
    ({"prompt": "x", "model": "dall-e-3"}, ErrorCode.MODEL_NOT_FOUND, "model", "dall-e-3 is not served"),
    ({"prompt": "x", "model": "flux-kontext-pro"}, ErrorCode.INVALID_PARAMETER, "model", "use /v1/images/edits"),
    ({"prompt": "x", "size": "big"}, ErrorCode.INVALID_PARAMETER, "size", "size must be WxH"),
    ({"prompt": "x", "size": "100x100"}, ErrorCode.INVALID_PARAMETER, "size", "size 100*100 is not allowed"),
    ({"prompt": "x", "n": 9}, ErrorCode.INVALID_PARAMETER, "n", "n must be 1..4"),
    ({"prompt": "x", "n": 1.5}, ErrorCode.INVALID_PARAMETER, "n", "n must be an integer"),
    ({"prompt": "x", "response_format": "jpeg"}, ErrorCode.INVALID_PARAMETER, "response_format", "url or b64_json"),
    ({"prompt": "x", "seed": "abc"}, ErrorCode.INVALID_PARAMETER, "seed", "seed must be an integer"),
    ({"prompt": "x", "steps": 1000}, ErrorCode.INVALID_PARAMETER, "steps", "steps must be 1..100"),
    ({"prompt": "x", "colour": "red"}, ErrorCode.INVALID_PARAMETER, "colour", "unknown parameter"),
    ({"prompt": "x", "image": "data:..."}, ErrorCode.INVALID_PARAMETER, "image", "images go to /v1/images/edits"),
    # Ignored fields are type-checked all the same.
    ({"prompt": "x", "user": {"id": 1}}, ErrorCode.INVALID_PARAMETER, "user", "user must be a string"),
    ({"prompt": "x", "stream": "yes"}, ErrorCode.INVALID_PARAMETER, "stream", "stream must be a boolean"),
    ({"prompt": "x", "partial_images": 1.5}, ErrorCode.INVALID_PARAMETER, "partial_images", "must be an integer"),
    ({"prompt": "x", "style": ["vivid"]}, ErrorCode.INVALID_PARAMETER, "style", "style must be a string"),
])
def test_bad_generations_name_their_parameter(door, body, kind, param, words):
    error = generate(door, body)
    assert isinstance(error, (ServiceError, RenderError)) and reason(error) == kind and words in message(error)
    assert error.param == param
    assert door.dispatcher.submitted == []  # nothing was queued


def test_error_shape_is_openais():
    body = error_body(ServiceError(ErrorCode.INVALID_PARAMETER, "size must be WxH", "size"))
    assert body == {"error": {"message": "size must be WxH", "type": "invalid_request_error", "param": "size",
                              "code": None}}
    statuses = {kind: ERRORS[kind].status for kind in (ErrorCode.INVALID_PARAMETER, ErrorKind.UNAUTHENTICATED,
                                                       ErrorCode.MODEL_NOT_FOUND, ErrorKind.RATE_LIMITED,
                                                       ErrorKind.QUEUE_FULL)}
    assert list(statuses.values()) == [400, 401, 404, 429, 503]
    assert set(ERRORS) == set(REASONS)  # every failure has an OpenAI rendering


def test_queue_full_is_503(door):
    door.dispatcher.full = True
    error = generate(door, {"prompt": "x"})
    assert ERRORS[reason(error)].status == 503 and error.retry_after_s


def test_generation_answers_urls_or_base64_with_seeds(door):
    answer = generate(door, {"prompt": "a fox", "n": 3, "size": "512x512", "seed": 40, "steps": 2,
                             "guidance": 3.5, "negative_prompt": "blur", "quality": "hd", "user": "u1"})
    assert [d["seed"] for d in answer["data"]] == [40, 41, 42]
    assert all(d["url"].startswith("http://testserver/files/tasks/") for d in answer["data"])
    request = door.dispatcher.submitted[0].request
    assert (request.width, request.height, request.steps, request.guidance, request.negative_prompt) == (
        512, 512, 2, 3.5, "blur")
    encoded = generate(door, {"prompt": "a fox", "response_format": "b64_json"})
    assert base64.b64decode(encoded["data"][0]["b64_json"]).startswith(b"\x89PNG")


def test_a_repeat_joins_the_first_task(door):
    first = generate(door, {"prompt": "same", "seed": 1})
    again = generate(door, {"prompt": "same", "seed": 1})
    other_key = generate(door, {"prompt": "same", "seed": 1}, key_id="key-b")
    different = generate(door, {"prompt": "same", "seed": 2})
    assert again == first and len(door.dispatcher.submitted) == 3
    assert other_key["data"][0]["url"] != first["data"][0]["url"]
    assert different["data"][0]["url"] != first["data"][0]["url"]
    keyed = generate(door, {"prompt": "keyed"}, key="retry-1")
    assert generate(door, {"prompt": "keyed"}, key="retry-1") == keyed
    assert len(door.dispatcher.submitted) == 4


def test_a_failed_task_is_tried_afresh(door):
    door.dispatcher.fail_with = (ErrorCode.INTERNAL, "boom")
    assert reason(failed := generate(door, {"prompt": "flaky"})) == ErrorCode.INTERNAL and message(failed) == "boom"
    assert ERRORS[ErrorCode.INTERNAL].status == 500
    door.dispatcher.fail_with = None
    assert "data" in generate(door, {"prompt": "flaky"})
    assert len(door.dispatcher.submitted) == 2


def test_edits(door):
    answer = edit(door, {"prompt": "make it blue", "model": "flux-kontext-pro", "n": "1"}, [png()])
    assert len(answer["data"]) == 1
    assert door.dispatcher.submitted[0].init_image_key  # the upload went to storage, not the record
    assert edit(door, {"prompt": "x"}, []).param == "image"
    assert "exactly one image" in edit(door, {"prompt": "x"}, [png(), png()]).message
    assert edit(door, {"prompt": "x"}, [b"not an image"]).param == "image"
    unmasked = edit(door, {"prompt": "x"}, [png()], mask=png())  # OpenAI's masks say it with transparency
    assert unmasked.param == "mask" and "no alpha channel" in unmasked.message
    # A text-to-image model on the edits route renders image to image.
    assert "data" in edit(door, {"prompt": "x", "model": "flux-dev", "strength": "0.5"}, [png()])
    assert door.dispatcher.submitted[-1].request.mode == "image" and door.dispatcher.submitted[-1].request.strength == 0.5
    assert "use /v1/images/edits" in generate(door, {"prompt": "x", "model": "flux-kontext"}).message
    # The multipart `loras` field is JSON text, read with the body's own bounds (a deep one was a 500).
    for hostile in ("[" * 100_000, '[{"path": "a", "scale": 1' + "0" * 400 + "}]", "\ud800",
                    '[{"path": "a", "scale": NaN}]', '[{"path": "a", "weight": 1}]', '"org/a"', "[" + " " * 70_000 + "]"):
        refused = edit(door, {"prompt": "x", "model": "flux-kontext-pro", "loras": hostile}, [png()])
        assert reason(refused) == ErrorCode.INVALID_PARAMETER and refused.param == "loras", refused


def test_models_list_offers_each_models_options(door):
    cards = {c["id"]: c for c in door.openai.models()["data"]}
    assert cards["flux-pro"]["alias_of"] == "flux-dev" and cards["flux-kontext"]["edit"] is True
    assert "1024x1024" in cards["flux-schnell"]["sizes"] and cards["flux-schnell"]["max_n"] == 4


@pytest.mark.parametrize("failure", ["full", "broken"])
def test_a_failed_edit_submission_leaves_no_input_file(door, failure):
    setattr(door.dispatcher, failure, True)
    if failure == "full":
        error = edit(door, {"prompt": "make it blue", "model": "flux-kontext-pro"}, [png()])
        assert ERRORS[reason(error)].status == 503
    else:
        with pytest.raises(ConnectionError):
            edit(door, {"prompt": "make it blue", "model": "flux-kontext-pro"}, [png()])
    left = [p for p in Path(door.storage.root).rglob("*") if p.is_file()]
    assert left == []  # the input image is written only once the record exists


def test_an_input_that_cannot_be_written_takes_its_record_back(door, monkeypatch):
    def broken_write(key, data):
        raise OSError("disk full")

    monkeypatch.setattr(door.storage, "write", broken_write)
    with pytest.raises(OSError):
        edit(door, {"prompt": "make it blue", "model": "flux-kontext-pro"}, [png()])
    [record] = door.dispatcher.submitted
    assert asyncio.run(door.dispatcher.store.get(record.task_id)) is None  # no record without its input


def test_an_idempotency_key_reused_with_another_body_is_a_conflict(door):
    first = generate(door, {"prompt": "a fox", "model": "flux-schnell"}, key="k-7")
    again = generate(door, {"prompt": "a fox", "model": "flux-schnell"}, key="k-7")
    assert first["data"][0]["url"] == again["data"][0]["url"] and len(door.dispatcher.submitted) == 1
    other = generate(door, {"prompt": "a wolf", "model": "flux-schnell"}, key="k-7")
    assert isinstance(other, (ServiceError, RenderError)) and reason(other) == ErrorKind.CONFLICT and other.param == "Idempotency-Key"
    assert len(door.dispatcher.submitted) == 1


# --- streamed answers (stream=True) -----------------------------------------------------------

class StreamingDispatcher:
    """The door's dispatcher for streams: tasks stay RUNNING until `finish`; previews are handed
    to listeners as a replica's would be (serve/tasks/dispatch/dispatcher.py `listen`)."""

    def __init__(self, fake):
        self.fake, self.listeners, self.done = fake, {}, asyncio.Event()

    def __getattr__(self, name):
        return getattr(self.fake, name)

    def listen(self, task_id):
        self.listeners[task_id] = asyncio.Queue()
        return self.listeners[task_id]

    def unlisten(self, task_id, queue):
        self.listeners.pop(task_id, None)

    async def wait(self, task_id, timeout_s):
        await self.done.wait()
        return await self.fake.store.get(task_id)


def streaming_door(tmp_path):
    door = doors(tmp_path)
    door.dispatcher.hold = True  # stored PENDING: nothing renders until the test says
    door.tasks.dispatcher = StreamingDispatcher(door.dispatcher)
    return door


def test_a_stream_sends_previews_as_they_come_then_the_image(tmp_path):
    from serve.replica.render_events import Preview
    from serve.tasks.store.record import ImageOutcome, TaskStatus

    door = streaming_door(tmp_path)

    async def scenario():
        events = await door.openai.generate(caller({"prompt": "a fox", "stream": True, "partial_images": 2}), None)
        received = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.05)  # the stream listens for previews now
        [task_id] = door.tasks.dispatcher.listeners
        door.tasks.dispatcher.listeners[task_id].put_nowait(Preview(index=0, partial_image_index=0, image=b"p0"))
        first = await received
        record = door.dispatcher.submitted[0]
        door.storage.write(f"tasks/{task_id}/0.png", png())
        await door.tasks.store.transition(task_id, {TaskStatus.PENDING}, status=TaskStatus.SUCCEEDED,
                                          results=[ImageOutcome(index=0, seed=record.request.seed,
                                                                key=f"tasks/{task_id}/0.png")])
        door.tasks.dispatcher.done.set()
        return first, [event async for event in events]

    first, rest = asyncio.run(scenario())
    assert (first["type"], first["partial_image_index"], base64.b64decode(first["b64_json"])) == (
        "image_generation.partial_image", 0, b"p0")
    assert [e["type"] for e in rest] == ["image_generation.completed"]
    assert base64.b64decode(rest[0]["b64_json"]) == png() and rest[0]["output_format"] == "png"


def test_a_stream_closed_before_its_image_cancels_its_task(tmp_path):
    from serve.tasks.store.record import TaskStatus

    door = streaming_door(tmp_path)

    async def scenario():
        events = await door.openai.generate(caller({"prompt": "a fox", "stream": True}), None)
        pending = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.05)
        pending.cancel()  # the client went away: the server cancels the response
        await asyncio.gather(pending, return_exceptions=True)
        await events.aclose()
        return await door.tasks.store.get(door.dispatcher.submitted[0].task_id)

    record = asyncio.run(scenario())
    assert record.status == TaskStatus.CANCELED and door.dispatcher.stopped == [record.task_id]


@pytest.mark.parametrize(("body", "param", "words"), [
    ({"prompt": "x", "stream": "yes"}, "stream", "must be a boolean"),
    ({"prompt": "x", "stream": True, "partial_images": 4}, "partial_images", "must be 0..3"),
])
def test_stream_fields_are_checked_like_any_other(door, body, param, words):
    refused = generate(door, body)
    assert refused.param == param and words in refused.message
