"""Per-key rate limits across ingress replicas: two limiters on one real Redis share one budget
(as two ingress replicas of a cluster do); the embedded default counts in process."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from cluster.spec.config import RateLimitConfig
from serve.edge.ratelimit import RateLimiter
from tests.servers import redis_server


@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as url:
        yield url


async def spend(limiters: list[RateLimiter], key: str, count: int) -> list[int]:
    """`count` requests of `key`, alternating between the limiters (replicas)."""
    return [await limiters[i % len(limiters)].take(key) for i in range(count)]


def test_two_replicas_share_one_budget_in_redis(redis_url):
    config = RateLimitConfig(requests_per_second=1, burst=10)  # 10 per 10 s
    key = f"key-{uuid.uuid4().hex[:8]}"

    async def scenario():
        replicas = [RateLimiter(config, redis_url), RateLimiter(config, redis_url)]
        waits = await spend(replicas, key, 11)
        other = await replicas[1].take(f"other-{key}")  # another key has its own budget
        return waits, other

    waits, other = asyncio.run(scenario())
    assert waits[:10] == [0] * 10 and 1 <= waits[10] <= 10 and other == 0


def test_in_process_limiter_for_the_embedded_default():
    config = RateLimitConfig(requests_per_second=2, burst=4)  # 4 per 2 s

    async def scenario():
        return await spend([RateLimiter(config)], "k", 5)

    waits = asyncio.run(scenario())
    assert waits[:4] == [0] * 4 and 1 <= waits[4] <= 2
