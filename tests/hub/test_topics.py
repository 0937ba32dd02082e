"""The topic contract, parsed without I/O."""

import pytest

from hub import topics
from hub.topics import ContractError, Kind, Reading


def test_parse_telemetry_topic() -> None:
    """A telemetry topic names the device and the sensor."""
    parsed = topics.parse_topic("d/sim-001/t/temp")
    assert (parsed.device, parsed.kind, parsed.sensor) == ("sim-001", Kind.TELEMETRY, "temp")


@pytest.mark.parametrize("kind", ["s", "c", "r"])
def test_parse_device_level_topics(kind: str) -> None:
    """Status, command and reply topics have no sensor level."""
    parsed = topics.parse_topic(f"d/dev1/{kind}")
    assert parsed.kind is Kind(kind) and parsed.sensor is None


@pytest.mark.parametrize(
    "topic",
    ["x/dev/t/temp", "d/Dev/t/temp", "d/dev/t", "d/dev/t/temp/extra", "d/dev/q", "d/dev/s/x", "d"],
)
def test_parse_topic_rejects_off_contract(topic: str) -> None:
    """Topics outside the contract raise ContractError."""
    with pytest.raises(ContractError):
        topics.parse_topic(topic)


def test_parse_reading() -> None:
    """A reading is boot id, sequence number and value."""
    assert topics.parse_reading(b"3fa2,17,-21.4") == Reading("3fa2", 17, -21.4)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"3fa2,17", "3 comma-separated"),
        (b"XYZ,1,2.0", "boot id"),
        (b"3fa2,-1,2.0", "sequence"),
        (b"3fa2,01,2.0", "sequence"),
        (b"3fa2,1,nan", "value"),
        (b"3fa2,1,1e5", "value"),
    ],
)
def test_parse_reading_names_the_bad_field(payload: bytes, field: str) -> None:
    """A malformed reading is refused with a message naming the field."""
    with pytest.raises(ContractError, match=field):
        topics.parse_reading(payload)


def test_format_reading_round_trips() -> None:
    """What format_reading writes, parse_reading reads back."""
    reading = Reading("a1", 5, 19.25)
    assert topics.parse_reading(topics.format_reading(reading, 2)) == reading


def test_bad_device_id_is_refused_when_building_topics() -> None:
    """Topic builders refuse ids the contract does not allow."""
    with pytest.raises(ContractError, match="bad device id"):
        topics.status_topic("has/slash")


@pytest.mark.parametrize("device", ["kitchen\n", "kitchen\n\n"])
def test_device_id_with_a_trailing_newline_is_refused(device: str) -> None:
    """A trailing newline is not part of a valid id ("$" alone would let it through)."""
    with pytest.raises(ContractError, match="bad device id"):
        topics.check_device_id(device)


def test_reading_with_a_trailing_newline_is_refused() -> None:
    """A reading's fields are checked to their very end."""
    with pytest.raises(ContractError):
        topics.parse_reading(b"a1,5,19.25\n")


def test_device_rights_templates_cover_its_own_topics_only() -> None:
    """A device's default rights (the registry's templates) let it publish its readings,
    presence, health and replies and receive its commands, and nothing of another device."""
    publish = [topics.fill_template(t, "dev-1") for t in topics.DEVICE_PUBLISH_TEMPLATES]
    subscribe = [topics.fill_template(t, "dev-1") for t in topics.DEVICE_SUBSCRIBE_TEMPLATES]
    own = {
        topics.telemetry_topic("dev-1", "temp"): "pub",
        topics.status_topic("dev-1"): "pub",
        topics.meta_topic("dev-1"): "pub",
        topics.reply_topic("dev-1"): "pub",
        topics.command_topic("dev-1"): "sub",
    }
    for topic, right in own.items():
        assert any(topics.filter_matches(f, topic) for f in publish) is (right == "pub"), topic
        assert any(topics.filter_matches(f, topic) for f in subscribe) is (right == "sub"), topic
    for topic in own:
        other = topic.replace("dev-1", "dev-2")
        assert not any(topics.filter_matches(f, other) for f in publish + subscribe), other
