"""Open the configured task store."""

from __future__ import annotations

import os
from urllib.parse import quote, urlsplit, urlunsplit

from cluster.spec.config import TaskStoreConfig
from serve.tasks.store.base import TaskStore


def redis_url(config: TaskStoreConfig) -> str:
    """$RAYDIANT_REDIS_URL overrides the config (clusters set it); a password in
    $RAYDIANT_REDIS_PASSWORD (from a Secret) is put into it percent-encoded, so that any
    character may be in the password (an `@`, `/` or `:` written into a URL as it is breaks it)."""
    url = os.environ.get("RAYDIANT_REDIS_URL") or config.url
    password = os.environ.get("RAYDIANT_REDIS_PASSWORD")
    if not password:
        return url
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    user = quote(parts.username or "", safe="")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def open_store(config: TaskStoreConfig, url: str | None = None) -> TaskStore:
    """`url`: the Redis URL with its password, when the caller has it (serve/secrets.py);
    else the config's and the environment's."""
    if config.backend == "redis":
        from serve.tasks.store.redis import RedisTaskStore

        return RedisTaskStore(url or redis_url(config))
    from serve.tasks.store.sqlite import SQLiteTaskStore

    return SQLiteTaskStore(config.path)
