"""The ingress's background loop (serve/tasks/periodic.py): runs now, then every period, and a
failed round does not end it."""

from __future__ import annotations

import asyncio

from serve.tasks.periodic import every


def test_a_job_runs_at_once_then_every_period_and_survives_its_failures():
    rounds: list[int] = []

    async def job() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 2:
            raise RuntimeError("the store was unreachable this round")

    async def scenario() -> None:
        task = every(0.001, job)
        while len(rounds) < 5:  # the round after the failure ran: the loop lives on
            await asyncio.sleep(0.001)
        task.cancel()

    asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    assert rounds[:5] == [0, 1, 2, 3, 4]


def test_the_first_round_runs_before_any_period_passes():
    ran = asyncio.Event()

    async def job() -> None:
        ran.set()

    async def scenario() -> bool:
        task = every(3600, job)  # an hour's period: only the first round can run in this test
        await asyncio.wait_for(ran.wait(), timeout=30)
        task.cancel()
        return ran.is_set()

    assert asyncio.run(scenario())
