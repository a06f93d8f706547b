"""Open the configured task store."""

from __future__ import annotations

import os

from cluster.config import TaskStoreConfig
from serve.tasks.store import TaskStore


def open_store(config: TaskStoreConfig) -> TaskStore:
    if config.backend == "redis":
        from serve.tasks.redis import RedisTaskStore

        return RedisTaskStore(os.environ.get("RAYDIANT_REDIS_URL") or config.url)
    from serve.tasks.sqlite import SQLiteTaskStore

    return SQLiteTaskStore(config.path)
