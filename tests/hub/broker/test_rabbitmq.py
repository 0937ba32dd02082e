"""Cluster mode's plain logic without a cluster: routing keys, the auth backend's answers from
the hub's gatekeeper (and its cache), presence from event-exchange headers, the auth
listener's caller check and hostile input."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from hub.broker import Authorizer
from hub.broker.login import Login
from hub.broker.rabbitmq.keys import mqtt_topic, routing_key
from hub.broker.rabbitmq.presence import Presence, connection
from hub.broker.rabbitmq.settings import load_credentials
from hub.config import ConfigError, HubConfig
from hub.devicepolicy import DevicePolicy
from hub.registry import Registry
from hub.security import Gatekeeper, TokenClaims, create_token, load_key
from hub.web.rabbitauth import AuthBackend


def test_topics_and_routing_keys_map_both_ways() -> None:
    """`/` is `.` and `+` is `*` on amq.topic; `#` stays; the mapping round-trips."""
    assert routing_key("d/dev-1/t/temp") == "d.dev-1.t.temp"
    assert routing_key("d/+/t/+") == "d.*.t.*"
    assert routing_key("$hub/events/#") == "$hub.events.#"
    for topic in ("d/x/s", "d/+/m", "$hub/events/#", "a"):
        assert mqtt_topic(routing_key(topic)) == topic


class _Env:
    def __init__(self, tmp: Path) -> None:
        self.registry = Registry(tmp)
        self.secret = self.registry.add("dev-1", allow_insecure=True)
        self.key = load_key(tmp)
        self.events: list[tuple[str, dict[str, Any]]] = []
        gate = Gatekeeper(self.registry, self.key, allow_anonymous=False)
        self.login = Login(gate, 10)
        policy = DevicePolicy(max_sensors=2, max_sensor_name=8)
        self.authz = Authorizer(
            self.login,
            lambda k, e: self.events.append((k, e)),
            hub_user="hub",
            ttl=60,
            topic_check=lambda topic: policy(None, topic, b"", False),
        )


@pytest.fixture
def env(tmp_path: Path) -> Any:
    one = _Env(tmp_path)
    yield one
    one.login.close()
    one.registry.close()


def test_a_device_logs_in_and_is_held_to_its_topic_rules(env: _Env) -> None:
    """A device's right secret is allowed, then its own topics only; a publish outside its
    rules is denied with a filter_violation event."""
    a = env.authz
    assert asyncio.run(a.user("dev-1", env.secret, "dev-1")) == "allow"
    assert a.vhost("dev-1", "/", "dev-1") == "allow"
    assert a.topic("dev-1", "/", "amq.topic", "write", "d.dev-1.t.temp", "dev-1") == "allow"
    assert a.topic("dev-1", "/", "amq.topic", "read", "d.dev-1.c", "dev-1") == "allow"
    assert a.topic("dev-1", "/", "amq.topic", "write", "d.dev-2.t.temp", "dev-1") == "deny"
    assert a.topic("dev-1", "/", "amq.topic", "read", "d.*.t.*", "dev-1") == "deny"
    assert [k for k, _ in env.events] == ["filter_violation"] * 2
    assert (
        a.resource("dev-1", "/", "queue", "mqtt-subscription-dev-1qos1", "configure", "dev-1")
        == "allow"
    )
    assert (
        a.resource("dev-1", "/", "queue", "mqtt-subscription-other-qos1", "read", "dev-1")
        == "deny"
    )
    assert a.resource("dev-1", "/", "exchange", "amq.topic", "configure", "dev-1") == "deny"
    assert a.vhost("dev-1", "other", "dev-1") == "deny"


def test_sensor_names_and_sensors_per_device_are_checked_on_the_routing_key(env: _Env) -> None:
    """The topic check holds a device's telemetry to the contract's sensor names (characters,
    max_sensor_name) and to max_sensors sensors, with the embedded broker's events
    (`malformed`, `quota_exceeded` with `quota: sensors`, naming the device); status and
    health topics pass (their payloads are checked when consumed)."""
    a = env.authz
    assert asyncio.run(a.user("dev-1", env.secret, "dev-1")) == "allow"

    def write(key: str) -> str:
        return a.topic("dev-1", "/", "amq.topic", "write", key, "dev-1")

    assert write("d.dev-1.t.temp") == "allow"
    assert write("d.dev-1.t.Temp") == "deny"
    assert write("d.dev-1.t.humidity9") == "deny"  # 9 characters, over max_sensor_name
    assert write("d.dev-1.t.hum") == "allow"
    assert write("d.dev-1.t.co2") == "deny"  # a third sensor
    assert write("d.dev-1.t.temp") == "allow"  # one it has
    assert write("d.dev-1.s") == "allow" and write("d.dev-1.m") == "allow"
    events = [(k, e) for k, e in env.events]
    assert [k for k, _ in events] == ["malformed", "malformed", "quota_exceeded"]
    assert all(e["device"] == "dev-1" and e["name"] == "dev-1" for _, e in events)
    assert events[2][1]["quota"] == "sensors" and "co2" in events[2][1]["detail"]
    assert "humidity9" in events[1][1]["detail"]


def test_refusals_are_events_and_the_hub_user_is_left_to_rabbitmq(env: _Env) -> None:
    """A wrong secret, another client id and a disabled device are denied with auth_failure
    events naming the reason (never the secret); the hub's own user is denied here so the
    internal backend decides it; an unknown client may do nothing."""
    a = env.authz
    assert asyncio.run(a.user("dev-1", "wrong", "dev-1")) == "deny"
    assert asyncio.run(a.user("dev-1", env.secret, "someone-else")) == "deny"
    env.registry.set_enabled("dev-1", False)
    a.forget_answers()
    assert asyncio.run(a.user("dev-1", env.secret, "dev-1")) == "deny"
    assert asyncio.run(a.user("hub", "anything", "x")) == "deny"
    details = [e["detail"] for k, e in env.events if k == "auth_failure"]
    assert any("wrong secret" in d for d in details) and any("disabled" in d for d in details)
    assert env.secret not in repr(env.events)
    assert a.topic("nobody", "/", "amq.topic", "write", "d.x.t.t", "nobody") == "deny"


def test_a_tls_required_device_is_refused_with_a_tls_violation(env: _Env) -> None:
    """The backend is not told whether a login came over TLS (README, "TLS-required
    devices"): a device that requires TLS is refused with a tls_violation event."""
    secret = env.registry.add("dev-tls")  # tls-required by default
    assert asyncio.run(env.authz.user("dev-tls", secret, "dev-tls")) == "deny"
    assert [(k, e["name"]) for k, e in env.events] == [("tls_violation", "dev-tls")]


def test_logins_are_cached_until_the_registry_changes(env: _Env) -> None:
    """A repeated login is answered from the cache (no second check) until forget_answers."""
    a = env.authz
    for _ in range(3):
        assert asyncio.run(a.user("dev-1", env.secret, "dev-1")) == "allow"
    assert a.asked == 1
    a.forget_answers()
    assert asyncio.run(a.user("dev-1", env.secret, "dev-1")) == "allow"
    assert a.asked == 2


def test_token_scopes_decide_subscriptions(env: _Env) -> None:
    """A token may subscribe within its scope only; an admin token reads hub events."""
    a = env.authz
    scoped = create_token(env.key, TokenClaims(("d/dev-1/t/+",), expires=time.time() + 60))
    admin = create_token(env.key, TokenClaims((), admin=True, expires=time.time() + 60))
    assert asyncio.run(a.user("token", scoped, "b-1")) == "allow"
    assert asyncio.run(a.user("token", admin, "b-2")) == "allow"
    assert a.topic("token", "/", "amq.topic", "read", "d.dev-1.t.*", "b-1") == "allow"
    assert a.topic("token", "/", "amq.topic", "read", "d.*.t.*", "b-1") == "deny"
    assert a.topic("token", "/", "amq.topic", "read", "$hub.events.#", "b-2") == "allow"
    assert a.topic("token", "/", "amq.topic", "read", "$hub.events.#", "b-1") == "deny"
    assert asyncio.run(a.user("token", "v1.forged.sig", "b-3")) == "deny"


CREATED = {
    "protocol": "{'MQTT',\"3.1.1\"}",
    "user": "dev-1",
    "node": "rabbit1@localhost",
    "name": "127.0.0.1:5000 -> 127.0.0.1:1883",
    "pid": "<rabbit1@localhost.1.2.0>",
    "variable_map": '#{<<"client_id">> => <<"dev-1">>}',
    "peer_host": "{127,0,0,1}",
    "peer_port": 5000,
}


def test_presence_matches_closes_by_pid_and_reports_lost_nodes() -> None:
    """A created event names the client; a close is matched by pid; a reconnect elsewhere
    replaces the old connection (whose close is then ignored); clients of a node down for the
    grace period are reported lost, those that reconnected are not."""
    p = Presence()
    first = connection(CREATED)
    assert first is not None and first.client_id == "dev-1" and first.peer == "127.0.0.1:5000"
    p.created(first)
    again = connection(
        {**CREATED, "pid": "<rabbit2@localhost.1.3.0>", "node": "rabbit2@localhost"}
    )
    assert again is not None
    assert p.created(again) is first
    assert p.closed(first.pid) is None  # the old connection: replaced already
    other = connection(
        {**CREATED, "pid": "<p3>", "variable_map": '#{<<"client_id">> => <<"dev-2">>}'}
    )
    assert other is not None
    p.created(other)
    p.nodes({"rabbit1@localhost": False, "rabbit2@localhost": True}, now=100.0)
    assert p.lost(now=101.0, grace=3.0) == []
    assert [c.client_id for c in p.lost(now=103.5, grace=3.0)] == ["dev-2"]
    assert p.closed(again.pid) is again and p.by_client == {}
    assert connection({**CREATED, "protocol": "{0,9,1}"}) is None  # AMQP: not a client
    assert connection({**CREATED, "variable_map": b"\xff\xfe garbage"}) is None


def test_a_node_seen_down_names_its_clients_and_those_that_left_it_unseen() -> None:
    """A node newly seen down is reported once; its clients are those connected to it and
    those that reconnected elsewhere with no close event from it (a crash)."""
    p = Presence()
    first = connection(CREATED)
    stays = connection(
        {**CREATED, "pid": "<p3>", "variable_map": '#{<<"client_id">> => <<"dev-2">>}'}
    )
    moved = connection(
        {**CREATED, "pid": "<rabbit2@localhost.1.3.0>", "node": "rabbit2@localhost"}
    )
    elsewhere = connection(
        {
            **CREATED,
            "pid": "<p4>",
            "node": "rabbit2@localhost",
            "variable_map": '#{<<"client_id">> => <<"dev-3">>}',
        }
    )
    assert first and stays and moved and elsewhere
    for conn in (first, stays, moved, elsewhere):
        p.created(conn)
    running = {"rabbit1@localhost": False, "rabbit2@localhost": True}
    assert p.nodes(running, now=1.0) == ["rabbit1@localhost"]
    assert p.nodes(running, now=2.0) == []
    assert sorted(c.client_id for c in p.clients_of("rabbit1@localhost")) == ["dev-1", "dev-2"]
    assert [c.client_id for c in p.clients_of("rabbit1@localhost")] == ["dev-2"]  # moves once


def test_the_auth_listener_answers_only_the_cluster(env: _Env) -> None:
    """A caller that is neither loopback nor listed gets 403; a listed one is answered."""
    backend = AuthBackend(env.authz, ["10.0.0.5", "not an address", ""])

    async def call(remote: str) -> int:
        request = make_mocked_request("GET", "/vhost?username=x&vhost=/", client_max_size=1)
        request = request.clone(remote=remote)

        async def handler(_: Any) -> Any:
            from aiohttp import web

            return web.Response(text="deny")

        response = await backend._only_the_cluster(request, handler)
        return response.status

    assert asyncio.run(call("10.0.0.9")) == 403
    assert asyncio.run(call("10.0.0.5")) == 200
    assert asyncio.run(call("127.0.0.1")) == 200
    assert asyncio.run(call("garbage")) == 403


def test_credentials_come_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub's RabbitMQ user is read from a JSON file or two variables; anything else is a
    ConfigError naming the setting, and cluster settings are checked when broker is rabbitmq."""
    path = tmp_path / "c.json"
    path.write_text('{"user": "hub", "password": "pw"}')
    assert load_credentials(path) == ("hub", "pw")
    path.write_text('{"user": "hub"}')
    with pytest.raises(ConfigError, match="rabbitmq_credentials"):
        load_credentials(path)
    monkeypatch.delenv("MPY_HUB_RABBITMQ_USER", raising=False)
    with pytest.raises(ConfigError, match="MPY_HUB_RABBITMQ_USER"):
        load_credentials(None)
    monkeypatch.setenv("MPY_HUB_RABBITMQ_USER", "u")
    monkeypatch.setenv("MPY_HUB_RABBITMQ_PASSWORD", "p")
    assert load_credentials(None) == ("u", "p")
    with pytest.raises(ConfigError, match="rabbitmq_amqp"):
        HubConfig(broker="rabbitmq", rabbitmq_mgmt="http://h:1")
    with pytest.raises(ConfigError, match="credentials"):
        HubConfig(broker="rabbitmq", rabbitmq_amqp="amqp://u:p@h:1", rabbitmq_mgmt="http://h")
    with pytest.raises(ConfigError, match="broker"):
        HubConfig(broker="kafka")
