"""Rate limits (serve/edge/ratelimit.py) in this process (the embedded profile's one ingress):
a burst, then a whole-second Retry-After; budgets per identity and per namespace."""

from __future__ import annotations

import asyncio

from cluster.spec.config import RateLimitConfig
from serve.edge.ratelimit import RateLimiter


def test_a_burst_then_a_wait_per_identity_and_namespace():
    async def scenario():
        keys = RateLimiter(RateLimitConfig(requests_per_second=1, burst=3))
        addresses = RateLimiter(RateLimitConfig(requests_per_second=1, burst=3), namespace="address")
        burst = [await keys.take("key-a") for _ in range(3)]
        refused = await keys.take("key-a")
        other = await keys.take("key-b")  # another key's budget is its own
        same_name = await addresses.take("key-a")  # and another namespace's
        return burst, refused, other, same_name

    burst, refused, other, same_name = asyncio.run(scenario())
    assert burst == [0, 0, 0] and 1 <= refused <= 3 and other == 0 and same_name == 0
