"""The hub's process-wide memory settings take effect and keep TLS working (real sockets)."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import platform
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub import certs
from hub.footprint import (
    TLS_READ_BUFFER,
    shrink_tls_read_buffers,
)
from tests.support.hubproc import scaled


def test_mmap_threshold_is_fixed_on_glibc() -> None:
    """glibc's mallopt accepts the fixed mmap threshold (elsewhere nothing changes); checked in
    a process of its own, since the setting is process-wide."""
    code = "from hub.footprint import keep_big_blocks_out_of_the_heap as k; print(k())"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=scaled(30)
    )
    assert result.returncode == 0, result.stderr
    applied = result.stdout.strip()
    if platform.libc_ver()[0] == "glibc":
        assert applied == "True", "glibc's mallopt refused M_MMAP_THRESHOLD"
    else:
        assert applied == "False"


@pytest.fixture
def restored_tls_buffers(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """asyncio's TLS read buffer size as it was, put back after the test (the setting is
    process-wide: the tests after this one get asyncio's own)."""
    original = asyncio.sslproto.SSLProtocol.max_size
    monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "max_size", original)
    yield original
    # monkeypatch restores it after this fixture's teardown


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        _made.append(transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


_made: list[asyncio.BaseTransport] = []


def test_tls_connections_get_small_read_buffers_and_still_carry_big_messages(
    tmp_path: Path, restored_tls_buffers: int
) -> None:
    """After the setting, a TLS connection's read buffer is 16 KiB instead of 256 KiB, and a
    message many times that size still crosses intact in both directions."""
    assert restored_tls_buffers > TLS_READ_BUFFER  # asyncio's own, 256 KiB
    assert shrink_tls_read_buffers()
    paths = certs.init(tmp_path, ["127.0.0.1", "localhost"])
    server_ctx = certs.server_context(tmp_path)
    assert server_ctx is not None
    client_ctx = ssl.create_default_context(cafile=str(paths.ca_pem))
    message = bytes(range(256)) * 1024  # 256 KiB

    async def scenario() -> None:
        server = await asyncio.get_running_loop().create_server(
            _Echo, "127.0.0.1", 0, ssl=server_ctx
        )
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="127.0.0.1"
        )
        writer.write(message)
        echoed = await asyncio.wait_for(reader.readexactly(len(message)), 10)
        assert echoed == message
        server_side = _made[-1]
        buffer = server_side._ssl_protocol._ssl_buffer  # type: ignore[attr-defined]
        assert len(buffer) <= TLS_READ_BUFFER
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())
    assert asyncio.sslproto.SSLProtocol.max_size == TLS_READ_BUFFER
