"""Hub events (hub/events.py) without sockets: the topic per source, the severity per kind,
hostile ids made safe as one topic level, and the JSON body."""

import asyncio
import json
from typing import Any

import pytest

from hub.events import MAX_FIELDS, MAX_ID, MAX_TEXT, ROOT, SEVERITY, HubEvents, event_topic


def publish_one(kind: str, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """What HubEvents publishes for one event: its topic and its decoded body."""
    sent: list[tuple[str, bytes]] = []
    HubEvents(lambda topic, payload: sent.append((topic, payload)))(kind, event)
    ((topic, payload),) = sent
    return topic, json.loads(payload)


@pytest.mark.parametrize(
    ("event", "topic"),
    [
        ({"identity": "device", "name": "dev-1", "client_id": "dev-1"}, "device/dev-1"),
        ({"identity": "token", "name": "dash", "client_id": "web-7"}, "token/dash"),
        ({"identity": "account", "name": "ada"}, "account/ada"),
        ({"identity": None, "name": None, "client_id": "anon-3"}, "client/anon-3"),
        ({"identity": "anonymous", "name": "x", "client_id": "c-1"}, "client/c-1"),
        ({"client_id": "c-2"}, "client/c-2"),
        ({}, "client/unknown"),
        ({"identity": "device", "name": None}, "device/unknown"),
        ({"identity": "device", "name": ""}, "device/unknown"),
    ],
)
def test_topic_names_the_source_and_identity(event: dict[str, Any], topic: str) -> None:
    """Devices, tokens and accounts are named by identity; anyone else by client id."""
    assert event_topic("connected", event) == f"{ROOT}/{topic}/info"


def test_every_kind_has_its_severity() -> None:
    """Each kind of event is published under its own severity; unknown kinds are info."""
    event = {"identity": "device", "name": "dev-1", "reason": "clean"}
    for kind, severity in SEVERITY.items():
        assert severity in ("info", "warning", "error")
        assert event_topic(kind, event) == f"{ROOT}/device/dev-1/{severity}"
    assert event_topic("something_new", event) == f"{ROOT}/device/dev-1/info"
    assert SEVERITY["auth_failure"] == "warning" and SEVERITY["queue_full"] == "error"


@pytest.mark.parametrize(
    ("reason", "severity"),
    [
        ("clean", "info"),
        ("shutdown", "info"),
        ("keepalive", "warning"),
        (None, "warning"),
        ("lost", "warning"),
        ("taken_over", "warning"),
    ],
)
def test_a_disconnect_is_a_warning_unless_clean(reason: str | None, severity: str) -> None:
    """A clean DISCONNECT or the hub's shutdown is info; any other disconnect a warning."""
    event = {"identity": "device", "name": "dev-1", "reason": reason}
    assert event_topic("disconnected", event).endswith(f"/{severity}")


HOSTILE_IDS = [
    "a/b",
    "+",
    "#",
    "a/+/#",
    "x\x00y",
    "../..",
    "$SYS",
    "/",
    "a" * 1000,
    "é/#" * 40,
    "<script>alert(1)</script>",
    "",
    " ",
    "\n",
    12345,
    ["a/b"],
]


@pytest.mark.parametrize("ident", HOSTILE_IDS)
def test_hostile_ids_become_one_safe_topic_level(ident: Any) -> None:
    """Whatever a client sends as its id, the event topic has exactly five levels, no
    wildcard or NUL, and an id level of at most MAX_ID characters."""
    for event in ({"client_id": ident}, {"identity": "device", "name": ident}):
        topic = event_topic("auth_failure", event)
        levels = topic.split("/")
        assert len(levels) == 5, topic
        assert not set("+#\x00") & set(topic), topic
        assert 0 < len(levels[3]) <= MAX_ID, topic
        assert levels[:3] == ["$hub", "events", levels[2]] and levels[4] == "warning"


def test_safe_ids_are_kept_as_they_are() -> None:
    """An id that is already a valid topic level is not altered (at most MAX_ID chars)."""
    assert event_topic("connected", {"client_id": "dev_1-a.B"}).split("/")[3] == "dev_1-a.B"
    long = "x" * (MAX_ID + 10)
    assert event_topic("connected", {"client_id": long}).split("/")[3] == "x" * MAX_ID


def test_body_is_compact_json_with_time_and_kind_without_empty_fields() -> None:
    """The body holds the time, the kind and every non-empty field but the internal `kind`."""
    event = {
        "kind": "auth_failure",
        "identity": "device",
        "name": "dev-1",
        "client_id": "dev-1",
        "peer": "10.0.0.9:5000",
        "detail": "",
        "network": None,
        "suppressed": 3,
    }
    sent: list[bytes] = []
    HubEvents(lambda _topic, payload: sent.append(payload))("auth_failure", event)
    (payload,) = sent
    assert b" " not in payload  # compact separators
    body = json.loads(payload)
    assert isinstance(body.pop("time"), float)
    assert body == {
        "event": "auth_failure",
        "identity": "device",
        "name": "dev-1",
        "client_id": "dev-1",
        "peer": "10.0.0.9:5000",
        "suppressed": 3,
    }


def test_events_as_the_broker_and_console_make_them_carry_no_secret() -> None:
    """The fields the broker (hub/broker/reporting.py) and the console (hub/web) report hold
    identities, addresses and reasons: a login's password appears in no topic or body."""
    secret = "s3cret-Pa55word"
    shapes = [
        (
            "auth_failure",
            {
                "kind": "auth_failure",
                "client_id": "dev-1",
                "identity": None,
                "name": "dev-1",
                "network": "tcp",
                "peer": "127.0.0.1:4000",
                "detail": "bad credentials",
            },
        ),
        ("login_failure", {"identity": "account", "name": "ada", "peer": "127.0.0.1"}),
        ("login", {"identity": "account", "name": "ada", "peer": "127.0.0.1"}),
        ("device_added", {"identity": "account", "name": "ada", "by": "ada", "device": "d"}),
    ]
    for kind, event in shapes:
        topic, body = publish_one(kind, event)
        assert secret not in topic + json.dumps(body)
        assert not {"password", "secret", "token"} & set(body)


def test_a_secret_field_handed_to_the_sink_is_never_published() -> None:
    """An event that wrongly carries a password, secret or token field does not publish it."""
    secret = "s3cret-Pa55word"
    for field in ("password", "secret", "token", "api_key", "session_cookie", "csrf"):
        topic, body = publish_one("auth_failure", {"client_id": "c-1", field: secret})
        assert secret not in topic + json.dumps(body)
        assert body["client_id"] == "c-1"


@pytest.mark.parametrize(
    "kind", ["", "Connected", "a/b", "x" * 33, "auth failure", "1st", "kind\n", None, 7]
)
def test_a_bad_kind_is_refused(kind: Any) -> None:
    """An event kind that is not a short lowercase name is the caller's bug: ValueError, and
    nothing is published."""
    sent: list[bytes] = []
    with pytest.raises(ValueError, match="bad event kind"):
        HubEvents(lambda _topic, payload: sent.append(payload))(kind, {"client_id": "c-1"})
    assert sent == []


def test_hostile_values_are_cut_or_dropped() -> None:
    """A device-controlled string is cut to MAX_TEXT characters; values that are not null,
    booleans, finite numbers or strings (lists, dicts, bytes, NaN, huge integers) and fields
    with bad names are dropped; the sink's own time and event cannot be overwritten."""
    event: dict[Any, Any] = {
        "client_id": "c" * 100_000,
        "detail": "é" * 5000,
        "topics": ["a"] * 1000,
        "nested": {"a": {"b": 1}},
        "raw": b"\x00" * 10,
        "value": float("nan"),
        "peak": float("inf"),
        "big": 10**400,
        "count": 3,
        "ratio": 0.5,
        "will": False,
        "Upper": 1,
        "a/b": 1,
        7: 1,
        "x" * 33: 1,
        "time": 0,
        "event": "forged",
    }
    topic, body = publish_one("malformed", event)
    assert len(body.pop("client_id")) == len(body.pop("detail")) == MAX_TEXT
    assert isinstance(body.pop("time"), float)
    assert body == {"event": "malformed", "count": 3, "ratio": 0.5, "will": False}
    assert len(topic.split("/")[3]) == MAX_ID


def test_an_event_has_at_most_max_fields() -> None:
    """However many fields a caller hands over, the body holds MAX_FIELDS of them at most,
    so one event's size is bounded."""
    event = {f"f{i}": "v" * MAX_TEXT for i in range(MAX_FIELDS * 4)}
    _topic, body = publish_one("connected", event)
    assert len(body) == MAX_FIELDS + 2  # with time and event
    assert len(json.dumps(body)) < (MAX_FIELDS + 2) * (MAX_TEXT + 40)


def test_a_batched_sink_publishes_once_per_loop_pass_in_order() -> None:
    """Batched, events are published after the pass that raised them, oldest first (each
    device's events keep their order), and a bad kind is still refused at once."""
    sent: list[tuple[str, dict[str, Any]]] = []
    sink = HubEvents(
        lambda topic, payload: sent.append((topic, json.loads(payload))), batched=True
    )

    async def scenario() -> None:
        for n in range(3):
            for kind in ("connected", "disconnected"):
                sink(kind, {"identity": "device", "name": f"dev-{n}", "client_id": f"dev-{n}"})
        with pytest.raises(ValueError):
            sink("Bad Kind", {})
        assert sent == []  # nothing yet: the pass that raised them is still running
        await asyncio.sleep(0)
        assert [(t.split("/")[3], b["event"]) for t, b in sent] == [
            (f"dev-{n}", kind) for n in range(3) for kind in ("connected", "disconnected")
        ]

    asyncio.run(scenario())
