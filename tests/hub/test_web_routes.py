"""The app's routes are exactly its route table, so the tests that walk the table (anonymous
and hostile requests to every route) cannot miss one."""

from __future__ import annotations

from pathlib import Path

from hub.accounts import Accounts
from hub.broker import EmbeddedBroker
from hub.registry import Registry
from hub.store import open_store
from hub.web.api import Api
from hub.web.app import ROUTES, build_app
from hub.web.auth import Access, Auth
from hub.web.manage import Manage
from hub.web.session import Sessions


def test_every_route_of_the_app_is_in_the_table(tmp_path: Path) -> None:
    """Building the real application registers the table's routes and /static/ only, and
    only the login, logout, pages' files and /mqtt are open to anyone."""
    accounts, registry = Accounts(tmp_path), Registry(tmp_path)
    store = open_store(None, tmp_path)
    broker = EmbeddedBroker()
    sessions = Sessions()
    auth = Auth(b"k" * 32, accounts, sessions, lambda kind, event: None)
    manage = Manage(registry, accounts, sessions, tmp_path, lambda kind, event: None)
    try:
        app = build_app(broker, auth, Api(broker, registry, store), manage, {})
        served = {
            (route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.resource is not None and not route.resource.canonical.startswith("/static")
        }
        assert served == {(r.method, r.path) for r in ROUTES}
        open_routes = {r.path for r in ROUTES if r.access is Access.OPEN}
        assert open_routes == {"/login", "/vendor/{name}", "/mqtt", "/api/login", "/api/logout"}
    finally:
        auth.close()
        store.close()
        registry.close()
        accounts.close()
