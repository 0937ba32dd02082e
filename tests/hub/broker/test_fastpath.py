"""The broker's hot-path shortcut (a per-connection cache of publish verdicts) gives the same
answers as the hub's rule it caches, and stays bounded."""

from __future__ import annotations

from hub.broker.core import ACL_CACHE, BrokerCore
from hub.broker.extensions import Extensions
from hub.broker.login import Login
from hub.broker.settings import BrokerSettings
from hub.security import Gatekeeper, Identity


class _Conn:
    """The fields BrokerCore.may_publish_now reads from a connection."""

    def __init__(self, identity: Identity | None) -> None:
        self.identity = identity
        self.plugin_session = None
        self.acl: dict[str, bool] = {}


def test_cached_publish_verdicts_match_the_rule() -> None:
    """The cached check agrees with Identity.may_publish for allowed and refused topics, twice
    (the second round from the cache), and the cache stays bounded."""
    login = Login(Gatekeeper(None, b"k" * 32, allow_anonymous=False), 10)
    core = BrokerCore(BrokerSettings(), login, Extensions(None))
    try:
        identity = Identity("device", "dev-1", ("d/dev-1/t/+", "d/dev-1/s"))
        conn = _Conn(identity)
        topics = ["d/dev-1/t/temp", "d/dev-1/s", "d/dev-2/t/temp", "d/dev-1/c", "x"]
        for _ in range(2):
            for topic in topics:
                expected = identity.may_publish(topic)
                assert core.may_publish_now(conn, topic) is expected  # type: ignore[arg-type]
        assert set(conn.acl) == {"d/dev-1/t/temp", "d/dev-1/s"}  # refusals are not cached
        for i in range(3 * ACL_CACHE):
            assert core.may_publish_now(conn, f"d/dev-1/t/s{i}")  # type: ignore[arg-type]
        assert len(conn.acl) <= ACL_CACHE
        assert core.may_publish_now(_Conn(None), "d/dev-1/t/temp") is False  # type: ignore[arg-type]
    finally:
        login.close()
