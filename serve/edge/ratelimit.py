"""Rate limits that hold across every ingress replica: per API key, and per client address for
requests without a valid key (/healthz, the page, result files, wrong keys).

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
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from cluster.spec.config import RateLimitConfig


class RateLimiter:
    def __init__(self, config: RateLimitConfig, redis_url: str = "", namespace: str = "raydiant"):
        """`redis_url`: where the counts live ("" in this process: the embedded SQLite profile's
        one ingress). `namespace` keeps budgets apart: "raydiant" counts API keys, "address"
        client addresses."""
        window_s = max(1, round(config.burst / config.requests_per_second))
        self.item = RateLimitItemPerSecond(config.burst, window_s)
        self.namespace = namespace
        storage = (RedisStorage("async+" + redis_url, implementation="redispy", key_prefix="raydiant-rate")
                   if redis_url else MemoryStorage())
        self._limiter = MovingWindowRateLimiter(storage)

    async def take(self, identity: str) -> int:
        """0 when the request may proceed, else whole seconds until it could (Retry-After)."""
        if await self._limiter.hit(self.item, self.namespace, identity):
            return 0
        stats = await self._limiter.get_window_stats(self.item, self.namespace, identity)
        return max(1, math.ceil(stats.reset_time - time.time()))
