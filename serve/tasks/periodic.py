"""Background jobs of an ingress replica (lease renewal, recovery, purge, webhook scans)."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

log = logging.getLogger(__name__)


def every(period_s: float, job: Callable[[], Awaitable[None]]) -> asyncio.Task:
    """Run `job` now and then every `period_s` seconds, for as long as the event loop runs."""

    async def loop() -> None:
        while True:
            try:
                await job()
            except Exception:  # noqa: BLE001 - a failed round must not end the loop
                log.exception("background job %s failed", getattr(job, "__name__", job))
            await asyncio.sleep(period_s)

    return asyncio.create_task(loop())
