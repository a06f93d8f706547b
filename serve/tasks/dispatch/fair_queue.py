"""`FairSlots`: a model's dispatch slots shared fairly by API keys, weighted by cost.

The dispatcher sends at most `slots` images of a model to its replicas at once (a task holds
one slot per image, so a flood of 4-image tasks holds no more device batches than a flood of
1-image ones); the rest wait here. When a slot frees, the waiting task with the smallest virtual finish time goes next
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

from cluster.spec.request import ResolvedRequest


def cost_of(request: ResolvedRequest) -> float:
    """Megapixel-steps: what a request asks of the device."""
    return request.n * request.steps * request.width * request.height / 2**20


class FairSlots:
    """`slots` units in flight at most (the dispatcher's unit: images); a task takes as many as
    it has images (all of them when it has more than there are slots: a task is never split)."""

    def __init__(self, slots: int):
        self.slots = slots
        self._free = slots
        self._heap: list[tuple[float, int, str, int, asyncio.Future]] = []
        self._finish: dict[str, float] = {}  # a key's latest virtual finish time, while it has work waiting
        self._waiting: Counter[str] = Counter()
        self._virtual_now = 0.0
        self._order = itertools.count()

    def waiting(self, key: str | None = None) -> int:
        return sum(self._waiting.values()) if key is None else self._waiting[key]

    async def acquire(self, key: str, cost: float, units: int = 1) -> int:
        """Wait for `units` slots, in fair order; returns how many were taken (what `release`
        gives back). A canceled wait gives its place up."""
        if not self._heap and self._free >= (taken := self._units(units)):
            self._free -= taken
            return taken
        finish = max(self._virtual_now, self._finish.get(key, 0.0)) + max(cost, 1e-9)
        self._finish[key] = finish
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (finish, next(self._order), key, units, future))
        self._waiting[key] += 1
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(future.result())  # the slots came as the wait was canceled: hand them on
            else:
                self._forget(key)
                self._hand_on()  # it may have been the head that the others waited behind
            raise

    def resize(self, slots: int) -> None:
        """Change how many units may be in flight (the replicas running changed). Holders above
        a smaller size keep theirs; the next waiters start once there is room again."""
        self._free += slots - self.slots
        self.slots = slots
        self._hand_on()

    def release(self, units: int = 1) -> None:
        """Units free: the waiting tasks next in fair order take them while they fit."""
        self._free += units
        self._hand_on()

    def _units(self, units: int) -> int:
        return max(1, min(units, self.slots))

    def _hand_on(self) -> None:
        """Start waiting tasks in order of virtual finish while the head fits. The head is never
        passed over for a smaller task behind it: a large task would otherwise wait forever."""
        while self._heap:
            finish, _, key, units, future = self._heap[0]
            if future.cancelled():
                heapq.heappop(self._heap)  # its waiter gave up (counted out in `acquire`)
                continue
            taken = self._units(units)
            if self._free < taken:
                return
            heapq.heappop(self._heap)
            self._free -= taken
            self._forget(key)
            self._virtual_now = max(self._virtual_now, finish - 1e-9)
            future.set_result(taken)

    def _forget(self, key: str) -> None:
        self._waiting[key] -= 1
        if self._waiting[key] <= 0:
            del self._waiting[key]
            if self._finish.get(key, 0.0) <= self._virtual_now:
                self._finish.pop(key, None)
