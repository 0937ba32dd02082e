"""`python -m tools.cluster`: a local RabbitMQ cluster (Debian's rabbitmq-server), real nodes
on free ports, reached by raw MQTT over TCP and WebSocket and by the management API."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from tests.support.hubproc import scaled
from tests.support.mqtt import RawClient
from tests.support.waits import eventually
from tools.cluster import Cluster, ClusterError, procs
from tools.cluster.nodes import RABBITMQ_BIN, check_auth_url

pytestmark = [
    pytest.mark.skipif(
        not (RABBITMQ_BIN / "rabbitmq-server").exists(),
        reason="rabbitmq-server is not installed (tools/bootstrap.sh installs it)",
    ),
    # The first test that uses the cluster also waits for its start (25-45 s here, loaded).
    pytest.mark.timeout(scaled(240)),
]

HOSTS = r"127\.0\.0\.1:\d+(?:,127\.0\.0\.1:\d+)*"
READY_RE = re.compile(
    rf"^ready mqtt=({HOSTS}) ws=({HOSTS}) amqp=({HOSTS}) mgmt=({HOSTS}) credentials=(\S+)$"
)


def processes_of(folder: Path) -> list[int]:
    """PIDs of running processes whose environment has the cluster's HOME (epmd, node
    wrappers, VMs and their helpers), found in /proc, not from what the launcher remembers."""
    return [p.pid for p in procs.sharing_home(folder / "home")]


def api(port: int, path: str, user: str, password: str) -> object:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Basic {token}"}
    )
    with urllib.request.urlopen(request, timeout=scaled(10)) as response:
        return json.load(response)


def running(port: int, user: str, password: str) -> list[str]:
    nodes = api(port, "/api/nodes", user, password)
    assert isinstance(nodes, list)
    return sorted(n["name"] for n in nodes if n["running"])


async def cross_node(cluster: Cluster, pub: int, sub: int, topic: str, *, ws: bool) -> None:
    """A QoS 1 publish on node `pub` reaches a subscriber on node `sub` (TCP or Web MQTT)."""
    user, password = cluster.credentials.user, cluster.credentials.password
    if ws:
        url = f"ws://127.0.0.1:{cluster.ws_ports[sub]}{cluster.ws_path}"
        subscriber = await RawClient.websocket(url)
    else:
        subscriber = await RawClient.tcp("127.0.0.1", cluster.mqtt_ports[sub])
    publisher = await RawClient.tcp("127.0.0.1", cluster.mqtt_ports[pub])
    try:
        for client, role in ((subscriber, "sub"), (publisher, "pub")):
            _, code = await client.connect(f"{role}-{topic}", username=user, password=password)
            assert code == 0
        assert await subscriber.subscribe([(topic, 1)]) == [1]
        await publisher.publish(topic, b"21.5", qos=1, timeout=scaled(5))
        message = await subscriber.next_message(timeout=scaled(5))
        assert (message.topic, message.payload, message.qos) == (topic, b"21.5", 1)
    finally:
        await subscriber.close()
        await publisher.close()


def test_bad_arguments_are_one_error_line(tmp_path: Path) -> None:
    """Bad --nodes and --timeout, a folder that is not empty or cannot be made: each fails at
    once with `cluster: error:` and exit 2, touching nothing in the folder."""
    (tmp_path / "keep.txt").write_text("mine")
    bad = (
        ["--nodes", "0"],
        ["--nodes", "abc"],
        ["--timeout", "0"],
        ["--nodes", "1", "--dir", str(tmp_path)],
        ["--nodes", "1", "--dir", "/proc/no/such"],
    )
    for args in bad:
        done = subprocess.run(
            [sys.executable, "-m", "tools.cluster", *args],
            capture_output=True,
            text=True,
            timeout=scaled(30),
        )
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        assert done.stderr.splitlines()[-1].startswith("cluster: error: "), done.stderr
        assert "Traceback" not in done.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_missing_erlang_is_one_error_line(tmp_path: Path) -> None:
    """Without epmd on PATH (no Erlang), the CLI says what is missing and exits 2, starting
    nothing."""
    done = subprocess.run(
        [sys.executable, "-m", "tools.cluster", "--nodes", "1", "--dir", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        timeout=scaled(30),
        env={**os.environ, "PATH": "/nonexistent"},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("cluster: error: Erlang's epmd is not on PATH"), done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_auth_url_cannot_inject_config() -> None:
    """An auth URL that would add config lines (newline, space) or is not http(s) is refused."""
    assert check_auth_url("http://127.0.0.1:8080/api/auth/") == "http://127.0.0.1:8080/api/auth"
    for url in (
        "http://127.0.0.1:8080/auth\nauth_backends.1 = internal",
        "http://127.0.0.1/a b",
        "http://127.0.0.1/auth?x=1",
        "http://127.0.0.1/auth#",
        'http://127.0.0.1/"auth"',
        "file:///etc/passwd",
        "http:///no-host",
    ):
        with pytest.raises(ClusterError):
            check_auth_url(url)


def test_a_relative_folder_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--dir given relative still names the same folder in every node's environment (the nodes
    run in folders of their own)."""
    monkeypatch.chdir(tmp_path)
    cluster = Cluster(nodes=2, base=Path("rel"))
    env = cluster.nodes[1].environment(4369)
    assert env["HOME"] == str(tmp_path / "rel" / "home")
    assert env["RABBITMQ_MNESIA_BASE"] == str(tmp_path / "rel" / "rabbit2" / "mnesia")
    assert not (tmp_path / "rel").exists()  # nothing is made before start()


def test_node_that_does_not_start_in_time_is_an_error(tmp_path: Path) -> None:
    """A node not up within --timeout: one error line naming it and its log, exit 2, and
    nothing of the cluster left running."""
    folder = tmp_path / "cluster"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.cluster",
            "--nodes",
            "1",
            "--dir",
            str(folder),
            "--timeout",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert done.returncode == 2, done.stderr
    first = done.stderr.splitlines()[0]
    expected = "cluster: error: node rabbit1@localhost did not start in 0.5 s; "
    assert first.startswith(expected), first
    assert str(folder / "rabbit1") in first
    assert done.stdout == ""
    assert processes_of(folder) == []


def test_cli_prints_ready_and_stops_everything_on_sigterm(tmp_path: Path) -> None:
    """The CLI prints one ready line, serves MQTT with the credentials.json user, and SIGTERM
    ends every process it started (nodes, the VMs' helpers, epmd) with exit code 0."""
    folder = tmp_path / "cluster"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.cluster",
            "--nodes",
            "1",
            "--dir",
            str(folder),
            "--timeout",
            str(scaled(60)),
        ],  # it gives up by itself: readline() cannot hang
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        match = READY_RE.match(line)
        assert match is not None, f"{line!r} {proc.stderr.read() if not line else ''}"
        credentials_file = Path(match.group(5))
        assert credentials_file == folder / "credentials.json"
        assert stat.S_IMODE(credentials_file.stat().st_mode) == 0o600
        credentials = json.loads(credentials_file.read_text())
        assert credentials["password"] not in line
        mqtt_port = int(match.group(1).split(":")[1])

        async def login() -> int:
            client = await RawClient.tcp("127.0.0.1", mqtt_port)
            try:
                user, password = credentials["user"], credentials["password"]
                return (await client.connect("cli-1", username=user, password=password))[1]
            finally:
                await client.close()

        assert asyncio.run(login()) == 0
        started = procs.tree(proc.pid)
        epmd_port = _epmd_port(started)
        assert len(started) >= 4, started  # python, epmd, the node's wrapper and its VM
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=scaled(40)) == 0
        assert proc.stderr is not None
        assert proc.stderr.read() == ""
        assert procs.wait_ended(started, scaled(5)) == []
        assert processes_of(folder) == []
        assert not procs.accepts("127.0.0.1", epmd_port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _epmd_port(running: list[procs.Proc]) -> int:
    """The -port argument of the epmd among these processes."""
    for p in running:
        args = Path(f"/proc/{p.pid}/cmdline").read_bytes().split(b"\0")
        if args[0].endswith(b"epmd"):
            return int(args[args.index(b"-port") + 1])
    raise AssertionError("no epmd among the cluster's processes")


class AuthService(BaseHTTPRequestHandler):
    """The hub's part in RabbitMQ's HTTP auth backend, reduced to one device: `device1` with
    secret `s3cret` may do anything; everyone else is denied (and falls to internal users)."""

    asked: ClassVar[list[tuple[str, dict[str, str]]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = {
            k: v[0] for k, v in urllib.parse.parse_qs(self.rfile.read(length).decode()).items()
        }
        self.asked.append((self.path, form))
        allowed = form.get("username") == "device1"
        if self.path.endswith("/user"):
            allowed = allowed and form.get("password") == "s3cret"
        body = b"allow" if allowed else b"deny"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def auth_service() -> Iterator[ThreadingHTTPServer]:
    """A running auth service for the cluster's HTTP auth backend (a test may close it)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), AuthService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def taken_port() -> Iterator[socket.socket]:
    """A listening socket on the port node 3 was going to use for distribution."""
    s = socket.socket()
    yield s
    s.close()


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    auth_service: ThreadingHTTPServer,
    taken_port: socket.socket,
) -> Iterator[Cluster]:
    """One 3-node cluster for the module (the last test stops it), asking the auth service first.
    Another process takes node 3's distribution port before it starts, as in a race."""
    auth_url = f"http://127.0.0.1:{auth_service.server_address[1]}/auth"
    c = Cluster(nodes=3, base=tmp_path_factory.mktemp("rabbitmq"), auth_url=auth_url)
    taken_port.bind(("127.0.0.1", c.nodes[2].ports.dist))
    taken_port.listen()
    with c:
        yield c


def test_cluster_files_are_private(cluster: Cluster) -> None:
    """The folder, the Erlang cookie and credentials.json are readable by their owner only."""
    assert stat.S_IMODE(cluster.base.stat().st_mode) == 0o700
    assert stat.S_IMODE((cluster.base / "home" / ".erlang.cookie").stat().st_mode) == 0o400
    assert stat.S_IMODE(cluster.credentials_file.stat().st_mode) == 0o600
    saved = json.loads(cluster.credentials_file.read_text())
    assert (saved["user"], saved["password"]) == (
        cluster.credentials.user,
        cluster.credentials.password,
    )
    assert [n["mqtt"] for n in saved["nodes"]] == cluster.mqtt_ports
    assert cluster.credentials.password not in cluster.ready_line()


def test_ready_line_lists_every_node(cluster: Cluster) -> None:
    """The ready line has one HOST:PORT per node for mqtt, ws, amqp and mgmt, all distinct."""
    match = READY_RE.match(cluster.ready_line())
    assert match is not None, cluster.ready_line()
    groups = [match.group(i).split(",") for i in range(1, 5)]
    assert all(len(g) == 3 for g in groups)
    ports = [int(hp.split(":")[1]) for g in groups for hp in g]
    assert len(set(ports)) == 12
    assert groups[0] == [f"127.0.0.1:{p}" for p in cluster.mqtt_ports]


def test_management_api_lists_the_cluster_on_each_node(cluster: Cluster) -> None:
    """Every node's management API lists all three nodes running; without credentials: 401."""
    user, password = cluster.credentials.user, cluster.credentials.password
    for port in cluster.mgmt_ports:
        assert running(port, user, password) == sorted(cluster.node_names)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{cluster.mgmt_ports[0]}/api/nodes")
    assert refused.value.code == 401


def test_the_rabbitmqctl_script_reaches_every_node(cluster: Cluster) -> None:
    """DIR/rabbitmqctl (the cluster's cookie and epmd) asks node 3, which lists all three."""
    done = subprocess.run(
        [str(cluster.ctl), "-n", cluster.node_names[2], "cluster_status", "--formatter", "json"],
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads(done.stdout)
    assert sorted(status["running_nodes"]) == sorted(cluster.node_names)
    assert stat.S_IMODE(cluster.ctl.stat().st_mode) == 0o700


def test_a_persistent_mqtt_session_is_a_quorum_queue(cluster: Cluster) -> None:
    """A clean-session-0 QoS 1 subscription is kept in a quorum queue (it outlives its node)."""
    user, password = cluster.credentials.user, cluster.credentials.password

    async def subscribe() -> None:
        client = await RawClient.tcp("127.0.0.1", cluster.mqtt_ports[2])
        try:
            assert (await client.connect("keeper", clean=False, username=user, password=password))[
                1
            ] == 0
            assert await client.subscribe([("devices/keeper/cmd", 1)]) == [1]
        finally:
            await client.close()

    asyncio.run(subscribe())
    queues = api(cluster.mgmt_ports[0], "/api/queues/%2F", user, password)
    assert isinstance(queues, list)
    kinds = {q["name"]: q["type"] for q in queues}
    assert kinds.get("mqtt-subscription-keeperqos1") == "quorum", kinds


def test_qos1_publish_on_node1_reaches_subscriber_on_node3(cluster: Cluster) -> None:
    """A device-like client publishing QoS 1 on node 1 is delivered to a subscriber on node 3."""
    asyncio.run(cross_node(cluster, 0, 2, "devices/d1/temp", ws=False))


def test_anonymous_and_wrong_password_are_refused(cluster: Cluster) -> None:
    """CONNECT without credentials, or with a wrong password, gets a refusing CONNACK."""

    async def scenario() -> list[int]:
        codes = []
        for kwargs in ({}, {"username": cluster.credentials.user, "password": "wrong"}):
            client = await RawClient.tcp("127.0.0.1", cluster.mqtt_ports[1])
            try:
                codes.append((await client.connect("anon-1", **kwargs))[1])
            finally:
                await client.close()
        return codes

    assert all(code in (4, 5) for code in asyncio.run(scenario()))


def test_a_port_taken_before_the_node_binds_it_is_replaced(
    cluster: Cluster, taken_port: socket.socket
) -> None:
    """Node 3, whose distribution port another process took, started on fresh ports."""
    assert cluster.nodes[2].ports.dist != taken_port.getsockname()[1]
    assert "dist_port_already_used" in (cluster.nodes[2].console_file.read_text())


def test_the_auth_service_admits_devices_and_internal_users_still_log_in(
    cluster: Cluster,
) -> None:
    """With an auth URL, a device's CONNECT is checked by the auth service (its secret
    admitted, a wrong one refused), and the hub's internal user still logs in after a deny."""

    async def scenario() -> list[int]:
        codes = []
        for client_id, user, password in (
            ("device1", "device1", "s3cret"),
            ("device1", "device1", "wrong"),
            ("hub-1", cluster.credentials.user, cluster.credentials.password),
        ):
            client = await RawClient.tcp("127.0.0.1", cluster.mqtt_ports[1])
            try:
                codes.append(
                    (await client.connect(client_id, username=user, password=password))[1]
                )
            finally:
                await client.close()
        return codes

    AuthService.asked.clear()
    codes = asyncio.run(scenario())
    assert codes[0] == 0 and codes[1] in (4, 5) and codes[2] == 0
    users = [form for path, form in AuthService.asked if path == "/auth/user"]
    assert {"username": "device1", "password": "s3cret"}.items() <= users[0].items()
    assert any(form["username"] == cluster.credentials.user for form in users)


def test_web_mqtt_on_ws_path(cluster: Cluster) -> None:
    """A Web MQTT client on /ws of node 2 receives a QoS 1 publish made on node 1 over TCP."""
    asyncio.run(cross_node(cluster, 0, 1, "devices/d2/temp", ws=True))


def test_with_the_auth_service_down_internal_users_still_log_in(
    cluster: Cluster, auth_service: ThreadingHTTPServer
) -> None:
    """Once the auth service stops answering, a device is refused and the hub's internal user
    still logs in (the hub may start after the cluster, or restart)."""
    auth_service.shutdown()
    auth_service.server_close()

    async def codes() -> list[int]:
        found = []
        for user, password in (
            ("device1", "s3cret"),
            (cluster.credentials.user, cluster.credentials.password),
        ):
            client = await RawClient.tcp("127.0.0.1", cluster.mqtt_ports[0])
            try:
                found.append(
                    (await client.connect(f"{user}-x", username=user, password=password))[1]
                )
            finally:
                await client.close()
        return found

    device, hub = asyncio.run(codes())
    assert device in (4, 5) and hub == 0


def test_every_node_runs_the_plugins(cluster: Cluster) -> None:
    """Each node listens for AMQP, MQTT, Web MQTT and the management API on its own ports, runs
    the event exchange and HTTP auth plugins too, and the event exchange exists."""
    user, password = cluster.credentials.user, cluster.credentials.password
    overview = api(cluster.mgmt_ports[2], "/api/overview", user, password)
    assert isinstance(overview, dict)
    listening = {(li["node"], li["protocol"], li["port"]) for li in overview["listeners"]}
    for i, name in enumerate(cluster.node_names):
        assert {
            (name, "amqp", cluster.amqp_ports[i]),
            (name, "mqtt", cluster.mqtt_ports[i]),
            (name, "http/web-mqtt", cluster.ws_ports[i]),
            (name, "http", cluster.mgmt_ports[i]),
        } <= listening, name
    wanted = {
        "rabbitmq_mqtt",
        "rabbitmq_web_mqtt",
        "rabbitmq_management",
        "rabbitmq_event_exchange",
        "rabbitmq_auth_backend_http",
    }

    def all_run_them() -> bool:  # the API's node details arrive up to 5 s late
        nodes = api(cluster.mgmt_ports[0], "/api/nodes", user, password)
        assert isinstance(nodes, list) and len(nodes) == 3
        return all(wanted <= {a["name"] for a in n.get("applications", [])} for n in nodes)

    eventually(all_run_them, 20, "every node to report the plugins running", poll=0.2)
    exchange = api(cluster.mgmt_ports[0], "/api/exchanges/%2F/amq.rabbitmq.event", user, password)
    assert isinstance(exchange, dict) and exchange["type"] == "topic"


def test_sigkill_of_one_node_leaves_the_others_serving(cluster: Cluster) -> None:
    """After SIGKILL of node 2 its processes are gone, nodes 1 and 3 still carry messages and
    report it down; restart brings it back into the cluster, serving again."""
    user, password = cluster.credentials.user, cluster.credentials.password
    node2 = [p for pid in cluster.node_pids(1) if (p := procs.identify(pid)) is not None]
    assert len(node2) >= 2  # at least the wrapper and the VM
    cluster.kill(1)
    assert [p for p in node2 if procs.alive(p)] == []
    assert not cluster.node_running(1)
    assert not procs.accepts("127.0.0.1", cluster.mqtt_ports[1])
    asyncio.run(cross_node(cluster, 2, 0, "devices/d3/temp", ws=False))
    survivors = sorted([cluster.node_names[0], cluster.node_names[2]])
    eventually(
        lambda: running(cluster.mgmt_ports[0], user, password) == survivors,
        30,
        "node 1 to report node 2 down",
        poll=0.2,
    )
    cluster.restart(1)
    assert running(cluster.mgmt_ports[2], user, password) == sorted(cluster.node_names)
    asyncio.run(cross_node(cluster, 1, 2, "devices/d4/temp", ws=False))


def test_stop_leaves_no_process_behind(cluster: Cluster) -> None:
    """stop() ends every node, every VM helper and epmd (checked by PID); runs last."""
    started = [p for pid in cluster.pids() if (p := procs.identify(pid)) is not None]
    assert len(started) >= 1 + 3 * 2  # epmd, then per node at least its wrapper and VM
    cluster.stop()
    assert cluster.pids() == []
    assert [p for p in started if procs.alive(p)] == []
    assert processes_of(cluster.base) == []
    for port in cluster.mqtt_ports + cluster.mgmt_ports:
        assert not procs.accepts("127.0.0.1", port)
