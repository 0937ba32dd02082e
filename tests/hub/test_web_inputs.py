"""The web side's input checks and headers as plain functions."""

from __future__ import annotations

import pytest
from aiohttp import web

from hub.web.headers import content_security_policy
from hub.web.inputs import number


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "1e999", "-1e999", "x", ""])
def test_number_refuses_what_is_not_a_finite_number(text: str) -> None:
    """Non-finite, overflowing and non-numeric query values are a 400 naming the parameter."""
    with pytest.raises(web.HTTPBadRequest) as caught:
        number({"limit": text}, "limit")
    assert "limit must be a number" in (caught.value.text or "")


def test_number_accepts_finite_numbers() -> None:
    """Plain, negative and exponent forms are accepted; a missing parameter is None."""
    assert number({"since": "1.5e3"}, "since") == 1500.0
    assert number({"since": "-2"}, "since") == -2.0
    assert number({}, "since") is None


def test_csp_names_only_a_well_formed_host() -> None:
    """The CSP's WebSocket origins come from the Host header only when it is a plain host and
    port: a header that tries to add directives leaves just 'self'."""
    policy = content_security_policy("hub:8080")
    assert "connect-src 'self' ws://hub:8080 wss://hub:8080;" in policy
    assert "ws://[::1]:80 " in content_security_policy("[::1]:80")
    hostile = content_security_policy("evil; script-src *")
    assert "connect-src 'self';" in hostile and "evil" not in hostile
