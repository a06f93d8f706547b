"""The web page's reads (serve/doors/web/service.py): only the caller's tasks, each as the page
shows it (parameters, live fields, image URLs or errors)."""

from __future__ import annotations

import asyncio
import time

from cluster.spec.errors import ErrorCode
from serve.doors.web import service as web_service
from serve.doors.web.service import PAGE_SIZE, WebService
from serve.edge.errors import ErrorKind, ServiceError
from serve.tasks.dispatch.dispatcher import preview_key
from serve.tasks.store.record import PreviewNote, TaskStatus
from tests.unit.serve.fakes import caller, doors, png


def create(door, prompt: str, key_id: str = "key-a", **parameters) -> str:
    body = {"model": "flux-schnell", "input": {"prompt": prompt}, "parameters": {"size": "512*1024"} | parameters}
    return asyncio.run(door.dashscope.create(caller(body, key_id), sync=False, edit_route=False))["output"]["task_id"]


def test_a_task_as_the_page_shows_it(tmp_path):
    door = doors(tmp_path)
    web = WebService(door.tasks)
    task_id = create(door, "a fox", n=2, seed=7)
    view = asyncio.run(web.task(caller(), task_id))
    assert (view["task_id"], view["api"], view["status"], view["prompt"]) == (task_id, "dashscope", "SUCCEEDED", "a fox")
    assert (view["size"], view["n"], view["seed"]) == ("512*1024", 2, 7)
    assert [image["seed"] for image in view["images"]] == [7, 8]
    assert all(image["url"].startswith("http://testserver/files/") and image["error"] is None for image in view["images"])
    assert {"queue_position", "progress", "eta_s", "loras"} <= set(view)


def test_another_keys_task_is_not_found(tmp_path):
    door = doors(tmp_path)
    task_id = create(door, "mine")
    answer = asyncio.run(WebService(door.tasks).task(caller(key_id="key-b"), task_id))
    assert isinstance(answer, ServiceError) and answer.kind == ErrorKind.NOT_FOUND


def test_a_failed_task_shows_its_error(tmp_path):
    door = doors(tmp_path)
    door.dispatcher.fail_with = (ErrorCode.OUT_OF_MEMORY, "the device ran out of memory")
    view = asyncio.run(WebService(door.tasks).task(caller(), create(door, "big")))
    assert view["status"] == "FAILED" and view["error"] == "the device ran out of memory"


def test_recent_lists_only_the_callers_tasks_newest_first_a_page_at_most(tmp_path):
    door = doors(tmp_path)
    mine = [create(door, f"p{i}") for i in range(3)]
    create(door, "theirs", key_id="key-b")
    page = asyncio.run(WebService(door.tasks).recent(caller()))
    assert page["total"] == 3 and [task["task_id"] for task in page["tasks"]] == mine[::-1]
    assert PAGE_SIZE >= 3


def test_a_task_followed_from_another_ingress_gets_its_previews_from_storage(tmp_path, monkeypatch):
    """The render runs from another ingress replica (nothing is pushed here): each new latest
    preview the record names is read from storage and sent once, between the views, until the
    last view."""
    monkeypatch.setattr(web_service, "WATCH_S", 0.01)
    door = doors(tmp_path)
    door.dispatcher.hold = True
    task_id = create(door, "a kite", partial_images=2)
    store, storage = door.dispatcher.store, door.storage

    async def follow() -> list[dict]:
        events, stream = [], await WebService(door.tasks).events(caller(), task_id)
        events.append(await anext(stream))  # PENDING
        record = await store.get(task_id)
        await store.transition(task_id, {TaskStatus.PENDING}, status=TaskStatus.RUNNING, scheduled_time=time.time())
        for partial in (0, 1):  # what the owning ingress does with each preview
            key = preview_key(record, 0, partial)
            storage.write(key, png(8, 8))
            await store.transition(task_id, {TaskStatus.RUNNING}, preview=PreviewNote(
                index=0, partial_image_index=partial, key=key))
            while not any(e["type"] == "preview" and e["partial_image_index"] == partial for e in events):
                events.append(await anext(stream))
        await store.transition(task_id, {TaskStatus.RUNNING}, status=TaskStatus.CANCELED, end_time=time.time())
        events.extend([event async for event in stream])
        return events

    events = asyncio.run(follow())
    previews = [e for e in events if e["type"] == "preview"]
    assert [p["partial_image_index"] for p in previews] == [0, 1]  # each once, in order
    assert all(p["data_url"].startswith("data:image/png;base64,") for p in previews)
    assert events[0]["task"]["status"] == "PENDING" and events[-1]["task"]["status"] == "CANCELED"
    assert "RUNNING" in [e["task"]["status"] for e in events if e["type"] == "task"]
