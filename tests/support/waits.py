"""The suite's one way to wait: poll a check until it holds or a (scaled) deadline passes.

``check`` returns something truthy once what is awaited has happened (that value is returned);
until then it returns something falsy or raises AssertionError (an assertion-style check ends
with ``return True``; its last failure is quoted if time runs out). ``timeout`` is in seconds
before TIMEOUT_FACTOR; ``what`` names what was awaited. Never sleep and then assert: what
happens eventually is awaited with ``eventually``; a sleep that makes time pass on purpose (for
a keepalive or a session to expire) stays, with a comment saying so.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tests.support.hubproc import scaled

T = TypeVar("T")
POLL = 0.05  # seconds between checks


class _Wait:
    """The deadline and the last failure of one wait."""

    def __init__(self, timeout: float, what: str) -> None:
        self.limit = scaled(timeout)
        self.deadline = time.monotonic() + self.limit
        self.what = what
        self.last = ""
        self.checks = 0

    def failed(self, exc: AssertionError) -> None:
        self.last = str(exc).strip() or "AssertionError"

    def left(self, poll: float) -> float:
        """How long to pause before the next check; raises once the deadline has passed."""
        self.checks += 1
        left = self.deadline - time.monotonic()
        if left <= 0:
            detail = f"; last check: {self.last}" if self.last else ""
            raise AssertionError(
                f"timed out after {self.limit:.1f} s ({self.checks} checks) waiting for "
                f"{self.what}{detail}"
            )
        return min(poll, left)


def eventually(check: Callable[[], T], timeout: float, what: str, *, poll: float = POLL) -> T:
    """Blocks until ``check()`` returns something truthy and returns it; fails after
    ``timeout`` (scaled) naming ``what``. For tests outside an event loop."""
    wait = _Wait(timeout, what)
    while True:
        try:
            if result := check():
                return result
        except AssertionError as exc:
            wait.failed(exc)
        time.sleep(wait.left(poll))


async def eventually_async(
    check: Callable[[], T] | Callable[[], Awaitable[T]],
    timeout: float,
    what: str,
    *,
    poll: float = POLL,
) -> T:
    """``eventually`` inside an event loop: the loop runs between checks, and ``check`` may be
    a coroutine function."""
    wait = _Wait(timeout, what)
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result  # type: ignore[return-value]
        except AssertionError as exc:
            wait.failed(exc)
        await asyncio.sleep(wait.left(poll))
