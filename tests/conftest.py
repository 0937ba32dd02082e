"""Shared fixtures: a real hub on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hubproc import HubProcess, start_hub
from tests.support.postgres import postgres_server

# The longest test files (by --durations), started first: on `make test`'s workers (one file
# per worker at a time) a long file started last would keep the run going after the others.
LONGEST_FIRST = (
    "tests/tools/test_deploy.py",
    "tests/hub/test_api.py",
    "tests/tools/test_sim.py",
    "tests/hub/test_cli.py",
    "tests/security/test_console.py",
    "tests/security/test_access.py",
    "tests/tools/test_cluster.py",
    "tests/security/test_floods.py",
    "tests/browser/test_session.py",
    "tests/hub/test_backup.py",
    "tests/browser/test_hostile.py",
    "tests/firmware/test_memory.py",
    "tests/security/test_hostile_http.py",
    "tests/firmware/test_faults.py",
    "tests/firmware/test_failover.py",
    "tests/firmware/test_link.py",
    "tests/hub/test_bench_smoke.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Puts the files of LONGEST_FIRST first, in that order; the rest keep theirs."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    root = config.rootpath

    def key(item: pytest.Item) -> int:
        try:
            return rank.get(item.path.relative_to(root).as_posix(), len(rank))
        except ValueError:  # a test outside the checkout
            return len(rank)

    items.sort(key=key)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProcess]:
    """A fresh hub for one test."""
    process = start_hub(tmp_path / "hub-data")
    yield process
    process.stop()


@pytest.fixture
def secure_hub(tmp_path: Path) -> Iterator[HubProcess]:
    """A fresh hub with its default security: credentials required, rate limit on."""
    process = start_hub(tmp_path / "hub-data", secure=True)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def shared_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """One hub for all tests of a module that do not disturb each other."""
    process = start_hub(tmp_path_factory.mktemp("hub-data"))
    yield process
    process.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for the whole run (Debian's package, started here)."""
    with postgres_server() as url:
        yield url


def pytest_addoption(parser: pytest.Parser) -> None:
    """Hardware-in-the-loop: tests/hardware/ runs on a real board only with --board-port."""
    group = parser.getgroup("hardware", "hardware-in-the-loop (tests/hardware/)")
    group.addoption("--board-port", default=None, help="serial port of an attached ESP32")
    group.addoption("--board", default="esp32-devkitc", help="its board file (boards/)")
    group.addoption(
        "--board-hub-host", default=None, help="the hub's address as the board sees it (LAN IP)"
    )
    group.addoption("--board-wifi-ssid", default=None, help="Wi-Fi for the board (WIFI_PASSWORD)")
