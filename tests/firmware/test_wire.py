"""The firmware's MQTT framing (node/wire.py and node/link.py) under the real MicroPython unix
port: the exact bytes of every packet it sends, against hand-written MQTT 3.1.1 packets."""

import pytest

from tests.support.micropython import run_mp

# MQTT 3.1.1 section 3: fixed header (type << 4 | flags, remaining length), variable header,
# payload. Written out by hand, field by field, from the specification, not from an encoder.
PROTOCOL = b"\x00\x04MQTT\x04"  # protocol name "MQTT" and level 4
EXPECTED = {
    # CONNECT, clean session (flags 0x02), keepalive 30, client id "dev-1".
    "connect-clean": b"\x10\x11" + PROTOCOL + b"\x02" + b"\x00\x1e" + b"\x00\x05dev-1",
    # The same without clean session (flags 0x00).
    "connect-persistent": b"\x10\x11" + PROTOCOL + b"\x00" + b"\x00\x1e" + b"\x00\x05dev-1",
    # User name and password (0xC0), a retained QoS 1 will (0x20 | 0x08 | 0x04), clean (0x02);
    # keepalive 60; payload in the order client id, will topic, will message, user, password.
    "connect-will-credentials": b"\x10\x34"
    + PROTOCOL
    + b"\xee"
    + b"\x00\x3c"
    + b"\x00\x05dev-2"
    + b"\x00\x09d/dev-2/s"
    + b"\x00\x07offline"
    + b"\x00\x05dev-2"
    + b"\x00\x06s3cret",
    # A keepalive above 255 s: both bytes, most significant first.
    "connect-keepalive-300": b"\x10\x11" + PROTOCOL + b"\x02" + b"\x01\x2c" + b"\x00\x05dev-1",
    # PUBLISH QoS 0: no packet id.
    "publish-qos0": b"\x30\x14" + b"\x00\x0ed/dev-1/t/temp" + b"21.5",
    # PUBLISH QoS 1 (0x02): packet id 1 after the topic.
    "publish-qos1-pid1": b"\x32\x16" + b"\x00\x0ed/dev-1/t/temp" + b"\x00\x01" + b"21.6",
    # Retained (0x01) QoS 1, the next packet id (2).
    "publish-qos1-retain-pid2": b"\x33\x13" + b"\x00\x09d/dev-1/s" + b"\x00\x02" + b"online",
    # A resend: DUP (0x08) on the same packet id.
    "publish-qos1-dup": b"\x3a\x16" + b"\x00\x0ed/dev-1/t/temp" + b"\x00\x01" + b"21.6",
    # Remaining length 213 = 2 + 9 + 2 + 200 takes two bytes: 0xD5 (213 & 0x7F | 0x80), 0x01.
    "publish-200-bytes": b"\x32\xd5\x01" + b"\x00\x09d/dev-1/r" + b"\x00\x07" + b"x" * 200,
    # An empty retained QoS 0 message (what clears a retained topic).
    "publish-empty-retained": b"\x31\x0b" + b"\x00\x09d/dev-1/m",
    "pingreq": b"\xc0\x00",
    # SUBSCRIBE has flags 0x02; packet id 3, one filter at QoS 1.
    "subscribe": b"\x82\x0e" + b"\x00\x03" + b"\x00\x09d/dev-1/c" + b"\x01",
    "disconnect": b"\xe0\x00",
}


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """What the firmware wrote for each case of tests/mp/wire_probe.py."""
    out = run_mp("wire_probe.py", tmp_path_factory.mktemp("wire"))
    return {
        name: bytes.fromhex(data)
        for name, data in (line.split(" ") for line in out.split("\n") if line)
    }


def test_every_case_ran(sent: dict[str, bytes]) -> None:
    """The probe printed exactly the cases this test knows, once each."""
    assert sorted(sent) == sorted(EXPECTED)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_packet_bytes_are_mqtt_3_1_1(sent: dict[str, bytes], case: str) -> None:
    """The firmware's packet is byte for byte the hand-written MQTT 3.1.1 packet."""
    assert sent[case] == EXPECTED[case], f"{case}: {sent[case].hex()} != {EXPECTED[case].hex()}"


def test_remaining_lengths_match_the_packets(sent: dict[str, bytes]) -> None:
    """Each packet's remaining length field counts exactly the bytes after it."""
    for case, data in sent.items():
        length, shift, i = 0, 0, 1
        while True:
            byte = data[i]
            length |= (byte & 0x7F) << shift
            i += 1
            if not byte & 0x80:
                break
            shift += 7
        assert length == len(data) - i, case
