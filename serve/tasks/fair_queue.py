"""`FairSlots`: a model's dispatch slots shared fairly by API keys, weighted by cost.

The dispatcher sends at most `slots` tasks of a model to its replicas at once; the rest wait
here. When a slot frees, the waiting task with the smallest virtual finish time goes next
(weighted fair queuing): a key's task finishes, virtually, `cost` after the later of the
key's previous task and the virtual time now, so each key with work waiting gets an equal
share of rendering (pixels x steps x images), one key's burst queues behind its own earlier
work, and a key that was idle starts at the front. Within one key, tasks keep their order.

The cost is a task's megapixel-steps (`cost_of`), so a 2048*2048 100-step request counts as
many small ones. State is per waiting task and per key with work waiting, never more.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import Counter

from cluster.request import ResolvedRequest


def cost_of(request: ResolvedRequest) -> float:
    """Megapixel-steps: what a request asks of the device."""
    return request.n * request.steps * request.width * request.height / 2**20


class FairSlots:
    def __init__(self, slots: int):
        self.slots = slots
        self._free = slots
        self._heap: list[tuple[float, int, str, asyncio.Future]] = []
        self._finish: dict[str, float] = {}  # a key's latest virtual finish time, while it has work waiting
        self._waiting: Counter[str] = Counter()
        self._virtual_now = 0.0
        self._order = itertools.count()

    def waiting(self, key: str | None = None) -> int:
        return sum(self._waiting.values()) if key is None else self._waiting[key]

    async def acquire(self, key: str, cost: float) -> None:
        """Wait for a slot, in fair order; a canceled wait gives its place up."""
        if self._free > 0 and not self._heap:
            self._free -= 1
            return
        finish = max(self._virtual_now, self._finish.get(key, 0.0)) + max(cost, 1e-9)
        self._finish[key] = finish
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (finish, next(self._order), key, future))
        self._waiting[key] += 1
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot came as the wait was canceled: hand it on
            else:
                self._forget(key)
            raise

    def resize(self, slots: int) -> None:
        """Change how many tasks may hold a slot at once (the replicas running changed). Holders
        above a smaller size keep theirs; the next waiters start once the count is below it."""
        self._free += slots - self.slots
        self.slots = slots
        while self._free > 0 and self._hand_on():
            self._free -= 1

    def release(self) -> None:
        """A slot frees: the next waiting task (fair order) takes it, unless slots are over
        their size since a resize."""
        if self._free >= 0 and self._hand_on():
            return
        self._free += 1

    def _hand_on(self) -> bool:
        """Give a slot to the waiting task with the smallest virtual finish; False if none waits."""
        while self._heap:
            finish, _, key, future = heapq.heappop(self._heap)
            if future.cancelled():
                continue  # its waiter gave up (counted out in `acquire`)
            self._forget(key)
            self._virtual_now = max(self._virtual_now, finish - 1e-9)
            future.set_result(None)
            return True
        return False

    def _forget(self, key: str) -> None:
        self._waiting[key] -= 1
        if self._waiting[key] <= 0:
            del self._waiting[key]
            if self._finish.get(key, 0.0) <= self._virtual_now:
                self._finish.pop(key, None)
