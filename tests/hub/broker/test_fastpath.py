"""The broker's hot-path shortcuts give the same answers as the slow paths they replace."""

from __future__ import annotations

import asyncio
from pathlib import Path

from amqtt.contexts import Action

from hub.broker import BrokerSettings, EmbeddedBroker
from hub.broker.core import ACL_CACHE, PluginView
from hub.security import Identity


class _Conn:
    """The two fields BrokerCore.may_publish_now reads from a connection."""

    def __init__(self, view: object) -> None:
        self.plugin_session = view
        self.acl: dict[str, bool] = {}


def _view(identity: Identity | None) -> PluginView:
    view = PluginView.__new__(PluginView)
    view.identity, view.client_id, view.username = identity, "dev-1", "dev-1"
    return view


def test_publish_verdicts_match_amqtts_plugin_manager(tmp_path: Path) -> None:
    """The synchronous, cached topic check agrees with amqtt's plugin-manager call for allowed
    and refused topics, and the per-connection cache stays bounded."""

    async def scenario() -> None:
        broker = EmbeddedBroker(BrokerSettings(), data_dir=tmp_path)
        await broker.start()
        try:
            core, amqtt = broker.core, broker._amqtt
            assert core is not None and amqtt is not None
            assert core._sync_acl is not None  # the gatekeeper plugin answers synchronously
            identity = Identity("device", "dev-1", ("d/dev-1/t/+", "d/dev-1/s"))
            conn = _Conn(_view(identity))
            topics = ["d/dev-1/t/temp", "d/dev-1/s", "d/dev-2/t/temp", "d/dev-1/c", "x"]
            for _ in range(2):  # the second round answers from the cache
                for topic in topics:
                    slow = await amqtt._topic_filtering(conn.plugin_session, topic, Action.PUBLISH)  # type: ignore[arg-type]
                    assert core.may_publish_now(conn, topic) is slow  # type: ignore[arg-type]
            for i in range(3 * ACL_CACHE):
                assert core.may_publish_now(conn, f"d/dev-1/t/s{i}")  # type: ignore[arg-type]
            assert len(conn.acl) <= ACL_CACHE
            nobody = _Conn(_view(None))
            assert core.may_publish_now(nobody, "d/dev-1/t/temp") is False  # type: ignore[arg-type]
        finally:
            await broker.stop()

    asyncio.run(scenario())


def test_plugin_view_keeps_no_secret() -> None:
    """The slim view kept per connection after authentication has no password field."""
    assert "password" not in PluginView.__slots__
