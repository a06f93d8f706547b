"""Fair dispatch slots (serve/tasks/dispatch/fair_queue.py), without Ray: keys share a model's slots by
cost, one key's burst waits behind its own work, order within a key holds, and a canceled wait
gives its place up."""

from __future__ import annotations

import asyncio

from serve.tasks.dispatch.fair_queue import FairSlots


async def served_order(slots: FairSlots, arrivals: list[tuple[str, float]]) -> list[str]:
    """Queue every arrival behind one running task, then free slots one at a time."""
    order: list[str] = []
    await slots.acquire("running", 1.0)

    async def task(name: str, key: str, cost: float) -> None:
        await slots.acquire(key, cost)
        order.append(name)

    waiting = [asyncio.create_task(task(f"{key}{i}", key, cost)) for i, (key, cost) in enumerate(arrivals)]
    await asyncio.sleep(0)
    for _ in arrivals:
        slots.release()
        await asyncio.sleep(0)
    await asyncio.gather(*waiting)
    return order


def test_a_burst_of_one_key_does_not_delay_another_key():
    arrivals = [("a", 1.0)] * 10 + [("b", 1.0)]  # b's one task arrives after a's ten
    order = asyncio.run(served_order(FairSlots(1), arrivals))
    assert order.index("b10") <= 1  # b goes first or second, not eleventh
    assert [n for n in order if n.startswith("a")] == [f"a{i}" for i in range(10)]  # a's order holds


def test_shares_are_weighted_by_cost():
    arrivals = [("big", 4.0)] * 4 + [("small", 1.0)] * 8
    order = asyncio.run(served_order(FairSlots(1), arrivals))
    # Equal shares of megapixel-steps: four small tasks for each big one while both keys wait.
    assert [n.rstrip("0123456789") for n in order[:5]] == ["small", "small", "small", "big", "small"]


def test_a_canceled_wait_gives_its_place_up():
    async def scenario() -> list[str]:
        slots, order = FairSlots(1), []
        await slots.acquire("x", 1.0)

        async def task(name: str) -> None:
            await slots.acquire(name, 1.0)
            order.append(name)

        gone, stays = asyncio.create_task(task("gone")), asyncio.create_task(task("stays"))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        slots.release()
        await asyncio.wait_for(stays, 1)
        assert slots.waiting() == 0
        return order

    assert asyncio.run(scenario()) == ["stays"]


def test_resizing_starts_waiters_when_it_grows_and_holds_them_back_when_it_shrinks():
    async def scenario():
        slots = FairSlots(1)
        await slots.acquire("a", 1.0)
        waiting = [asyncio.create_task(slots.acquire("b", 1.0)) for _ in range(3)]
        await asyncio.sleep(0)
        slots.resize(3)  # two more replicas' worth: two waiters start at once
        await asyncio.sleep(0)
        assert [w.done() for w in waiting] == [True, True, False]
        slots.resize(1)  # three hold slots, one may: the next two releases start nobody
        slots.release()
        slots.release()
        await asyncio.sleep(0)
        assert not waiting[2].done()
        slots.release()
        await asyncio.sleep(0)
        assert waiting[2].done()

    asyncio.run(scenario())


def test_slots_count_images_so_a_flood_of_four_image_tasks_holds_two_batches_not_eight():
    """Eight slots (two device batches of 4 per replica): a flood of n=4 tasks gets two in
    flight (eight images), not eight (32 images); a quiet key's task is next when one frees."""

    async def run() -> tuple[int, list[str]]:
        slots = FairSlots(8)
        started: list[str] = []

        async def task(name: str, key: str, images: int) -> int:
            taken = await slots.acquire(key, cost=images, units=images)
            started.append(name)
            return taken

        flood = [asyncio.create_task(task(f"flood{i}", "flood", 4)) for i in range(8)]
        await asyncio.sleep(0)
        in_flight = len(started)
        quiet = asyncio.create_task(task("quiet", "quiet", 1))
        await asyncio.sleep(0)
        slots.release(4)  # the first flood task ends
        await asyncio.sleep(0)
        order = list(started)
        for _ in range(7):
            slots.release(4)
            await asyncio.sleep(0)
        await asyncio.gather(quiet, *flood)
        return in_flight, order

    in_flight, order = asyncio.run(run())
    assert in_flight == 2
    assert order[2] == "quiet"  # before the flood's third task


def test_a_task_larger_than_all_slots_takes_them_all_and_is_not_passed_over():
    async def run() -> list[str]:
        slots = FairSlots(2)
        assert await slots.acquire("a", 1.0, units=1) == 1
        started: list[str] = []

        async def task(name: str, units: int) -> None:
            taken = await slots.acquire(name, 1.0, units=units)
            started.append(f"{name}:{taken}")

        big = asyncio.create_task(task("big", 4))  # waits for both slots
        await asyncio.sleep(0)
        small = asyncio.create_task(task("small", 1))  # fits now, but the big one is ahead
        await asyncio.sleep(0)
        assert started == []
        slots.release(1)
        await asyncio.gather(big)
        slots.release(2)
        await small
        return started

    assert asyncio.run(run()) == ["big:2", "small:1"]
