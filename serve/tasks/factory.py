"""Open the configured task store."""

from __future__ import annotations

import os

from cluster.config import TaskStoreConfig
from serve.tasks.store import TaskStore


def redis_url(config: TaskStoreConfig) -> str:
    """$RAYDIANT_REDIS_URL overrides the config (clusters inject it from a Secret)."""
    return os.environ.get("RAYDIANT_REDIS_URL") or config.url


def open_store(config: TaskStoreConfig) -> TaskStore:
    if config.backend == "redis":
        from serve.tasks.redis import RedisTaskStore

        return RedisTaskStore(redis_url(config))
    from serve.tasks.sqlite import SQLiteTaskStore

    return SQLiteTaskStore(config.path)
