"""Who may connect, publish and subscribe: devices from the registry, browser tokens, and the
development mode. Plain logic, no sockets; the broker asks it at CONNECT (hub/broker/login.py).

Tokens are ``v1.<claims>.<signature>``: base64url JSON claims signed with HMAC-SHA256 under
the hub's key (``hub.key`` in the data dir). A browser presents one as the MQTT password with
the user name ``token``, or as ``Authorization: Bearer`` on the HTTP API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from hub.certs import device_common_name, fingerprint
from hub.config import prepare_data_dir
from hub.registry import TLS_REQUIRED, Device, Registry, Slow
from hub.topics import (
    COMMAND_FILTER,
    check_topic_filter,
    fill_template,
    filter_covers,
    filter_matches,
)

TOKEN_USERNAME = "token"
EVENTS_FILTER = "$hub/events/#"
KEY_FILE = "hub.key"
MAX_TTL_S = 30 * 24 * 3600


class TokenError(ValueError):
    """A token is malformed, forged, expired or asks for too much."""


@dataclass(frozen=True, slots=True)  # slots: one per connection
class Identity:
    """Who a connection is, once authenticated, and where it may go."""

    kind: str  # "device", "token" or "anonymous"
    name: str
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    admin: bool = False
    unrestricted: bool = False  # development mode: everything allowed
    # publish and subscribe are the registry's templates, filled in with ``name`` when
    # checked: a device's identity shares its fleet's tuples instead of holding its own
    # filter texts (about 470 bytes a connected device; checks are per new topic).
    templated: bool = False

    def filters(self, templates: tuple[str, ...]) -> tuple[str, ...]:
        """``publish`` or ``subscribe`` as filters (a device's filled in with its id)."""
        if not self.templated:
            return templates
        return tuple(fill_template(t, self.name) for t in templates)

    def may_publish(self, topic: str) -> bool:
        if self.unrestricted:
            return True
        return any(filter_matches(f, topic) for f in self.filters(self.publish))

    def may_subscribe(self, topic_filter: str) -> bool:
        if self.unrestricted:
            return True
        return any(filter_covers(f, topic_filter) for f in self.filters(self.subscribe))


@dataclass(frozen=True, slots=True)  # slots: kept per connection
class Verdict:
    identity: Identity | None
    event: str = ""  # on refusal: auth_failure or tls_violation
    reason: str = ""  # on refusal: a readable reason, never a secret
    bad_credentials: bool = False  # CONNACK 4 rather than 5


@dataclass(frozen=True)
class TokenClaims:
    subscribe: tuple[str, ...]
    publish: tuple[str, ...] = ()
    admin: bool = False
    expires: float = 0.0
    token_id: str = field(default_factory=lambda: secrets.token_hex(4))


def load_key(data_dir: Path, *, create: bool = True) -> bytes:
    """The hub's signing key, made on first use (unless ``create`` is False) and readable by
    its owner only."""
    path = data_dir / KEY_FILE
    if not path.exists():
        if not create:
            raise TokenError(
                f"no hub key in {data_dir} ({path} is missing): run `hub serve` or "
                "`hub certs init` with this --data-dir first"
            )
        prepare_data_dir(data_dir)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    key = path.read_bytes()
    if len(key) != 32:
        raise TokenError(f"{path} is not a hub key (32 bytes): remove it to make a new one")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def create_token(key: bytes, claims: TokenClaims) -> str:
    for f in (*claims.subscribe, *claims.publish):
        if not check_topic_filter(f):
            raise TokenError(f"bad topic filter {f!r}")
    body = {
        "sub": list(claims.subscribe),
        "pub": list(claims.publish),
        "adm": claims.admin,
        "exp": int(claims.expires),
        "jti": claims.token_id,
    }
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    signature = _b64(hmac.new(key, f"v1.{payload}".encode(), hashlib.sha256).digest())
    return f"v1.{payload}.{signature}"


def verify_token(key: bytes, token: str, now: float | None = None) -> TokenClaims:
    try:
        version, payload, signature = token.split(".")
        expected = hmac.new(key, f"v1.{payload}".encode(), hashlib.sha256).digest()
        if version != "v1" or not hmac.compare_digest(_unb64(signature), expected):
            raise TokenError("token signature does not match")
        body = json.loads(_unb64(payload))
        claims = TokenClaims(
            subscribe=tuple(body["sub"]),
            publish=tuple(body["pub"]),
            admin=bool(body["adm"]),
            expires=float(body["exp"]),
            token_id=str(body["jti"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, TokenError):
            raise
        raise TokenError("malformed token") from None
    if claims.expires <= (time.time() if now is None else now):
        raise TokenError("token expired")
    return claims


ADMIN_SUBSCRIBE = ("#", EVENTS_FILTER)  # '#' does not reach '$' topics: events are named
ADMIN_PUBLISH = (COMMAND_FILTER,)  # commands to any device


def token_identity(claims: TokenClaims) -> Identity:
    """What a token may do, on MQTT and on the HTTP API alike. An admin token reads the whole
    fleet and hub events and may command any device, on top of its own filters."""
    subscribe = claims.subscribe + (ADMIN_SUBSCRIBE if claims.admin else ())
    publish = claims.publish + (ADMIN_PUBLISH if claims.admin else ())
    return Identity("token", f"token-{claims.token_id}", publish, subscribe, admin=claims.admin)


class Gatekeeper:
    """Decides CONNECTs; the identities it returns decide publishes and subscriptions.

    Every check is cheap (an HMAC, a certificate's fingerprint, one registry read) except a
    device secret still hashed with scrypt by an older hub: ``is_cheap`` tells which, and
    ``authenticate_fast`` answers on the event loop, or None when ``authenticate`` must run
    in a worker thread.
    """

    def __init__(self, registry: Registry | None, key: bytes, *, allow_anonymous: bool) -> None:
        self.registry = registry
        self.key = key
        self.allow_anonymous = allow_anonymous

    def authenticate(
        self,
        username: str | None,
        password: bytes | None,
        client_id: str,
        tls: bool,
        peer_cert: bytes | None = None,
    ) -> Verdict:
        """``peer_cert``: the client certificate (DER) the TLS handshake already verified
        against the hub CA, if the client presented one. May hash with scrypt: call it off
        the event loop."""
        verdict = self._decide(username, password, client_id, tls, peer_cert, fast=False)
        assert verdict is not None  # only the fast path defers
        return verdict

    def is_cheap(self, username: str | None) -> bool:
        """True when a CONNECT with this user name is decided without scrypt, so
        ``authenticate_fast`` may run on the event loop (every one but a device whose secret
        an older hub hashed and that has not logged in since)."""
        if username is None or username == TOKEN_USERNAME or self.registry is None:
            return True
        return self.registry.is_cheap(username)

    def authenticate_fast(
        self,
        username: str | None,
        password: bytes | None,
        client_id: str,
        tls: bool,
        peer_cert: bytes | None = None,
    ) -> Verdict | None:
        """``authenticate`` without scrypt, for the event loop: the verdict, or None when the
        device's secret is still scrypt-hashed (then run ``authenticate`` in a thread; a good
        login there upgrades the hash, and later CONNECTs are decided here)."""
        return self._decide(username, password, client_id, tls, peer_cert, fast=True)

    def _decide(
        self,
        username: str | None,
        password: bytes | None,
        client_id: str,
        tls: bool,
        peer_cert: bytes | None,
        *,
        fast: bool,
    ) -> Verdict | None:
        if username == TOKEN_USERNAME:
            return self._token(password, tls)
        if peer_cert is not None:
            return self._device_by_cert(peer_cert, username, client_id)
        if username is None:
            if self.allow_anonymous:
                return Verdict(Identity("anonymous", client_id, unrestricted=True))
            return Verdict(None, "auth_failure", "no credentials", bad_credentials=True)
        return self._device(username, password, client_id, tls, fast=fast)

    def _token(self, password: bytes | None, tls: bool) -> Verdict:
        try:
            claims = verify_token(self.key, (password or b"").decode(errors="replace"))
        except TokenError as exc:
            return Verdict(None, "auth_failure", str(exc), bad_credentials=True)
        return Verdict(token_identity(claims))

    def _device_by_cert(self, cert_der: bytes, username: str | None, client_id: str) -> Verdict:
        """A device proves who it is with the client certificate issued to it (mutual TLS);
        the certificate must be the one the registry holds for it (reissuing or revoking it
        in the registry shuts the old one out)."""
        device_id = device_common_name(cert_der)
        if device_id is None or self.registry is None:
            return Verdict(None, "auth_failure", "client certificate names no device", True)
        if username is not None and username != device_id:
            return Verdict(
                None,
                "auth_failure",
                f"client certificate is for {device_id!r}, user name says {username!r}",
                True,
            )
        device = self.registry.get(device_id)
        if device is None or device.cert_fingerprint != fingerprint(cert_der):
            return Verdict(
                None, "auth_failure", f"client certificate of {device_id!r} is not current", True
            )
        return self._admit(device, client_id, tls=True)

    def _device(
        self, device_id: str, password: bytes | None, client_id: str, tls: bool, *, fast: bool
    ) -> Verdict | None:
        if self.registry is None:
            return Verdict(None, "auth_failure", "no device registry", bad_credentials=True)
        secret = (password or b"").decode(errors="replace")
        verify = self.registry.verify_fast if fast else self.registry.verify
        device = verify(device_id, secret)
        if isinstance(device, Slow):
            return None
        if device is None:
            return Verdict(None, "auth_failure", "unknown device or wrong secret", True)
        return self._admit(device, client_id, tls)

    def _admit(self, device: Device, client_id: str, tls: bool) -> Verdict:
        """A device whose credentials are right: enabled, its own client id, TLS if required."""
        device_id = device.id
        if not device.enabled:
            return Verdict(None, "auth_failure", "device is disabled")
        if client_id != device_id:
            return Verdict(None, "auth_failure", f"client id must be the device id {device_id!r}")
        if device.tls_policy == TLS_REQUIRED and not tls:
            return Verdict(None, "tls_violation", "device requires TLS: plain connection refused")
        identity = Identity("device", device_id, device.publish, device.subscribe, templated=True)
        return Verdict(identity)
