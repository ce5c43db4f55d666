"""Opening a connection within a bound when the opener does not give way to cancellation.

The Deepgram SDK's WebSocket connect (legacy websockets) answers a cancellation by half-closing
the TCP connection and waiting for the server's close, for up to its own 10 s: a stalled server or
a dead path holds it that long, so `asyncio.timeout` around it does not bound it. `enter_within`
runs the attempt as a task of its own and stops waiting at the bound; the attempt is left to end
in the background, where its error is retrieved and whatever it opened is closed.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, TypeVar

T = TypeVar("T")

_left_behind: set[asyncio.Task[Any]] = set()   # attempts given up on, and their clean-ups, until done


async def enter_within(stack: AsyncExitStack, manager: AbstractAsyncContextManager[T], timeout_s: float,
                       *, name: str = "connect") -> T:
    """Enter `manager` within `timeout_s` and push its exit onto `stack`; else raise TimeoutError
    (or the attempt's own error). Giving up, by the bound or a cancellation, leaves the attempt
    behind rather than waiting for it; nothing is pushed onto `stack` then."""
    attempt = AsyncExitStack()
    entering = asyncio.get_running_loop().create_task(attempt.enter_async_context(manager), name=name)
    try:
        done, _ = await asyncio.wait({entering}, timeout=timeout_s)
    except asyncio.CancelledError:
        _leave_behind(entering, attempt)
        raise
    if not done:
        _leave_behind(entering, attempt)
        raise TimeoutError(f"not open within {timeout_s:g} s")
    value = entering.result()
    stack.push_async_exit(attempt)
    return value


def _leave_behind(entering: asyncio.Task[Any], attempt: AsyncExitStack) -> None:
    """Stop waiting for `entering`: once it ends, opened or not, retrieve its error (nobody awaits
    it) and close what it opened."""
    def ended(task: asyncio.Task[Any]) -> None:
        _left_behind.discard(task)
        if not task.cancelled():
            task.exception()
        closing = task.get_loop().create_task(_quietly(attempt.aclose()), name=f"{task.get_name()}-close")
        _left_behind.add(closing)
        closing.add_done_callback(_left_behind.discard)

    entering.cancel()   # openers that honour it end at once; the SDK's ends on its own time
    _left_behind.add(entering)
    entering.add_done_callback(ended)


async def _quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception:
        pass
