"""Tokens, topic-filter coverage and the gatekeeper's decisions, without sockets."""

import time
from pathlib import Path

import pytest

from hub.registry import Registry
from hub.security import (
    Gatekeeper,
    TokenClaims,
    TokenError,
    create_token,
    filter_covers,
    load_key,
    verify_token,
)


@pytest.mark.parametrize(
    ("allowed", "requested", "covered"),
    [
        ("d/+/t/+", "d/dev/t/temp", True),
        ("d/+/t/+", "d/+/t/+", True),
        ("d/+/t/+", "d/#", False),
        ("d/#", "d/+/t/+", True),
        ("d/dev/c", "d/+/c", False),
        ("d/dev/c", "d/dev/c", True),
        ("#", "$hub/events/#", True),
        ("d/+", "d/a/b", False),
    ],
)
def test_filter_covers(allowed: str, requested: str, covered: bool) -> None:
    """A subscription is allowed only if an allowed filter matches everything it could."""
    assert filter_covers(allowed, requested) is covered


def test_token_round_trip_and_tampering(tmp_path: Path) -> None:
    """A token verifies with its key; a changed byte, another key or expiry refuse it."""
    key = load_key(tmp_path)
    assert load_key(tmp_path) == key  # made once, then reused
    token = create_token(key, TokenClaims(("d/+/s",), ("d/x/c",), expires=time.time() + 60))
    claims = verify_token(key, token)
    assert (claims.subscribe, claims.publish, claims.admin) == (("d/+/s",), ("d/x/c",), False)
    body = token.split(".")[1]
    forged = token.replace(body, body[:-2] + ("AA" if body[-2:] != "AA" else "BB"))
    for bad, why in [(forged, "signature"), ("v1.x", "malformed"), ("", "malformed")]:
        with pytest.raises(TokenError, match=why):
            verify_token(key, bad)
    with pytest.raises(TokenError, match="signature"):
        verify_token(b"k" * 32, token)
    with pytest.raises(TokenError, match="expired"):
        verify_token(key, token, now=time.time() + 61)


def test_token_refuses_bad_filters(tmp_path: Path) -> None:
    """A token cannot be made for a malformed filter."""
    with pytest.raises(TokenError, match="bad topic filter"):
        create_token(load_key(tmp_path), TokenClaims(("d/#/x",), expires=time.time() + 1))


def test_gatekeeper_decisions(tmp_path: Path) -> None:
    """Devices need their secret, the matching client id, TLS unless allowed, and stay in
    their own topics; anonymous clients only in development mode."""
    registry = Registry(tmp_path)
    secure = registry.add("sec-1")
    plain = registry.add("plain-1", allow_insecure=True)
    gate = Gatekeeper(registry, load_key(tmp_path), allow_anonymous=False)
    assert gate.authenticate(None, None, "x", tls=False).event == "auth_failure"
    wrong = gate.authenticate("plain-1", b"nope", "plain-1", tls=False)
    assert wrong.identity is None and wrong.bad_credentials
    assert gate.authenticate("sec-1", secure.encode(), "sec-1", tls=False).event == "tls_violation"
    assert gate.authenticate("sec-1", secure.encode(), "sec-1", tls=True).identity is not None
    other_id = gate.authenticate("plain-1", plain.encode(), "someone", tls=False)
    assert other_id.identity is None and "client id" in other_id.reason
    ok = gate.authenticate("plain-1", plain.encode(), "plain-1", tls=False).identity
    assert ok is not None
    assert ok.may_publish("d/plain-1/t/temp") and not ok.may_publish("d/sec-1/t/temp")
    assert ok.may_subscribe("d/plain-1/c") and not ok.may_subscribe("d/+/c")
    registry.set_enabled("plain-1", False)
    assert "disabled" in gate.authenticate("plain-1", plain.encode(), "plain-1", False).reason
    dev_mode = Gatekeeper(registry, load_key(tmp_path), allow_anonymous=True)
    anon = dev_mode.authenticate(None, None, "x", tls=False).identity
    assert anon is not None and anon.may_subscribe("#")


def test_admin_token_reads_everything_and_commands(tmp_path: Path) -> None:
    """Only admin tokens may subscribe to hub events; they also read the whole fleet and may
    command any device, but still not publish as a device."""
    key = load_key(tmp_path)
    gate = Gatekeeper(None, key, allow_anonymous=False)
    for admin in (False, True):
        token = create_token(key, TokenClaims(("d/x/s",), admin=admin, expires=time.time() + 60))
        identity = gate.authenticate("token", token.encode(), "browser", tls=False).identity
        assert identity is not None
        assert identity.may_subscribe("$hub/events/#") is admin
        assert identity.may_subscribe("d/+/t/+") is admin
        assert identity.may_publish("d/x/c") is admin
        assert not identity.may_publish("d/x/t/temp")
