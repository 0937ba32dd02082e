"""tests/support/waits.py: eventually() returns what the check found, retries falsy results and
failed assertions, and times out naming what it waited for and the last failure."""

import asyncio
import itertools

import pytest

from tests.support.waits import eventually, eventually_async


def test_returns_the_first_truthy_result() -> None:
    """Falsy results and failed assertions are retried; the first truthy result is returned."""
    answers = iter([None, 0, [], "", AssertionError("not yet"), ["found"]])

    def check() -> object:
        answer = next(answers)
        if isinstance(answer, AssertionError):
            raise answer
        return answer

    assert eventually(check, 5, "a list", poll=0.001) == ["found"]


def test_times_out_naming_what_and_the_last_failure() -> None:
    """A check that never holds fails after the timeout with what was awaited and its last
    assertion message; other exceptions are not swallowed."""
    counter = itertools.count()

    def check() -> bool:
        raise AssertionError(f"only {next(counter)} rows")

    with pytest.raises(AssertionError, match=r"waiting for 3 rows; last check: only \d+ rows"):
        eventually(check, 0.05, "3 rows", poll=0.01)
    with pytest.raises(ZeroDivisionError):
        eventually(lambda: 1 / 0, 1, "nothing")


def test_async_checks_and_coroutine_checks() -> None:
    """eventually_async lets the loop run between checks and awaits a coroutine check."""

    async def main() -> None:
        done = asyncio.Event()
        asyncio.get_running_loop().call_later(0.02, done.set)
        assert await eventually_async(done.is_set, 5, "the event", poll=0.005)

        async def check() -> int:
            return 7 if done.is_set() else 0

        assert await eventually_async(check, 5, "seven") == 7
        with pytest.raises(AssertionError, match="waiting for never"):
            await eventually_async(lambda: False, 0.03, "never", poll=0.01)

    asyncio.run(main())
