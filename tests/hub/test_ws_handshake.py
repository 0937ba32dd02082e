"""The /mqtt WebSocket's handshake: MQTT subprotocol, and no permessage-deflate even when a
browser offers it (a zlib stream each way per tab, and CPU per frame on the event loop)."""

from __future__ import annotations

import base64
import os
import socket

from tests.support.hubproc import HubProcess, scaled


def _handshake(hub: HubProcess, extra: str) -> tuple[str, dict[str, str]]:
    """The status line and headers of the answer to a WebSocket upgrade of /mqtt."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /mqtt HTTP/1.1\r\nHost: {hub.host}:{hub.ws_port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: mqtt\r\n{extra}\r\n"
    )
    with socket.create_connection((hub.host, hub.ws_port), timeout=scaled(10)) as sock:
        sock.sendall(request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return head[0], headers


def test_a_browsers_deflate_offer_is_not_taken(hub: HubProcess) -> None:
    """A handshake offering permessage-deflate (as Chromium does) is switched to the mqtt
    subprotocol with no extension agreed: frames go uncompressed."""
    status, headers = _handshake(
        hub, "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    )
    assert status.startswith("HTTP/1.1 101"), status
    assert headers.get("sec-websocket-protocol") == "mqtt"
    assert "sec-websocket-extensions" not in headers, headers
