"""The hub's process-wide memory settings take effect and keep TLS working (real sockets)."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import platform
import ssl
from pathlib import Path

from hub import certs
from hub.footprint import (
    TLS_READ_BUFFER,
    keep_big_blocks_out_of_the_heap,
    shrink_tls_read_buffers,
)


def test_mmap_threshold_is_fixed_on_glibc() -> None:
    applied = keep_big_blocks_out_of_the_heap()
    if platform.libc_ver()[0] == "glibc":
        assert applied, "glibc's mallopt refused M_MMAP_THRESHOLD"
    else:
        assert applied is False


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        _made.append(transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]


_made: list[asyncio.BaseTransport] = []


def test_tls_connections_get_small_read_buffers_and_still_carry_big_messages(
    tmp_path: Path,
) -> None:
    """After the setting, a TLS connection's read buffer is 16 KiB instead of 256 KiB, and a
    message many times that size still crosses intact in both directions."""
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
