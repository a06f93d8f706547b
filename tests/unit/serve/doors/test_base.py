"""The door-service base (serve/doors/base.py): the create skeleton every door uses, and the one
live-task view every door shows."""

from __future__ import annotations

import asyncio
import time

from cluster.spec.errors import ErrorCode, RenderError
from cluster.spec.loras import AppliedLora, LoraRef
from cluster.spec.request import RenderRequest
from serve.doors.base import Created, DoorService, LiveTask
from serve.edge.errors import ServiceError
from serve.edge.fields import Invalid
from serve.tasks.service import Once, Submission
from serve.tasks.store.record import TaskProgress, TaskStatus
from tests.factories import task_record
from tests.unit.serve.fakes import doors


class Plain(DoorService):
    api = "plain"


def submission(tasks, prompt: str = "a fox", callback_url: str | None = None) -> Submission:
    spec = tasks.specs["flux-schnell"]
    return Submission(api="plain", key_id="key-a", spec=spec, base_url="http://testserver/",
                      request=RenderRequest(model=spec.name, prompt=prompt), callback_url=callback_url)


async def parsed(value: Submission) -> Submission:
    return value


async def unreadable() -> Submission:
    raise Invalid("n must be an integer", "n")


def test_a_parsed_request_becomes_a_task(tmp_path):
    door = doors(tmp_path)
    created = asyncio.run(Plain(door.tasks).submit(parsed(submission(door.tasks))))
    assert isinstance(created, Created) and [r.task_id for r in door.dispatcher.submitted] == [created.record.task_id]
    assert created.record.api == "plain" and created.submission.request.prompt == "a fox"


def test_a_field_the_parser_cannot_read_is_the_answer_and_nothing_is_submitted(tmp_path):
    door = doors(tmp_path)
    refused = asyncio.run(Plain(door.tasks).submit(unreadable()))
    assert refused == ServiceError(ErrorCode.INVALID_PARAMETER, "n must be an integer", "n")
    assert not door.dispatcher.submitted


def test_a_value_the_core_refuses_comes_back_as_its_render_error(tmp_path):
    door = doors(tmp_path)
    refused = asyncio.run(Plain(door.tasks).submit(parsed(submission(door.tasks, prompt=" "))))
    assert isinstance(refused, RenderError) and refused.code == ErrorCode.EMPTY_PROMPT and refused.param == "prompt"
    assert not door.dispatcher.submitted


def test_a_callback_is_refused_by_a_door_that_takes_none(tmp_path):
    door = doors(tmp_path)
    refused = asyncio.run(Plain(door.tasks).submit(parsed(submission(door.tasks, callback_url="https://example.com/h"))))
    assert isinstance(refused, ServiceError) and refused.param == "callback_url" and "plain" in refused.message
    assert not door.dispatcher.submitted


def test_a_repeated_call_joins_its_first_task(tmp_path):
    door = doors(tmp_path)
    service = Plain(door.tasks)
    once = Once("body:abc", explicit=False, body_digest="abc")
    first = asyncio.run(service.submit(parsed(submission(door.tasks)), once))
    again = asyncio.run(service.submit(parsed(submission(door.tasks)), once))
    assert first.record.task_id == again.record.task_id and len(door.dispatcher.submitted) == 1


def test_the_live_view_of_a_pending_a_running_and_a_finished_task():
    pending = task_record(status=TaskStatus.PENDING, queue_position=3)
    assert LiveTask.fields_of(pending) == {"queue_position": 3, "progress": None, "eta_s": None, "loras": None,
                                           "preview_url": None}
    running = task_record(status=TaskStatus.RUNNING, progress=TaskProgress(step=2, steps=8, eta_s=6.0,
                                                                          updated_at=time.time() - 1))
    live = LiveTask.fields_of(running)
    assert (live["progress"].step, live["progress"].steps) == (2, 8) and 4.5 < live["eta_s"] <= 5.0
    assert set(LiveTask(**live).model_dump()) == {"queue_position", "progress", "eta_s", "loras", "preview_url"}
    rendered = task_record(status=TaskStatus.SUCCEEDED, loras=[AppliedLora("org/a", "ab" * 32, 0.5)])
    assert LiveTask.fields_of(rendered)["loras"] == [{"path": "org/a", "sha256": "ab" * 32, "scale": 0.5}]


def test_adapters_show_as_named_until_rendered(tmp_path):
    door = doors(tmp_path)
    spec = door.tasks.specs["flux-schnell"]
    resolved = spec.resolve(RenderRequest(model=spec.name, prompt="x", loras=(LoraRef("org/style", 0.5),)))
    record = task_record(status=TaskStatus.PENDING, request=resolved)
    assert LiveTask.fields_of(record)["loras"] == [{"path": "org/style", "scale": 0.5}]
