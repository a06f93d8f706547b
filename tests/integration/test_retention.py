"""Task records and their result files expire together after the retention time."""

from __future__ import annotations

import asyncio
import time

from cluster.spec.config import ServeConfig
from cluster.storage.results import Storage
from serve.tasks.dispatch.dispatcher import Dispatcher
from serve.tasks.store.record import TaskStatus
from serve.tasks.store.sqlite import SQLiteTaskStore
from tests.factories import task_record


def test_purge_deletes_expired_records_and_their_files(tmp_path):
    async def scenario():
        store = SQLiteTaskStore(tmp_path / "tasks.sqlite")
        storage = Storage(str(tmp_path / "results"), signing_key=b"k")
        dispatcher = Dispatcher(store, storage, handles={}, settings=ServeConfig(), capacities={})
        now = time.time()
        for task_id, expires in (("old", now - 1), ("new", now + 3600)):
            await store.create(task_record(task_id, status=TaskStatus.SUCCEEDED, deadline=now,
                                           expires_at=expires))
            storage.write(f"tasks/{task_id}/0.png", b"png")
        await dispatcher._purge()
        return (storage.exists("tasks/old/0.png"), storage.exists("tasks/new/0.png"),
                await store.get("old"), await store.get("new") is not None)

    old_file, new_file, old_record, new_record = asyncio.run(scenario())
    assert (old_file, new_file, old_record, new_record) == (False, True, None, True)
