"""Hub events about clients, and the warnings that go with them, throttled per client.

Repeated warnings of one kind (and quota) about one client go out, as a log line and a hub
event, once per 10 s with the number held back since (``suppressed``). An event raised while
an event is being delivered (its subscriber's queue is full) is dropped and counted, never
reported: that is what once recursed until RecursionError.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hub.broker.throttle import Throttle

if TYPE_CHECKING:
    from hub.broker.connection import Connection
    from hub.broker.session import Session

log = logging.getLogger(__name__)

EventSink = Callable[[str, dict[str, Any]], None]


class EventReporting:
    """The broker core's events: ``report`` (always), ``warn`` (throttled, and logged)."""

    event_sinks: list[EventSink]
    events_dropped: int  # events raised while an event was being delivered

    def init_reporting(self) -> None:
        self.event_sinks = []
        self.events_dropped = 0
        self._emitting = False
        self._throttle: Throttle[tuple[str, str]] = Throttle()

    def report(self, kind: str, conn: Connection, detail: str = "", **extra: Any) -> None:
        identity = conn.identity
        event = {
            "kind": kind,
            "client_id": conn.client_id,
            "identity": getattr(identity, "kind", None),
            "name": getattr(identity, "name", None) or conn.username,
            "network": conn.link.network,
            "peer": f"{conn.link.peer[0]}:{conn.link.peer[1]}",
            "detail": detail,
            **extra,
        }
        self._emit(kind, event)

    def warn(
        self,
        kind: str,
        conn: Connection,
        detail: str,
        level: int = logging.WARNING,
        *,
        variant: str = "",
        **extra: Any,
    ) -> None:
        """A log line and a hub event about a client misbehaving, at most once per client per
        kind (and quota or variant) per window (10 s); the next one says how many were held
        back."""
        who = conn.key or conn.client_id or conn.link.peer[0]
        variant = extra.get("quota") or variant
        held = self._throttle.allow((who, f"{kind}:{variant}" if variant else kind))
        if held is None:
            return
        if held:
            extra["suppressed"] = held
        log.log(level, "%s: %s: %s%s", conn, kind, detail, self._more(held))
        self.report(kind, conn, detail, **extra)

    def _more(self, held: int) -> str:
        return f" ({held} more in the last {self._throttle.window:.0f} s)" if held else ""

    def _report_offline(self, kind: str, session: Session, detail: str, **extra: Any) -> None:
        """An event (and a warning) about a persistent session whose client is not connected,
        throttled like ``warn``."""
        held = self._throttle.allow((session.client_id, kind))
        if held is None:
            return
        log.warning(
            "offline session %s: %s: %s%s", session.client_id, kind, detail, self._more(held)
        )
        event = {
            "kind": kind,
            "client_id": session.client_id,
            "identity": None,
            "name": None,
            "network": None,
            "peer": None,
            "detail": detail,
            **extra,
        }
        if held:
            event["suppressed"] = held
        self._emit(kind, event)

    def _emit(self, kind: str, event: dict[str, Any]) -> None:
        if self._emitting:
            # Delivering an event raised another (its subscriber's queue is full): dropped and
            # counted, never reported (an event about a dropped event would do the same).
            self.events_dropped += 1
            return
        self._emitting = True
        try:
            for sink in self.event_sinks:
                try:
                    sink(kind, event)
                except Exception:
                    log.exception("event sink failed on %s", kind)
        finally:
            self._emitting = False
