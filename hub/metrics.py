"""Prometheus metrics: ``GET /metrics`` in the text format of the ``prometheus_client`` library.

Nothing here adds work to the broker's or ingest's code: a collector reads the hub's existing
counters when Prometheus scrapes (ingest's stats, the alarms, the routes' counters, the retained
store, the process), and two small observers the hub registers like any other listener keep
what the broker only reports as it happens: an event sink (connections by network, refusals
and auth failures by reason, including the repeats the broker's throttle held back) and a
message listener (messages and payload bytes by topic kind: one dict increment a message).
The store's write latency is timed around each batch commit (``TimedStore``), once per batch.

Names follow Prometheus's conventions: a ``hub_`` prefix, base units (seconds, bytes),
``_total`` for counters, and no per-device label (a fleet of 10,000 would make 10,000 series).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.commitlog import Batch
from hub.topics import PREFIX, Kind

if TYPE_CHECKING:  # aiohttp loads with the web side, after the MQTT listener is up
    from aiohttp import web

log = logging.getLogger(__name__)

# Hub events that refuse or drop something a client sent, as the broker and console name them.
REFUSALS = frozenset(
    {
        "auth_failure",
        "tls_violation",
        "filter_violation",
        "malformed",
        "payload_too_large",
        "rate_limit",
        "queue_full",
        "refused",
        "quota_exceeded",
        "login_failure",
    }
)
AUTH_FAILURES = {"auth_failure": "mqtt", "login_failure": "console"}
KIND_CACHE = 10_000  # topics whose kind the message counter remembers
KIND_CACHE_TOPIC_MAX = 128  # longer topics are classified every time (the cache stays small)
MAX_EVENT_KINDS = 200  # distinct event names counted (they are the hub's own words)
KIND_NAMES = {
    Kind.TELEMETRY.value: "telemetry",
    Kind.STATUS.value: "status",
    Kind.META.value: "health",
    Kind.COMMAND.value: "command",
    Kind.REPLY.value: "reply",
}
# Store commits: most take milliseconds; a slow disk or a far PostgreSQL shows in the tail.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def topic_kind(topic: str) -> str:
    """A topic's kind for the messages counter: a device topic's kind, ``event`` for hub
    events, ``other`` for anything else (never the topic itself: that would be per device)."""
    if topic.startswith(PREFIX):
        parts = topic.split("/", 3)
        if len(parts) >= 3:
            return KIND_NAMES.get(parts[2], "other")
        return "other"
    return "event" if topic.startswith("$hub/") else "other"


@dataclass
class Observed:
    """What the broker reports as it happens, kept for the collector."""

    networks: dict[str, str] = field(default_factory=dict)  # connection -> network
    connects: dict[str, int] = field(default_factory=dict)  # network -> connections so far
    disconnects: dict[str, int] = field(default_factory=dict)  # reason -> count
    events: dict[str, int] = field(default_factory=dict)  # event name -> count (+ suppressed)
    messages: dict[str, int] = field(default_factory=dict)  # topic kind -> messages routed
    payload_bytes: dict[str, int] = field(default_factory=dict)  # topic kind -> bytes

    def on_event(self, kind: str, event: dict[str, Any]) -> None:
        """The event sink: connections and every refusal, with the repeats held back."""
        count = 1 + int(event.get("suppressed") or 0)
        if kind in self.events or len(self.events) < MAX_EVENT_KINDS:
            self.events[kind] = self.events.get(kind, 0) + count
        # One connection: its client id and peer address (a takeover's old and new differ).
        client = f"{event.get('client_id') or ''} {event.get('peer') or ''}"
        if kind == "connected":
            network = str(event.get("network") or "unknown")
            self.networks[client] = network
            self.connects[network] = self.connects.get(network, 0) + 1
        elif kind == "disconnected":
            self.networks.pop(client, None)
            reason = str(event.get("reason") or "lost")[:32]
            if reason in self.disconnects or len(self.disconnects) < MAX_EVENT_KINDS:
                self.disconnects[reason] = self.disconnects.get(reason, 0) + 1

    # topic -> its kind, for topics seen before (a fleet publishes the same ones over and over)
    kinds: dict[str, str] = field(default_factory=dict, repr=False)

    def on_message(self, topic: str, payload: bytes) -> Batch | None:
        """The message listener: one increment per message routed; stores nothing."""
        kind = self.kinds.get(topic)
        if kind is None:
            kind = topic_kind(topic)
            if len(topic) <= KIND_CACHE_TOPIC_MAX:
                if len(self.kinds) >= KIND_CACHE:
                    self.kinds.clear()
                self.kinds[topic] = kind
        messages, sizes = self.messages, self.payload_bytes
        messages[kind] = messages.get(kind, 0) + 1
        sizes[kind] = sizes.get(kind, 0) + len(payload)
        return None


@dataclass
class Sources:
    """Where the collector reads the hub's counters; each returns the current values."""

    storage: Callable[[], dict[str, Any]] | None = None  # asdict(ingest.stats)
    retained: Callable[[], int] | None = None  # retained messages
    alarms: Callable[[], int] | None = None  # active alarms
    commands: Callable[[], int] | None = None  # commands waiting for a reply
    routes: Callable[[], list[dict[str, Any]]] | None = None  # hub.routes counters
    broker: Callable[[], dict[str, Any]] | None = None  # Broker.stats(): traffic, sessions
    extra: list[Callable[[], Iterable[Metric]]] = field(default_factory=list)


def _counter(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class HubCollector(Collector):
    """Turns the hub's counters into metric families at scrape time."""

    def __init__(self, observed: Observed, sources: Sources) -> None:
        self.observed = observed
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        seen = self.observed
        by_network: dict[str, int] = {}
        for network in seen.networks.values():
            by_network[network] = by_network.get(network, 0) + 1
        connections = GaugeMetricFamily(
            "hub_mqtt_connections",
            "MQTT connections by network and state",
            labels=["network", "state"],
        )
        for network, count in sorted(by_network.items()):
            connections.add_metric([network, "connected"], count)
        yield connections
        yield _counter(
            "hub_mqtt_connects", "MQTT logins accepted, by network", "network", seen.connects
        )
        yield _counter(
            "hub_mqtt_disconnects", "MQTT disconnections by reason", "reason", seen.disconnects
        )
        yield _counter(
            "hub_messages_routed",
            "messages the broker routed, by topic kind",
            "kind",
            seen.messages,
        )
        yield _counter(
            "hub_message_payload_bytes",
            "payload bytes the broker routed, by topic kind",
            "kind",
            seen.payload_bytes,
        )
        refused = {k: v for k, v in seen.events.items() if k in REFUSALS}
        yield _counter(
            "hub_refused_messages",
            "messages, logins and subscriptions refused or dropped, by reason",
            "reason",
            refused,
        )
        auth = {AUTH_FAILURES[k]: v for k, v in seen.events.items() if k in AUTH_FAILURES}
        yield _counter(
            "hub_auth_failures", "failed logins by where they came from", "source", auth
        )
        yield CounterMetricFamily(
            "hub_filter_violations",
            "publishes and subscriptions outside an identity's topic rules",
            value=seen.events.get("filter_violation", 0),
        )
        yield _counter("hub_events", "hub events by name", "event", seen.events)
        yield from self._storage()
        yield from self._broker()
        src = self.sources
        if src.retained is not None:
            yield _gauge("hub_retained_messages", "retained messages held", src.retained())
        if src.alarms is not None:
            yield _gauge("hub_alarms_active", "alarms raised and not cleared", src.alarms())
        if src.commands is not None:
            yield _gauge("hub_commands_pending", "commands waiting for a reply", src.commands())
        yield from _route_metrics(src.routes() if src.routes is not None else [])
        for more in src.extra:
            yield from more()

    def _broker(self) -> Iterator[Metric]:
        stats = self.sources.broker() if self.sources.broker is not None else {}
        for key, name, doc in (
            ("messages_received", "hub_mqtt_messages_received", "PUBLISHes from clients, by QoS"),
            ("messages_sent", "hub_mqtt_messages_sent", "deliveries to sessions, by QoS"),
        ):
            if key in stats:
                yield _counter(name, doc, "qos", {str(q): n for q, n in stats[key].items()})
        for key, name, doc in (
            ("bytes_received", "hub_mqtt_received_bytes", "MQTT bytes read from clients"),
            ("bytes_sent", "hub_mqtt_sent_bytes", "MQTT bytes written to clients"),
        ):
            if key in stats:
                yield CounterMetricFamily(name, doc, value=stats[key])
        if "sessions_persistent" in stats:
            sessions = GaugeMetricFamily(
                "hub_mqtt_sessions", "MQTT sessions held, by kind", labels=["kind"]
            )
            sessions.add_metric(["persistent"], stats["sessions_persistent"])
            sessions.add_metric(["clean"], stats["sessions_clean"])
            yield sessions
        for key, name, doc in (
            ("queued_messages", "hub_mqtt_queued_messages", "messages queued for sessions"),
            (
                "inflight_messages",
                "hub_mqtt_inflight_messages",
                "QoS 1/2 deliveries not yet acknowledged",
            ),
        ):
            if key in stats:
                yield _gauge(name, doc, stats[key])

    def _storage(self) -> Iterator[Metric]:
        if self.sources.storage is None:
            return
        stats = self.sources.storage()
        for key, name, doc in (
            ("received", "hub_readings_received", "readings taken for storage"),
            ("stored", "hub_readings_stored", "readings committed to the store"),
            ("duplicates", "hub_readings_duplicate", "readings already stored (resends)"),
            ("malformed", "hub_readings_malformed", "readings not stored: not the contract"),
            (
                "refused",
                "hub_readings_refused",
                "readings not acknowledged: store queue full or store failing",
            ),
            ("store_failures", "hub_store_outages", "times the store started failing"),
        ):
            yield CounterMetricFamily(name, doc, value=int(stats.get(key) or 0))
        yield _gauge(
            "hub_store_queue_depth",
            "readings waiting for a commit",
            int(stats.get("pending") or 0),
        )
        yield _gauge(
            "hub_store_failing",
            "1 while the store refuses writes",
            1 if stats.get("store_failing") else 0,
        )
        if stats.get("disk_free_bytes") is not None:
            yield _gauge(
                "hub_data_dir_free_bytes",
                "free space of the data dir's filesystem",
                stats["disk_free_bytes"],
            )


def _route_metrics(routes: list[dict[str, Any]]) -> Iterator[Metric]:
    """Per route (routes are few, named in the config file): deliveries, retries, dead
    letters, skipped loops and the durable queue's depth."""
    families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
        "delivered": CounterMetricFamily(
            "hub_route_deliveries", "messages a route delivered", labels=["route"]
        ),
        "retries": CounterMetricFamily(
            "hub_route_retries",
            "delivery attempts that failed and were tried again",
            labels=["route"],
        ),
        "dead": CounterMetricFamily(
            "hub_route_dead_letters",
            "messages a route gave up on (kept in its dead-letter store)",
            labels=["route"],
        ),
        "loops": CounterMetricFamily(
            "hub_route_loops_skipped",
            "messages a route skipped because a route produced them",
            labels=["route"],
        ),
        "queued": GaugeMetricFamily(
            "hub_route_queue_depth",
            "messages waiting in a route's durable queue",
            labels=["route"],
        ),
    }
    for route in routes:
        for key, family in families.items():
            family.add_metric([str(route["name"])], float(route.get(key) or 0))
    yield from families.values()


class TimedStore:
    """The store as ingest sees it, with each batch commit timed into a histogram (on the
    ingest log's thread, once per batch)."""

    def __init__(self, store: Any, histogram: Histogram) -> None:
        self._store = store
        self._histogram = histogram

    def add(self, rows: list[Any]) -> int:
        start = time.perf_counter()
        try:
            return int(self._store.add(rows))
        finally:
            self._histogram.observe(time.perf_counter() - start)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class Metrics:
    """The hub's metrics: the collector and the store histogram (read on the event loop, no
    I/O), and the process metrics (read from /proc, so off the loop)."""

    def __init__(self, sources: Sources | None = None, *, public: bool = False) -> None:
        self.public = public  # readable without a token (metrics_public)
        self.registry = CollectorRegistry(auto_describe=False)
        self.observed = Observed()
        self.sources = sources or Sources()
        self.registry.register(HubCollector(self.observed, self.sources))
        self.store_latency = Histogram(
            "hub_store_write_seconds",
            "time to commit one batch of readings to the store",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.process = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.process)
        PlatformCollector(registry=self.process)

    def timed(self, store: Any) -> Any:
        return TimedStore(store, self.store_latency)

    async def scrape(self, request: web.Request) -> web.Response:
        """GET /metrics: Prometheus's text format (an admin token, or anyone when public)."""
        from aiohttp import web  # loaded already: aiohttp serves this request

        hub = generate_latest(self.registry)
        process = await asyncio.to_thread(generate_latest, self.process)
        return web.Response(body=hub + process, headers={"Content-Type": CONTENT_TYPE_LATEST})
