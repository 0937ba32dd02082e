"""The strict MQTT 3.1.1 parser and encoders, without sockets."""

import pytest

from hub.broker import codec
from hub.broker.codec import Packet, ProtocolError
from hub.topics import check_topic_filter
from tests.support.mqtt import connect_packet, packet, publish_packet, subscribe_packet, utf8


def test_parser_splits_packets_across_any_chunking() -> None:
    """Packets come out whole however the stream is cut, one byte at a time included."""
    stream = connect_packet("c1") + publish_packet("a/b", b"x" * 300, qos=1, pid=9) + b"\xc0\x00"
    parser = codec.Parser(max_packet=10_000)
    packets = [p for i in range(len(stream)) for p in parser.feed(stream[i : i + 1])]
    assert [p.kind for p in packets] == [codec.CONNECT, codec.PUBLISH, codec.PINGREQ]
    assert parser.pending == 0
    pub = codec.parse_publish(packets[1], max_payload=1000)
    assert (pub.topic, pub.payload, pub.qos, pub.pid) == ("a/b", b"x" * 300, 1, 9)


def test_parser_refuses_oversized_packet_before_buffering_it() -> None:
    """A remaining length above the limit is refused as soon as the length field is read."""
    parser = codec.Parser(max_packet=100)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        parser.feed(b"\x30\xff\x7f")


def test_parser_refuses_five_byte_remaining_length() -> None:
    """A remaining length longer than 4 bytes is malformed."""
    with pytest.raises(ProtocolError, match="longer than 4 bytes"):
        codec.Parser(max_packet=1 << 30).feed(b"\x30\xff\xff\xff\xff\x01")


def test_parse_connect_fields() -> None:
    """CONNECT flags, will and credentials are decoded."""
    raw = connect_packet(
        "dev",
        clean=False,
        keepalive=30,
        will=("d/dev/s", b"offline", 1, True),
        username="u",
        password="p",
    )
    c = codec.parse_connect(codec.Parser(1000).feed(raw)[0])
    assert (c.client_id, c.clean_session, c.keepalive, c.username, c.password) == (
        "dev",
        False,
        30,
        "u",
        b"p",
    )
    assert (c.will_topic, c.will_payload, c.will_qos, c.will_retain) == (
        "d/dev/s",
        b"offline",
        1,
        True,
    )
    assert c.protocol_ok


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        (connect_packet("x", will=("", b"m", 0, False)), "empty topic"),
        (connect_packet("x", will=("a/+", b"m", 0, False)), "wildcard"),
        (packet(1, 0, utf8("MQTT") + b"\x04\x02\x00\x3c" + utf8(b"\xff\xfe")), "UTF-8"),
        (connect_packet("x")[:-1], "runs past the end"),
    ],
)
def test_parse_connect_refuses_malformed(raw: bytes, rule: str) -> None:
    """Malformed CONNECTs raise ProtocolError naming the broken rule."""
    packets = codec.Parser(1000).feed(raw)
    body = packets[0] if packets else Packet(codec.CONNECT, 0, raw[2:])
    with pytest.raises(ProtocolError, match=rule):
        codec.parse_connect(body)


@pytest.mark.parametrize(
    ("topic", "rule"),
    [(b"", "empty topic"), (b"a/#", "wildcard"), (b"\xff\xfe", "UTF-8"), (b"a\x00b", "U\\+0000")],
)
def test_parse_publish_refuses_bad_topics(topic: bytes, rule: str) -> None:
    """Topic names that are empty, wildcarded, invalid UTF-8 or contain NUL are refused."""
    p = codec.Parser(1000).feed(publish_packet(topic, b"x"))[0]
    with pytest.raises(ProtocolError, match=rule):
        codec.parse_publish(p, max_payload=1000)


def test_parse_publish_enforces_max_payload() -> None:
    """A payload over the limit raises PayloadTooLarge."""
    p = codec.Parser(10_000).feed(publish_packet("t", b"x" * 101))[0]
    with pytest.raises(codec.PayloadTooLarge):
        codec.parse_publish(p, max_payload=100)


def test_parse_subscribe_refuses_qos_3() -> None:
    """SUBSCRIBE asking for QoS 3 is malformed."""
    p = codec.Parser(1000).feed(subscribe_packet(1, [("a", 3)]))[0]
    with pytest.raises(ProtocolError, match="QoS 3"):
        codec.parse_subscribe(p)


def test_encoders_round_trip_through_the_parser() -> None:
    """What the broker encodes parses back to the same fields."""
    parser = codec.Parser(1_000_000)
    big = b"y" * 20_000  # a two-byte remaining length... and more
    (p,) = parser.feed(codec.publish(b"t/1", big, 2, True, pid=65535, dup=True))
    pub = codec.parse_publish(p, max_payload=1_000_000)
    assert (pub.topic, pub.payload, pub.qos, pub.retain, pub.dup, pub.pid) == (
        "t/1",
        big,
        2,
        True,
        True,
        65535,
    )
    for size in (0, 1, 120, 121, 122, 123, 124, 125, 126, 127, 300):  # around one length byte
        for qos, retain in ((0, False), (0, True), (1, False), (2, True)):
            (p,) = parser.feed(codec.publish(b"d/x/t/a", b"v" * size, qos, retain, pid=9))
            pub = codec.parse_publish(p, max_payload=1_000_000)
            assert (pub.topic, len(pub.payload), pub.qos, pub.retain, pub.pid) == (
                "d/x/t/a",
                size,
                qos,
                retain,
                9 if qos else 0,
            )
    assert codec.publish(b"a", b"b", 0, False) == b"\x30\x04\x00\x01ab"
    assert codec.suback(7, [0, 1, 0x80]) == b"\x90\x05\x00\x07\x00\x01\x80"
    assert codec.ack(codec.PUBREL, 3) == b"\x62\x02\x00\x03"
    assert codec.connack(True, 0) == b"\x20\x02\x01\x00"


@pytest.mark.parametrize(
    ("topic_filter", "ok"),
    [("a/+/c", True), ("#", True), ("a/#", True), ("a/#/c", False), ("a+", False), ("", False)],
)
def test_check_topic_filter(topic_filter: str, ok: bool) -> None:
    """Wildcards must fill whole levels and '#' must come last."""
    assert check_topic_filter(topic_filter) is ok


def test_remembered_topic_names_still_need_whole_packets() -> None:
    """A topic name seen before is looked up rather than checked again, but a PUBLISH whose
    topic runs past its end is still refused, and bad names are never remembered."""
    good = codec.Parser(1000).feed(publish_packet("d/x/t/temp", b"1", qos=1, pid=3))[0]
    for _ in range(2):  # the second parse answers from the remembered names
        pub = codec.parse_publish(good, max_payload=1000)
        assert (pub.topic, pub.pid, pub.payload) == ("d/x/t/temp", 3, b"1")
    truncated = Packet(codec.PUBLISH, 0, utf8("d/x/t/temp")[:-3])
    with pytest.raises(ProtocolError, match="runs past the end"):
        codec.parse_publish(truncated, max_payload=1000)
    wild = codec.Parser(1000).feed(publish_packet("d/+/t/temp", b"1"))[0]
    for _ in range(2):
        with pytest.raises(ProtocolError, match="wildcard"):
            codec.parse_publish(wild, max_payload=1000)


def test_parser_cuts_at_most_limit_packets_and_keeps_the_rest() -> None:
    """feed(data, limit) returns at most limit packets; the rest comes with the next feed,
    even an empty one."""
    parser = codec.Parser(10_000)
    first = parser.feed(b"\xc0\x00" * 5, 2)
    assert len(first) == 2 and parser.pending == 6
    assert len(parser.feed(b"", 2)) == 2 and len(parser.feed(b"")) == 1 and parser.pending == 0


def test_subscribe_past_the_limit_is_counted_not_decoded() -> None:
    """Filters past parse_subscribe's limit come back as UNCHECKED (even invalid UTF-8 or a
    bad QoS); a length running past the packet is still malformed."""
    body = b"\x00\x01" + utf8("a/b") + b"\x01" + utf8(b"\xff\xfe") + b"\x07" + utf8("c") + b"\x00"
    pid, filters = codec.parse_subscribe(Packet(codec.SUBSCRIBE, 2, body), 1)
    assert (pid, filters) == (1, [("a/b", 1), codec.UNCHECKED, codec.UNCHECKED])
    with pytest.raises(ProtocolError, match="past the end"):
        codec.parse_subscribe(Packet(codec.SUBSCRIBE, 2, body + b"\x00\x09ab"), 1)


@pytest.mark.parametrize("levels", [201, 65535])
def test_names_and_filters_deeper_than_200_levels_are_malformed(levels: int) -> None:
    """A topic name or filter of more than 200 levels is a protocol error; 200 are fine."""
    codec.check_topic_name("/".join(["a"] * 200))
    deep = "/" * (levels - 1)
    with pytest.raises(ProtocolError, match="more than 200"):
        codec.check_topic_name(deep)
    with pytest.raises(ProtocolError, match="more than 200"):
        codec.parse_subscribe(Packet(codec.SUBSCRIBE, 2, b"\x00\x01" + utf8(deep) + b"\x00"))
