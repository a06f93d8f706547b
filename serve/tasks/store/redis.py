"""Redis task store: for clusters (the same Redis that KubeRay's GCS fault tolerance uses).

Each record is a JSON string; sorted sets index it, each answering one question with a range
or rank lookup (`IndexEntry` says what they hold):

    {p}:task:<id>                         the record (expires an hour after its retention, so
                                          the purge can still read what to unindex)
    {p}:tasks                             every task by expiry (the purge)
    {p}:key:<key>[:m:<model>][:s:<status>] a key's tasks by submit time (list pages and totals)
    {p}:pending:<model>                   a model's PENDING tasks in order (queue position)
    {p}:leases                            unfinished tasks by lease expiry (recovery)
    {p}:webhooks                          ended tasks by webhook due time (delivery)

Every write of a record and its index entries runs as one Lua script, so they are atomic on the
server and compare-and-set on `version` guards them together. The scripts name keys they build
from the prefix, so this store needs a single Redis (not Redis Cluster), as GCS fault tolerance
does. A list total may count tasks that expired since the last purge (seconds).
"""

from __future__ import annotations

import time

import redis.asyncio as redis
from redis.exceptions import OutOfMemoryError

from serve.tasks.store.base import POSITION_CAP, IndexEntry, StoreFull, TaskStore
from serve.tasks.store.record import TaskRecord

_PURGE_GRACE_S = 3600  # a record outlives its retention this long in Redis, for the purge to unindex it
_PURGE_BATCH = 200  # records unindexed per script call: short scripts keep Redis responsive
_CONNECTIONS = 64  # per store (one per ingress replica)
_CONNECTION_WAIT_S = 20

_WRITE = """
local p, id = ARGV[1], ARGV[2]
local record = p .. ':task:' .. id
local old_status = false
if tonumber(ARGV[3]) < 0 then
  if not redis.call('SET', record, ARGV[4], 'EX', ARGV[5], 'NX') then return 0 end
else
  local current = redis.call('GET', record)
  if not current then return 0 end
  local decoded = cjson.decode(current)
  if decoded['version'] ~= tonumber(ARGV[3]) then return 0 end
  old_status = decoded['status']
  redis.call('SET', record, ARGV[4], 'KEEPTTL')
end
local model, status, submit = ARGV[7], ARGV[8], ARGV[9]  -- status: a TaskStatus value
local key = p .. ':key:' .. ARGV[6]
if old_status ~= status then
  if old_status then
    redis.call('ZREM', key .. ':s:' .. old_status, id)
    redis.call('ZREM', key .. ':m:' .. model .. ':s:' .. old_status, id)
    redis.call('ZREM', p .. ':pending:' .. model, id)
  else
    redis.call('ZADD', key, submit, id)
    redis.call('ZADD', key .. ':m:' .. model, submit, id)
  end
  redis.call('ZADD', key .. ':s:' .. status, submit, id)
  redis.call('ZADD', key .. ':m:' .. model .. ':s:' .. status, submit, id)
  if status == 'PENDING' then redis.call('ZADD', p .. ':pending:' .. model, submit, id) end
end
redis.call('ZADD', p .. ':tasks', ARGV[10], id)
if ARGV[11] == '' then redis.call('ZREM', p .. ':leases', id) else redis.call('ZADD', p .. ':leases', ARGV[11], id) end
if ARGV[12] == '' then redis.call('ZREM', p .. ':webhooks', id) else redis.call('ZADD', p .. ':webhooks', ARGV[12], id) end
return 1
"""

_DELETE = """
local p = ARGV[1]
for i = 2, #ARGV do
  local id = ARGV[i]
  local current = redis.call('GET', p .. ':task:' .. id)
  if current then
    local d = cjson.decode(current)
    local key = p .. ':key:' .. d['key_id']
    redis.call('ZREM', key, id)
    redis.call('ZREM', key .. ':m:' .. d['model'], id)
    redis.call('ZREM', key .. ':s:' .. d['status'], id)
    redis.call('ZREM', key .. ':m:' .. d['model'] .. ':s:' .. d['status'], id)
    redis.call('ZREM', p .. ':pending:' .. d['model'], id)
    redis.call('DEL', p .. ':task:' .. id)
  end
  redis.call('ZREM', p .. ':tasks', id)
  redis.call('ZREM', p .. ':leases', id)
  redis.call('ZREM', p .. ':webhooks', id)
end
return 1
"""


def _score(value: float | None) -> str:
    return "" if value is None else repr(value)


class RedisTaskStore(TaskStore):
    def __init__(self, url: str, prefix: str = "raydiant"):
        # A blocking pool: under a burst, calls wait for one of its connections. redis-py's
        # default pool raises `MaxConnectionsError` past 100 at once, which a busy ingress reaches.
        self._redis = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
            url, max_connections=_CONNECTIONS, timeout=_CONNECTION_WAIT_S))
        self._prefix = prefix
        self._write = self._redis.register_script(_WRITE)
        self._unindex = self._redis.register_script(_DELETE)

    def _key(self, task_id: str) -> str:
        return f"{self._prefix}:task:{task_id}"

    async def _store(self, record: TaskRecord, expected_version: int) -> bool:
        entry = IndexEntry.of(record)
        ttl = max(1, int(record.expires_at - time.time())) + _PURGE_GRACE_S
        done = await self._write(args=[
            self._prefix, record.task_id, expected_version, record.model_dump_json(), ttl, entry.key_id, entry.model,
            entry.status, repr(entry.submit_time), repr(entry.expires_at), _score(entry.lease_due),
            _score(entry.webhook_due)])
        return bool(done)

    async def _insert(self, record: TaskRecord) -> None:
        try:
            stored = await self._store(record, -1)
        except OutOfMemoryError as exc:  # past maxmemory under noeviction
            raise StoreFull("the task store is at its maxmemory") from exc
        if not stored:
            raise ValueError(f"task {record.task_id} exists")

    async def _fullness_now(self) -> float | None:
        memory = await self._redis.info("memory")
        bound = int(memory.get("maxmemory", 0))
        return int(memory["used_memory"]) / bound if bound else None

    async def _load(self, task_id: str) -> TaskRecord | None:
        body = await self._redis.get(self._key(task_id))
        return TaskRecord.model_validate_json(body) if body else None

    async def _compare_and_set(self, record: TaskRecord, expected_version: int) -> bool:
        return await self._store(record, expected_version)

    async def list(self, *, key_id: str, status: str | None = None, model: str | None = None,
                   start: float | None = None, end: float | None = None, page_no: int = 1,
                   page_size: int = 10) -> tuple[list[TaskRecord], int]:
        index = f"{self._prefix}:key:{key_id}" + (f":m:{model}" if model else "") + (f":s:{status}" if status else "")
        low, high = "-inf" if start is None else repr(start), "+inf" if end is None else repr(end)
        total = await self._redis.zcount(index, low, high)
        ids = await self._redis.zrevrangebyscore(index, high, low, start=(page_no - 1) * page_size, num=page_size)
        bodies = await self._redis.mget([self._key(i.decode()) for i in ids]) if ids else []
        now = time.time()
        records = [TaskRecord.model_validate_json(body) for body in bodies if body is not None]
        return [r for r in records if r.expires_at >= now], int(total)

    async def kept(self, key_id: str) -> int:
        return int(await self._redis.zcard(f"{self._prefix}:key:{key_id}"))

    async def pending_ahead(self, record: TaskRecord) -> int:
        queue = f"{self._prefix}:pending:{record.model}"
        rank = await self._redis.zrank(queue, record.task_id)  # (submit_time, task_id) order: the queue's
        if rank is None:
            rank = await self._redis.zcount(queue, "-inf", f"({record.submit_time!r}")
        return min(int(rank), POSITION_CAP)  # the same answer as every backend's

    async def _ids(self, index: str, high: str, limit: int) -> list[str]:
        return [i.decode() for i in await self._redis.zrangebyscore(f"{self._prefix}:{index}", "-inf", high,
                                                                     start=0, num=limit)]

    async def _lease_expired(self, now: float, limit: int) -> list[str]:
        return await self._ids("leases", f"({now!r}", limit)

    async def _webhooks_due(self, now: float, limit: int) -> list[str]:
        return await self._ids("webhooks", repr(now), limit)

    async def _expired(self, now: float, limit: int) -> list[str]:
        return await self._ids("tasks", f"({now!r}", limit)

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
        for first in range(0, len(task_ids), _PURGE_BATCH):
            await self._unindex(args=[self._prefix, *task_ids[first:first + _PURGE_BATCH]])

    async def close(self) -> None:
        await self._redis.aclose()

