"""A hub with TLS networks: `hub certs init`, then default security."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.console import PASSWORD
from tests.support.hubproc import HubProcess, add_account, hub_cli, start_hub


@pytest.fixture
def tls_hub(tmp_path: Path) -> Iterator[HubProcess]:
    data = tmp_path / "data"
    result = hub_cli(data, "certs", "init")
    assert result.returncode == 0, result.stderr
    process = start_hub(data, secure=True)
    yield process
    process.stop()


# Console accounts of `console_hub`, one per role, all with tests.support.console.PASSWORD.
ACCOUNTS = {"ada": "admin", "otto": "operator", "vera": "viewer"}


def with_accounts(data: Path) -> Path:
    for name, role in ACCOUNTS.items():
        add_account(data, name, role, PASSWORD)
    return data


@pytest.fixture(scope="module")
def console_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """One hub with default security and an admin, an operator and a viewer account, for
    the tests of a module that log in correctly (wrong passwords get a hub of their own:
    the throttle counts per address)."""
    data = with_accounts(tmp_path_factory.mktemp("console") / "data")
    process = start_hub(data, secure=True)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def console_tls_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """The same with TLS set up (`hub certs init`): the console is served over https too."""
    data = tmp_path_factory.mktemp("console-tls") / "data"
    result = hub_cli(data, "certs", "init")
    assert result.returncode == 0, result.stderr
    process = start_hub(with_accounts(data), secure=True)
    yield process
    process.stop()
