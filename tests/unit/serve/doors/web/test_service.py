"""The web page's reads (serve/doors/web/service.py): only the caller's tasks, each as the page
shows it (parameters, live fields, image URLs or errors)."""

from __future__ import annotations

import asyncio

from cluster.spec.errors import ErrorCode
from serve.doors.web.service import PAGE_SIZE, WebService
from serve.edge.errors import ErrorKind, ServiceError
from tests.unit.serve.fakes import caller, doors


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
