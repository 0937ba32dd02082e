"""The broker seam holds: outside hub/broker/ only the names hub/broker/__init__.py exports are
imported from it, and the security policy loads without the broker, amqtt or aiohttp."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Unit tests of the package may reach into its modules.
INSIDE = (ROOT / "hub" / "broker", ROOT / "tests" / "hub" / "broker")


def _exported() -> set[str]:
    tree = ast.parse((ROOT / "hub" / "broker" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return set(ast.literal_eval(node.value))
    raise AssertionError("hub/broker/__init__.py has no __all__")


def _violations(path: Path, exported: set[str]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [
                f"{where}: import {a.name}" for a in node.names if a.name.startswith("hub.broker")
            ]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("hub.broker."):
                found.append(f"{where}: from {node.module} import ...")
            elif node.module == "hub.broker":
                found += [f"{where}: {a.name}" for a in node.names if a.name not in exported]
            elif node.module == "hub":
                found += [
                    f"{where}: from hub import broker" for a in node.names if a.name == "broker"
                ]
    return found


def test_only_the_exported_names_of_hub_broker_are_imported_outside_it() -> None:
    """No module of hub/, tools/ or tests/ (but the broker's own unit tests) imports a
    module of hub.broker or a name its __init__ does not export."""
    exported = _exported()
    assert "Broker" in exported and "EmbeddedBroker" in exported
    files = [
        p
        for folder in ("hub", "tools", "tests")
        for p in (ROOT / folder).rglob("*.py")
        if not any(p.is_relative_to(inside) for inside in INSIDE)
    ]
    assert len(files) > 50  # the walk found the code base
    violations = [v for p in files for v in _violations(p, exported)]
    assert violations == []


def test_the_checker_sees_a_reach_into_the_broker(tmp_path: Path) -> None:
    """The check above flags imports of broker modules and of names not exported."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from hub.broker.core import BrokerCore\nimport hub.broker.codec\n"
        "from hub.broker import Broker, PluginView\nfrom hub import broker\n"
    )
    found = _violations(sample, _exported())
    assert len(found) == 4 and "PluginView" in found[2]


def test_security_loads_without_amqtt_or_aiohttp() -> None:
    """`import hub.security` loads neither amqtt nor aiohttp (nor the broker package)."""
    code = (
        "import hub.security, sys; "
        "assert 'amqtt' not in sys.modules and 'aiohttp' not in sys.modules, 'loaded'; "
        "assert 'hub.broker' not in sys.modules, 'broker'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
