"""The one ready-line parser (hub/endpoints.py, used by the test launcher and the benches) reads
back every line the hub's Endpoints.ready_line() can print, and nothing else."""

import itertools

import pytest

from hub.endpoints import Endpoints, ReadyLineError

HOSTS = [
    "127.0.0.1",
    "0.0.0.0",
    "::1",
    "::",
    "fe80::1:2",
    "192.168.1.20",
    "hub.local",
    "localhost",
]
PORTS = [1, 1883, 65535]


def every_endpoints() -> list[Endpoints]:
    """Each host with each port, each network's own port, HTTP shared or not, TLS or not."""
    out = []
    for host, port, tls, shared in itertools.product(HOSTS, PORTS, (False, True), (False, True)):
        ws = (host, 8080 if port != 8080 else 8081)
        out.append(
            Endpoints(
                mqtt=(host, port),
                ws=ws,
                http=ws if shared else (host, 9000),
                mqtts=(host, 8883) if tls else None,
                wss=(host, 8443) if tls else None,
            )
        )
    # Networks on different hosts (e.g. the devices' network on every interface).
    out.append(
        Endpoints(
            ("0.0.0.0", 1883), ("127.0.0.1", 8080), ("::1", 80), ("::", 8883), ("10.0.0.1", 8443)
        )
    )
    return out


@pytest.mark.parametrize("endpoints", every_endpoints(), ids=lambda e: e.ready_line())
def test_parser_reads_back_what_the_hub_prints(endpoints: Endpoints) -> None:
    """Endpoints.parse(Endpoints.ready_line()) gives back the same endpoints."""
    assert Endpoints.parse(endpoints.ready_line()) == endpoints


@pytest.mark.parametrize(
    "line",
    [
        "",
        "ready",
        "ready mqtt=127.0.0.1:1883 ws=127.0.0.1:8080",
        "ready mqtt=127.0.0.1:1883 ws=127.0.0.1:8080 http=127.0.0.1:8080 mqtts=127.0.0.1:8883",
        "ready mqtt=127.0.0.1:1883 ws=127.0.0.1:8080 http=127.0.0.1:8080 wss=127.0.0.1:8443",
        "ready mqtt=127.0.0.1:1883 ws=127.0.0.1:8080 http=127.0.0.1:8080 extra=1",
        "ready mqtt=127.0.0.1:1883 ws=127.0.0.1:8080 http=127.0.0.1:8080 ",
        "ready mqtt=127.0.0.1:1883  ws=127.0.0.1:8080 http=127.0.0.1:8080",
        "ready ws=127.0.0.1:8080 mqtt=127.0.0.1:1883 http=127.0.0.1:8080",
        "ready mqtt=127.0.0.1 ws=127.0.0.1:8080 http=127.0.0.1:8080",
        "ready mqtt=::1:1883 ws=127.0.0.1:8080 http=127.0.0.1:8080",
        "ready mqtt=[::1:1883 ws=127.0.0.1:8080 http=127.0.0.1:8080",
        "ready mqtt=127.0.0.1:99999 ws=127.0.0.1:8080 http=127.0.0.1:8080",
        "ready mqtt=127.0.0.1:-1 ws=127.0.0.1:8080 http=127.0.0.1:8080",
        "ready mqtt=127.0.0.1:1883 ws=127.0.0.1:8080 http=127.0.0.1:8080\nready",
        "hub: error: cannot listen for MQTT on 127.0.0.1:1883: Address already in use",
        "Traceback (most recent call last):",
    ],
)
def test_parser_refuses_anything_else(line: str) -> None:
    """A line that is not a whole ready line (an error, half the TLS networks, a bad port or
    address, anything extra) is refused with the line in the message."""
    with pytest.raises(ReadyLineError, match=r"not a hub ready line|bad port") as raised:
        Endpoints.parse(line)
    assert repr(line) in str(raised.value)
