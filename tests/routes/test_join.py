"""The handle of a message both ingest and a route store: acknowledged only once both have
committed, refused or failed if either is (no socket)."""

from __future__ import annotations

from hub.commitlog import COMMITTED, FAILED, PENDING, REFUSED, Batch
from hub.routes.service import join


class Seen:
    def __init__(self) -> None:
        self.done: list[int] = []

    def batch_done(self, batch: Batch) -> None:
        self.done.append(batch.state)


def test_committed_only_when_both_are() -> None:
    """The joined handle stays pending until the second commit, then is committed once."""
    ingest, route = Batch(1), Batch(7)
    joined = join(ingest, route)
    assert joined is not None and joined.state == PENDING
    seen = Seen()
    joined.wait(seen)
    ingest.finish(COMMITTED)
    assert joined.state == PENDING and seen.done == []
    route.finish(COMMITTED)
    assert joined.state == COMMITTED and seen.done == [COMMITTED]


def test_failed_or_refused_if_either_is() -> None:
    """One failed commit fails the message (its sender resends); a refusal refuses it; a
    listener that stores nothing leaves the other's handle as it is."""
    ingest, route = Batch(1), Batch(2)
    joined = join(ingest, route)
    assert joined is not None
    route.finish(FAILED)
    assert joined.state == FAILED
    ingest.finish(COMMITTED)
    assert joined.state == FAILED
    assert join(Batch(3), REFUSED) is REFUSED and join(REFUSED, Batch(4)) is REFUSED
    alone = Batch(5)
    assert join(alone, None) is alone and join(None, alone) is alone and join(None, None) is None
    done = Batch(6, COMMITTED)
    assert join(done, Batch(8, COMMITTED)).state == COMMITTED  # type: ignore[union-attr]
