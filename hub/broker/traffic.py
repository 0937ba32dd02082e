"""What the broker moved, counted on the hot path with one list or integer increment each, and
read by the metrics endpoint at scrape time (hub/metrics.py via ``Broker.stats()``)."""

from __future__ import annotations

from typing import Any


class Traffic:
    __slots__ = ("bytes_in", "bytes_out", "received", "sent")

    def __init__(self) -> None:
        self.received = [0, 0, 0]  # PUBLISHes from clients (wills included), by QoS
        self.sent = [0, 0, 0]  # deliveries to sessions (sent or queued), by QoS
        self.bytes_in = 0  # MQTT bytes read from clients (TCP, TLS, WebSocket)
        self.bytes_out = 0  # MQTT bytes written to them


def session_stats(sessions: Any) -> dict[str, int]:
    """Counts over the sessions (an iterable of hub.broker.session.Session): persistent and
    clean ones, queued and in-flight messages. A pass over every session: scrape time only."""
    persistent = queued = inflight = 0
    total = 0
    for session in sessions:
        total += 1
        if not session.clean:
            persistent += 1
        if session.queue:
            queued += len(session.queue)
        inflight += len(session.inflight)
    return {
        "sessions_persistent": persistent,
        "sessions_clean": total - persistent,
        "queued_messages": queued,
        "inflight_messages": inflight,
    }
