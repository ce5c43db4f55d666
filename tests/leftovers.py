"""What a test leaves behind on its event loop: tasks still running, and errors nobody retrieved.

A connect given up on may go on in the background (the Deepgram SDK's handshake ignores
cancellation); the tests that give one up check that it ends cleanly rather than as a "Task
exception was never retrieved" or "Task was destroyed but it is pending!" report at some later
garbage collection, which pytest would not pin on anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any


@contextlib.asynccontextmanager
async def nothing_left_behind(timeout: float = 15.0) -> AsyncIterator[None]:
    """Around a test's body: then wait (within `timeout`) for every task started inside it to end,
    collect garbage, and fail on anything the loop reported to its exception handler meanwhile."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    before = asyncio.all_tasks()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        yield
        async with asyncio.timeout(timeout):
            while pending := asyncio.all_tasks() - before:
                await asyncio.wait(pending)
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert not reported, [context.get("message") for context in reported]
