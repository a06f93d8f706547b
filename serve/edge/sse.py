"""A service's stream of events as Server-Sent Events, with heartbeats.

Each event (a dict with a `type`) goes out as `event: <type>` and `data: <its JSON>`; between
events, a comment line every `HEARTBEAT_S`, so that no proxy or load balancer in between cuts a
quiet stream for idleness. When the client goes away and the server says so (ASGI's
`http.disconnect`, or a cancellation of the response, which is how Serve's proxy tells a
replica), the service's generator is closed, and its `finally` does what a departed client needs
(the OpenAI door cancels the task).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import StreamingResponse

HEARTBEAT_S = 1.0


def event_stream(events: AsyncIterator[dict], request: Request, heartbeat_s: float = HEARTBEAT_S) -> StreamingResponse:
    return StreamingResponse(_lines(events, request, heartbeat_s), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _lines(events: AsyncIterator[dict], request: Request, heartbeat_s: float) -> AsyncIterator[bytes]:
    following = asyncio.ensure_future(anext(events))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        while True:
            done, _ = await asyncio.wait({following, gone}, timeout=heartbeat_s, return_when=asyncio.FIRST_COMPLETED)
            if gone in done:
                return  # the client went away
            if not done:
                yield b": keep-alive\n\n"
                continue
            try:
                event = following.result()
            except StopAsyncIteration:
                return
            yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
            following = asyncio.ensure_future(anext(events))
    finally:  # the end, or the client went away: the service's generator closes either way
        gone.cancel()
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await following
        await events.aclose()


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body was read: what comes next is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
