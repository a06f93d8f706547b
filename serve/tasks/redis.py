"""Redis task store: for clusters (the same Redis that KubeRay's GCS fault tolerance uses).

Each record is a JSON string that expires with the task; a sorted set indexes the ids by
expiry time, so expired tasks can still be found (to delete their files) after Redis dropped them.
Compare-and-set runs as a Lua script, so it is atomic on the server.
"""

from __future__ import annotations

import time
from typing import Iterable

import redis.asyncio as redis

from serve.tasks.record import TaskRecord
from serve.tasks.store import TaskStore

_CAS = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if cjson.decode(current)['version'] ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
"""


class RedisTaskStore(TaskStore):
    def __init__(self, url: str, prefix: str = "raydiant"):
        self._redis = redis.from_url(url)
        self._prefix = prefix
        self._cas = self._redis.register_script(_CAS)

    def _key(self, task_id: str) -> str:
        return f"{self._prefix}:task:{task_id}"

    @property
    def _index(self) -> str:
        return f"{self._prefix}:tasks"

    async def _insert(self, record: TaskRecord) -> None:
        ttl = max(1, int(record.expires_at - time.time()))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(record.task_id), record.model_dump_json(), ex=ttl, nx=True)
            pipe.zadd(self._index, {record.task_id: record.expires_at})
            await pipe.execute()

    async def _load(self, task_id: str) -> TaskRecord | None:
        body = await self._redis.get(self._key(task_id))
        return TaskRecord.model_validate_json(body) if body else None

    async def _compare_and_set(self, record: TaskRecord, expected_version: int) -> bool:
        done = await self._cas(keys=[self._key(record.task_id)], args=[expected_version, record.model_dump_json()])
        return bool(done)

    async def _all(self) -> Iterable[TaskRecord]:
        ids = [i.decode() for i in await self._redis.zrangebyscore(self._index, time.time(), "+inf")]
        if not ids:
            return []
        bodies = await self._redis.mget([self._key(i) for i in ids])
        return [TaskRecord.model_validate_json(body) for body in bodies if body is not None]

    async def remember(self, fingerprint: str, task_id: str, expires_at: float) -> None:
        key, ttl_ms = f"{self._prefix}:fingerprint:{fingerprint}", int((expires_at - time.time()) * 1000)
        if ttl_ms <= 0:
            await self._redis.delete(key)
        else:
            await self._redis.set(key, task_id, px=ttl_ms)

    async def recall(self, fingerprint: str) -> str | None:
        task_id = await self._redis.get(f"{self._prefix}:fingerprint:{fingerprint}")
        return task_id.decode() if task_id else None

    async def _delete(self, task_ids: list[str]) -> None:
        await self._redis.delete(*(self._key(i) for i in task_ids))
        await self._redis.zrem(self._index, *task_ids)

    async def purge_expired(self, now: float) -> list[str]:
        expired = [i.decode() for i in await self._redis.zrangebyscore(self._index, "-inf", now)]
        if expired:
            await self._delete(expired)
        return expired

    async def close(self) -> None:
        await self._redis.aclose()
