"""Per-key rate limits that hold across every ingress replica.

A key may send `burst` requests in any window of `burst / requests_per_second` seconds (rounded
to whole seconds, at least 1): the same budget as a token bucket of that rate and burst, counted
as a moving window by the `limits` library. The counts live where the task records live: in
Redis on clusters, so two ingress replicas share one budget per key (each with its own bucket,
a key would get twice its limit); in process for the embedded SQLite default, which runs one
ingress.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from cluster.config import RateLimitConfig, TaskStoreConfig
from serve.tasks.factory import redis_url


class RateLimiter:
    def __init__(self, config: RateLimitConfig, store: TaskStoreConfig):
        window_s = max(1, round(config.burst / config.requests_per_second))
        self.item = RateLimitItemPerSecond(config.burst, window_s)
        self._limiter = MovingWindowRateLimiter(_storage(store))

    async def take(self, key_id: str) -> int:
        """0 when the request may proceed, else whole seconds until it could (Retry-After)."""
        if await self._limiter.hit(self.item, "raydiant", key_id):
            return 0
        stats = await self._limiter.get_window_stats(self.item, "raydiant", key_id)
        return max(1, math.ceil(stats.reset_time - time.time()))


def _storage(store: TaskStoreConfig) -> Storage:
    if store.backend == "redis":
        return RedisStorage("async+" + redis_url(store), implementation="redispy", key_prefix="raydiant-rate")
    return MemoryStorage()
