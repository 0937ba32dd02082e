"""The frames a WebSocket link writes its deliveries in (hub/broker/transports.py)."""

from hub.broker.transports import ws_binary_frame


def test_binary_frames_carry_each_length_form() -> None:
    """A delivery's frame is FIN + binary, unmasked, with RFC 6455's 7-bit, 16-bit or 64-bit
    length as the payload needs, followed by the payload as it is."""
    for n, header in (
        (0, b"\x82\x00"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f" + (65536).to_bytes(8, "big")),
    ):
        payload = bytes(range(256)) * (n // 256) + bytes(n % 256)
        assert ws_binary_frame(payload) == header + payload, n
