"""The console's start (hub/server.py ``start_web``) imports its modules in a thread, so a
restarted hub's event loop goes on admitting devices meanwhile: every module start_web
imports unconditionally is in WEB_MODULES, and those modules import in a thread of their own."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap

from hub import server


def _imported_by_start_web() -> set[str]:
    """The modules start_web's own body imports (not those behind an ``if``)."""
    source = textwrap.dedent(inspect.getsource(server.Hub.start_web))
    (func,) = ast.parse(source).body
    assert isinstance(func, ast.AsyncFunctionDef)
    names: set[str] = set()
    for node in func.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_every_module_start_web_imports_is_imported_off_the_loop_first() -> None:
    """Each unconditional import in start_web names a module of WEB_MODULES (or a package
    one of them is in), so none of them is first imported on the event loop."""
    imported = _imported_by_start_web()
    assert {"aiohttp", "hub.web.app"} <= imported  # the walk found start_web's imports
    missing = [
        name
        for name in imported
        if not any(m == name or m.startswith(name + ".") for m in server.WEB_MODULES)
    ]
    assert missing == []


def test_the_web_modules_import_in_a_thread() -> None:
    """A fresh interpreter imports WEB_MODULES from a thread that is not the main one, as
    start_web does with asyncio.to_thread, without error."""
    code = (
        "import threading, sys\n"
        "from hub import server\n"
        "t = threading.Thread(target=server._import_web); t.start(); t.join()\n"
        "missing = [m for m in server.WEB_MODULES if m not in sys.modules]\n"
        "assert missing == [], missing\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
