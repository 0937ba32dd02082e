"""Start, join, kill, restart and stop the nodes of a local RabbitMQ cluster, by their PIDs."""

from __future__ import annotations

import logging
import math
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import astuple
from pathlib import Path
from types import TracebackType

from tools.cluster import mgmt, procs
from tools.cluster.nodes import (
    HOST,
    RABBITMQ_BIN,
    WS_PATH,
    ClusterError,
    Credentials,
    Node,
    Ports,
    check_auth_url,
    cli_environment,
    free_ports,
    prepare_base,
    write_credentials,
    write_ctl,
)

log = logging.getLogger(__name__)

STARTED = "Server startup complete"  # the node's log line once its boot (and plugins) are done
START_ATTEMPTS = 3  # a port another process took between our check and the node's bind
# RabbitMQ 3.10's MQTT plugin tracks client ids in a Raft cluster of its own that each node
# joins as it boots; two nodes joining at once can leave one waiting for a leader that never
# adds it (its log's last line this one, its boot stuck for good). Such a node is restarted:
# alone, its join goes through.
MQTT_STUCK = "mqtt_node: leader call - leader not known"
MQTT_STUCK_S = 30.0
STOP_TIMEOUT = 30.0
# Each node and epmd get SIGTERM when the thread that started them ends, so that a launcher
# killed with SIGKILL leaves nothing running (util-linux's setpriv, in every Debian).
ORPHAN_GUARD = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []
MAX_NODES = 9


def check_installed() -> str:
    """Fails unless Debian's rabbitmq-server and Erlang's epmd are there; returns epmd's path."""
    for program in ("rabbitmq-server", "rabbitmqctl"):
        if not (RABBITMQ_BIN / program).exists():
            raise ClusterError(
                f"RabbitMQ is not installed ({RABBITMQ_BIN / program} is missing): "
                "run tools/bootstrap.sh, or apt-get install rabbitmq-server"
            )
    epmd = shutil.which("epmd")
    if epmd is None:
        raise ClusterError(
            "Erlang's epmd is not on PATH (Debian's erlang-base has it in "
            "/usr/bin): run tools/bootstrap.sh"
        )
    return epmd


class Cluster:
    """N RabbitMQ nodes on 127.0.0.1, clustered, with MQTT, Web MQTT (`/ws`), management,
    event exchange and HTTP auth plugins, and an internal administrator for the hub.

        with Cluster(nodes=3, base=tmp) as c:
            c.mqtt_ports[0], c.ws_ports, c.amqp_ports, c.mgmt_ports, c.credentials
            c.kill(1); c.restart(1)    # node indices are 0-based, as in the port lists

    `base` (created, must be empty) holds every file and is kept; without it a temporary
    folder is used and removed on stop. `auth_url`: the base URL of an HTTP auth service
    (the hub's), asked first, before the internal users.

    Start, restart and stop from one thread that lives as long as the cluster: a node gets
    SIGTERM when the thread that started it ends.
    """

    def __init__(
        self,
        nodes: int = 3,
        base: Path | None = None,
        auth_url: str | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        if not 1 <= nodes <= MAX_NODES:
            raise ClusterError(f"--nodes must be between 1 and {MAX_NODES}, not {nodes}")
        if not 0 < start_timeout < math.inf:
            raise ClusterError(f"--timeout must be more than 0 seconds, not {start_timeout}")
        self.auth_url = check_auth_url(auth_url) if auth_url is not None else None
        self.start_timeout = start_timeout
        self._temporary = base is None
        # Absolute: each node runs in its own folder, and its environment names the others.
        base = Path(tempfile.mkdtemp(prefix="rabbitmq-cluster-")) if base is None else base
        self.base = base.absolute()
        self.credentials = Credentials.generate()
        self._epmd_port = 0
        self.nodes: list[Node] = []
        for i in range(nodes):
            self.nodes.append(Node(i + 1, self.base, Ports(*self._unused_ports(5))))
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * nodes
        self._epmd: subprocess.Popen[bytes] | None = None
        self._known: list[set[procs.Proc]] = [set() for _ in range(nodes)]  # each node's tree
        self._log_offset = [0] * nodes  # where each node's log stood when it last started
        self._up = [False] * nodes  # whether each node's current boot has completed
        self._stopped = False

    # -- what clients need -------------------------------------------------------------------

    host = HOST
    ws_path = WS_PATH

    @property
    def mqtt_ports(self) -> list[int]:
        return [n.ports.mqtt for n in self.nodes]

    @property
    def ws_ports(self) -> list[int]:
        return [n.ports.ws for n in self.nodes]

    @property
    def amqp_ports(self) -> list[int]:
        return [n.ports.amqp for n in self.nodes]

    @property
    def mgmt_ports(self) -> list[int]:
        return [n.ports.mgmt for n in self.nodes]

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.nodes]

    @property
    def credentials_file(self) -> Path:
        return self.base / "credentials.json"

    @property
    def ctl(self) -> Path:
        """DIR/rabbitmqctl: rabbitmqctl in this cluster's environment (`-n rabbitN@localhost`)."""
        return self.base / "rabbitmqctl"

    def ready_line(self, http: str | None = None) -> str:
        """`ready mqtt=H:P,... ws=... amqp=... mgmt=...` (` http=H:P` once a hub runs)."""

        def hosts(ports: list[int]) -> str:
            return ",".join(f"{HOST}:{p}" for p in ports)

        line = (
            f"ready mqtt={hosts(self.mqtt_ports)} ws={hosts(self.ws_ports)} "
            f"amqp={hosts(self.amqp_ports)} mgmt={hosts(self.mgmt_ports)}"
        )
        if http is not None:
            line += f" http={http}"
        return line + f" credentials={self.credentials_file}"

    def pids(self) -> list[int]:
        """Every process of the cluster still running: epmd, and each node's wrapper script,
        Erlang VM and the VM's helpers."""
        found = []
        if self._epmd is not None and self._epmd.poll() is None:
            found.append(self._epmd.pid)
        for i in range(len(self.nodes)):
            found += self.node_pids(i)
        stray = [p.pid for p in procs.sharing_home(self.base / "home")]
        return sorted(set(found + stray))

    def node_pids(self, index: int) -> list[int]:
        """The running processes of node `index` (wrapper, VM, the VM's helpers)."""
        self._refresh(index)
        return sorted(p.pid for p in self._known[index] if procs.alive(p))

    def node_running(self, index: int) -> bool:
        proc = self._procs[index]
        return proc is not None and proc.poll() is None

    # -- life cycle ----------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Starts epmd and node 1, then nodes 2..N together (they join node 1 as they boot, by
        peer discovery: no second start of their app, no CLI call), waits until the management
        API lists them all running, then writes credentials.json. Stops everything on error."""
        epmd = check_installed()
        try:
            self._prepare()
            self._start_epmd(epmd)
            write_ctl(self.base, self._epmd_port, self.nodes[0].name)
            self._spawn(0)
            self._await_boots([0], retry_ports=True)
            others = list(range(1, len(self.nodes)))
            for i in others:
                self._spawn(i)
            self._await_boots(others, retry_ports=True)
            self._await_cluster()
            write_credentials(self.credentials_file, self.credentials, self.nodes)
        except BaseException:
            self.stop()
            raise

    def kill(self, index: int) -> None:
        """SIGKILL to node `index`: its wrapper, VM and the VM's helpers, as a crash would."""
        self._refresh(index)
        proc = self._procs[index]
        if proc is not None and proc.poll() is None:
            procs.kill_group(proc.pid)
        for known in self._known[index]:
            procs.kill(known)
        if proc is not None:
            proc.wait()
        procs.wait_ended(list(self._known[index]), 10)
        self._await_ports_closed([index])
        self._up[index] = False

    def _await_ports_closed(self, indices: list[int]) -> None:
        """A killed VM's threads may still be exiting, its sockets open, after it shows as a
        zombie: returns once nothing listens on the ports of those nodes that were up (or
        after 10 s)."""
        ports = [p for i in indices if self._up[i] for p in astuple(self.nodes[i].ports)]
        deadline = time.monotonic() + 10
        while any(procs.accepts(HOST, p) for p in ports) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self, index: int) -> None:
        """Stops node `index` if it runs, starts it again on the same ports and waits until it
        is back in the cluster."""
        if self._stopped or self._epmd is None:
            raise ClusterError("restart needs a running cluster")
        if self.node_running(index):
            self._stop_nodes([index])
        self._spawn(index)
        self._await_boots([index], retry_ports=False)
        self._await_cluster()

    def stop(self) -> None:
        """Stops every node (SIGTERM, then SIGKILL after 30 s) and epmd; removes a temporary
        folder. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._stop_nodes(list(range(len(self.nodes))))
        if self._epmd is not None:
            self._epmd.terminate()
            try:
                self._epmd.wait(5)
            except subprocess.TimeoutExpired:
                self._epmd.kill()
                self._epmd.wait()
        stray = procs.wait_ended(procs.sharing_home(self.base / "home"), 5)
        for p in stray:  # a VM helper that was forked after we last looked, say
            log.warning("killing pid %d, still running after its node stopped", p.pid)
            procs.kill(p)
        procs.wait_ended(stray, 5)
        left = self.pids()
        if left:  # cannot happen unless the kernel refuses SIGKILL; never hide it
            raise ClusterError(f"processes still running after stop: {left}")
        if self._temporary:
            shutil.rmtree(self.base, ignore_errors=True)

    # -- steps ---------------------------------------------------------------------------------

    def _prepare(self) -> None:
        self.base.mkdir(mode=0o700, parents=True, exist_ok=True)
        if any(self.base.iterdir()):
            raise ClusterError(f"{self.base} is not empty: give a new or empty folder")
        self.base.chmod(0o700)
        prepare_base(self.base)

    def _start_epmd(self, epmd: str) -> None:
        """The cluster's own epmd, in the foreground as our child (so stop ends it by PID)."""
        for _ in range(START_ATTEMPTS):
            (port,) = self._unused_ports(1)
            self._epmd = subprocess.Popen(
                [*ORPHAN_GUARD, epmd, "-address", HOST, "-port", str(port)],
                env=cli_environment(self.base, port),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            deadline = time.monotonic() + 10
            while self._epmd.poll() is None and time.monotonic() < deadline:
                if procs.accepts(HOST, port):
                    self._epmd_port = port
                    return
                time.sleep(0.05)
            self._epmd.kill()
            self._epmd.wait()
        raise ClusterError("epmd did not start (tried three free ports)")

    def _unused_ports(self, count: int) -> list[int]:
        """Free ports that are none of those the cluster already gave out."""
        given = {self._epmd_port}
        for node in self.nodes:
            given.update(astuple(node.ports))
        while not given.isdisjoint(ports := free_ports(count)):
            pass
        return ports

    def _refresh(self, index: int) -> None:
        """Remembers the processes of node `index` as they run now."""
        proc = self._procs[index]
        if proc is not None and proc.poll() is None:
            self._known[index].update(procs.tree(proc.pid))

    def _spawn(self, index: int) -> None:
        node = self.nodes[index]
        node.write_config(self.credentials, self.auth_url, self.nodes[0].name)
        node.pid_file.unlink(missing_ok=True)
        self._log_offset[index] = procs.size(node.log_file)
        self._up[index] = False
        with node.console_file.open("ab") as console:
            self._procs[index] = subprocess.Popen(
                [*ORPHAN_GUARD, str(RABBITMQ_BIN / "rabbitmq-server")],
                env=node.environment(self._epmd_port),
                cwd=node.folder,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: Ctrl-C on a terminal does not reach it
            )
        self._refresh(index)
        log.info("started %s (pid %d)", node.name, self._procs[index].pid)  # type: ignore[union-attr]

    def _boot_state(self, index: int) -> str:
        """'up', 'starting', or 'failed' for a node's current boot."""
        node, proc = self.nodes[index], self._procs[index]
        if proc is None or proc.poll() is not None:
            return "failed"
        if STARTED not in procs.text_since(node.log_file, self._log_offset[index]):
            return "starting"
        ports = (node.ports.amqp, node.ports.mqtt, node.ports.ws, node.ports.mgmt)
        if not all(procs.accepts(HOST, p) for p in ports):
            return "starting"
        self._refresh(index)
        self._up[index] = True
        return "up"

    def _await_boots(self, indices: list[int], *, retry_ports: bool) -> None:
        attempts = dict.fromkeys(indices, 1)
        pending = set(indices)
        deadline = time.monotonic() + self.start_timeout
        stuck_since: dict[int, tuple[int, float]] = {}  # log size, when it last grew
        while pending:
            for i in sorted(pending):
                state = self._boot_state(i)
                if state == "up":
                    pending.discard(i)
                elif state == "starting" and self._mqtt_stuck(i):
                    now, logged = time.monotonic(), procs.size(self.nodes[i].log_file)
                    if stuck_since.get(i, (-1, 0.0))[0] != logged:
                        stuck_since[i] = (logged, now)  # still logging: not stuck (yet)
                    elif now - stuck_since[i][1] >= MQTT_STUCK_S:
                        if attempts[i] >= START_ATTEMPTS:
                            raise ClusterError(self._failure(i, "is stuck joining MQTT's Raft"))
                        attempts[i] += 1
                        del stuck_since[i]
                        name = self.nodes[i].name
                        log.warning("%s is stuck joining MQTT's Raft: restarted", name)
                        self._stop_nodes([i])
                        self._spawn(i)
                        deadline = max(deadline, now + self.start_timeout / 2)
                elif state == "failed":
                    if retry_ports and self._port_taken(i) and attempts[i] < START_ATTEMPTS:
                        attempts[i] += 1
                        self._stop_nodes([i])
                        self.nodes[i].ports = Ports(*self._unused_ports(5))
                        self._spawn(i)
                    else:
                        raise ClusterError(self._failure(i, "exited while starting"))
            if pending and time.monotonic() > deadline:
                i = min(pending)
                raise ClusterError(self._failure(i, f"did not start in {self.start_timeout:g} s"))
            time.sleep(0.25)

    def _mqtt_stuck(self, index: int) -> bool:
        """The node's boot waits for the MQTT plugin's Raft leader."""
        return MQTT_STUCK in procs.text_since(self.nodes[index].log_file, self._log_offset[index])

    def _port_taken(self, index: int) -> bool:
        node = self.nodes[index]
        text = procs.tail(node.log_file, 60) + procs.tail(node.console_file, 60)
        return "eaddrinuse" in text or "dist_port_already_used" in text

    def _failure(self, index: int, what: str) -> str:
        node = self.nodes[index]
        for path in (node.log_file, node.console_file):
            if shown := procs.tail(path):
                return f"node {node.name} {what}; the end of {path}:\n{shown}"
        return f"node {node.name} {what}; it logged nothing (see {node.folder})"

    def running_nodes(self, index: int = 0) -> list[str]:
        """Names of the nodes that node `index`'s management API reports running."""
        return mgmt.running_nodes(self.nodes[index].ports.mgmt, self.credentials)

    def _await_cluster(self) -> None:
        """Waits until each running node's management API lists every running node."""
        deadline = time.monotonic() + self.start_timeout
        up = [i for i in range(len(self.nodes)) if self.node_running(i)]
        want = sorted(self.nodes[i].name for i in up)
        seen: list[str] = []
        while time.monotonic() < deadline:
            try:
                if all((seen := self.running_nodes(i)) == want for i in up):
                    return
            except (OSError, ValueError):  # not up yet, or an answer not yet complete
                pass
            time.sleep(0.5)
        raise ClusterError(f"the cluster did not form: running {seen}, expected {want}")

    def _stop_nodes(self, indices: list[int]) -> None:
        """SIGTERM to each node's wrapper (it stops its VM gracefully), all at once; SIGKILL
        by PID to whatever still runs after STOP_TIMEOUT. A node still booting gets SIGKILL at
        once: the VM defers a stop until its boot is done, which can take longer than that."""
        known: list[procs.Proc] = []
        for i in indices:
            self._refresh(i)
            proc = self._procs[i]
            if proc is None or proc.poll() is not None:
                known += self._known[i]
            elif self._up[i]:
                known += self._known[i]
                proc.send_signal(signal.SIGTERM)
            else:
                self.kill(i)
        left = procs.wait_ended(known, STOP_TIMEOUT)
        for i in indices:
            proc = self._procs[i]
            if proc is None:
                continue
            if set(left) & self._known[i]:
                log.warning(
                    "node %s did not stop in %.0f s: killed", self.nodes[i].name, STOP_TIMEOUT
                )
                procs.kill_group(proc.pid)
            proc.wait()
        for p in left:  # by PID too: the VM's helpers run in sessions of their own
            procs.kill(p)
        procs.wait_ended(left, 10)
        self._await_ports_closed(indices)
        for i in indices:
            self._up[i] = False
