"""A hub with TLS networks: `hub certs init`, then default security."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hubproc import HubProcess, hub_cli, start_hub


@pytest.fixture
def tls_hub(tmp_path: Path) -> Iterator[HubProcess]:
    data = tmp_path / "data"
    result = hub_cli(data, "certs", "init")
    assert result.returncode == 0, result.stderr
    process = start_hub(data, secure=True)
    yield process
    process.stop()
