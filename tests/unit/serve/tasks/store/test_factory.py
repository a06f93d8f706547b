"""The task store's Redis address (serve/tasks/store/factory.py): a password from the environment
reaches Redis whole, whatever characters it holds."""

from __future__ import annotations

import redis

from cluster.spec.config import TaskStoreConfig
from serve.tasks.store.factory import redis_url


def test_a_password_with_url_characters_reaches_redis_as_it_is(monkeypatch):
    password = "p@ss:w/rd#?%&"
    monkeypatch.setenv("RAYDIANT_REDIS_URL", "redis://redis:6379/1")
    monkeypatch.setenv("RAYDIANT_REDIS_PASSWORD", password)
    url = redis_url(TaskStoreConfig(backend="redis"))
    assert password not in url  # percent-encoded
    kwargs = redis.Redis.from_url(url).connection_pool.connection_kwargs
    assert (kwargs["password"], kwargs["host"], kwargs["port"], kwargs["db"]) == (password, "redis", 6379, 1)


def test_without_a_password_the_url_is_used_as_it_is(monkeypatch):
    monkeypatch.delenv("RAYDIANT_REDIS_PASSWORD", raising=False)
    monkeypatch.setenv("RAYDIANT_REDIS_URL", "redis://:inline@redis:6379/1")
    assert redis_url(TaskStoreConfig(backend="redis")) == "redis://:inline@redis:6379/1"
