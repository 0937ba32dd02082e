"""tools/hubaddr.py: the one parser of `--hub mqtt(s)://HOST:PORT` that deploy, provision and
sim share, with what a careless or hostile command line can hold."""

import pytest

from tools.hubaddr import HubAddress, HubAddressError, hubs_url, parse_hub, parse_hubs


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("mqtt://hub.local", HubAddress("hub.local", 1883, False)),
        ("mqtts://hub.local", HubAddress("hub.local", 8883, True)),
        ("mqtt://127.0.0.1:1884", HubAddress("127.0.0.1", 1884, False)),
        ("mqtts://[::1]:8884", HubAddress("::1", 8884, True)),
        ("mqtt://Hub.Local:1/", HubAddress("hub.local", 1, False)),
        ("mqtt://x:65535", HubAddress("x", 65535, False)),
    ],
)
def test_hub_addresses_parse(url: str, address: HubAddress) -> None:
    """Names, IPv4 and IPv6 addresses, default and given ports parse to host, port and TLS."""
    assert parse_hub(url) == address


def test_address_formats_back() -> None:
    """An address prints as people write it, IPv6 in brackets, with its scheme."""
    assert parse_hub("mqtts://[::1]:8884").where == "[::1]:8884"
    assert parse_hub("mqtt://hub").url == "mqtt://hub:1883"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://x:1", "--hub must look like mqtt://HOST:PORT or mqtts://HOST:PORT"),
        ("hub.local:1883", "--hub must look like mqtt://HOST:PORT"),
        ("mqtt://", "--hub must look like"),
        ("mqtt://:1883", "--hub must look like"),
        ("mqtt://x:0", "bad port in --hub 'mqtt://x:0': use 1 to 65535"),
        ("mqtt://x:65536", "bad port"),
        ("mqtt://x:99999999999", "bad port"),
        ("mqtt://x:-1", "bad port"),
        ("mqtt://x:+1", "bad port"),
        ("mqtt://x:1:2", "bad port"),
        ("mqtt://x:abc", "bad port"),
        ("mqtt://x:1/topic", "with nothing after the port"),
        ("mqtt://x:1?a=b", "with nothing after the port"),
        ("mqtt://x:1#frag", "with nothing after the port"),
        ("mqtt://x y:1", "without spaces or control characters"),
        ("mqtt://x\n:1", "without spaces or control characters"),
        ("mqtt://x:1\r\n", "without spaces or control characters"),
        ("mqtt://x\x00y:1", "without spaces or control characters"),
        ("mqtt://\x1b[31mred:1", "without spaces or control characters"),
        ("mqtt://" + "a" * 300, "over 255 characters"),
        ("mqtt://[::1:1883", "Invalid IPv6 URL"),
        ("mqtt://[nope]:1", "does not appear to be an IPv4 or IPv6 address"),
        ("mqtt://ex..com:1", "'ex..com' is not a host name or IP address"),
        ("mqtt://-x.com:1", "is not a host name or IP address"),
        ("mqtt://a$b:1", "is not a host name or IP address"),
        ("mqtt://1.2.3.4.5:1", "is not a host name or IP address"),
        ("mqtt://" + "a" * 64 + ".com:1", "is not a host name or IP address"),
        ("mqtt://bücher.de:1", "xn-- (punycode) form"),
    ],
)
def test_bad_addresses_are_refused_clearly(url: str, message: str) -> None:
    """Each malformed or hostile value is refused with a message that says what is wrong."""
    with pytest.raises(HubAddressError) as err:
        parse_hub(url)
    assert message in str(err.value)
    assert len(str(err.value)) < 300  # a huge value is not echoed back whole
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value)


@pytest.mark.parametrize("url", ["mqtt://dev:hunter2@hub:1883", "mqtts://:hunter2@hub"])
def test_credentials_in_the_address_are_refused_without_echoing_them(url: str) -> None:
    """A user name or password in --hub is refused, and the error does not repeat the secret."""
    with pytest.raises(HubAddressError, match="takes no user name or password") as err:
        parse_hub(url)
    assert "hunter2" not in str(err.value)


def test_several_addresses_parse_in_order() -> None:
    """A comma-separated --hub gives every address in order (spaces around commas allowed);
    one address is a list of one; hubs_url writes the value back."""
    hubs = parse_hubs("mqtt://a:1, mqtt://[::1]:2,mqtt://b")
    assert hubs == [
        HubAddress("a", 1, False),
        HubAddress("::1", 2, False),
        HubAddress("b", 1883, False),
    ]
    assert [h.where for h in hubs] == ["a:1", "[::1]:2", "b:1883"]  # the firmware's `hubs`
    assert parse_hubs("mqtts://hub") == [HubAddress("hub", 8883, True)]
    assert parse_hubs(hubs_url(hubs)) == hubs


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("mqtt://a:1,mqtts://b:2", "must be all mqtt:// or all mqtts://"),
        ("mqtt://a:1,mqtt://a:1", "--hub lists a:1 twice"),
        ("mqtt://a,mqtt://a:1883", "--hub lists a:1883 twice"),
        ("mqtt://a:1,", "without an empty one"),
        (",mqtt://a:1", "without an empty one"),
        ("mqtt://a:1,,mqtt://b:1", "without an empty one"),
        (",".join(f"mqtt://h:{p}" for p in range(1, 10)), "at most 8 addresses, not 9"),
        (",".join(["mqtt://" + "a" * 250] * 9), "at most 8 addresses"),
        ("mqtt://a:1,http://b:1", "--hub must look like mqtt://HOST:PORT"),
        ("mqtt://a:1,mqtt://b:1\n", "without spaces or control characters"),
        ("mqtt://[fe80::1%eth0]:1,mqtt://b:1", "no IPv6 zone"),
    ],
)
def test_bad_address_lists_are_refused_clearly(value: str, message: str) -> None:
    """Each malformed or hostile list is refused with a message that says what is wrong."""
    with pytest.raises(HubAddressError) as err:
        parse_hubs(value)
    assert message in str(err.value)
    assert len(str(err.value)) < 300


def test_credentials_in_an_address_list_are_not_echoed() -> None:
    """A password in any address of a list, or next to an empty one, never shows in the error."""
    for value in ("mqtt://a:1,mqtt://u:hunter2@b:1", "mqtt://u:hunter2@b:1,"):
        with pytest.raises(HubAddressError) as err:
            parse_hubs(value)
        assert "hunter2" not in str(err.value)
