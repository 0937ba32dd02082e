"""The console's own files hold nothing the Content-Security-Policy would have to allow and no
way for data to become markup: no inline script, style or handler, no innerHTML and kin."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "hub" / "web" / "static"
PAGES = sorted(STATIC.glob("*.html"))
SCRIPTS = sorted(STATIC.glob("*.js"))
# Sinks that parse a string as markup or code.
SINKS = re.compile(
    r"\b(innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval|Function|setAttribute\(\s*"
    r"[\"'](on\w+|style)[\"']|createContextualFragment|\.srcdoc)\b"
)


class _Inline(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag = tag
        names = dict(attrs)
        self.found += [f"<{tag} {n}=...>" for n in names if n.startswith("on") or n == "style"]
        if tag == "style":
            self.found.append("<style>")
        if tag == "script" and not names.get("src"):
            self.found.append("<script> without src")
        for n in ("href", "src", "action"):
            if (names.get(n) or "").strip().lower().startswith(("javascript:", "data:", "http")):
                self.found.append(f"<{tag} {n}={names[n]}>")

    def handle_data(self, data: str) -> None:
        if self._tag == "script" and data.strip():
            self.found.append("inline script text")


def test_the_pages_and_scripts_are_there() -> None:
    """The login page, dashboard and client with their scripts (so the checks below check)."""
    assert {p.name for p in PAGES} >= {"login.html", "index.html", "client.html"}
    assert {p.name for p in SCRIPTS} >= {"login.js", "dashboard.js", "client.js", "common.js"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_pages_have_no_inline_script_style_or_handler(page: Path) -> None:
    """No inline script, style element, style attribute, event handler or foreign link."""
    parser = _Inline()
    parser.feed(page.read_text())
    assert parser.found == []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_never_parse_strings_as_markup_or_code(script: Path) -> None:
    """No innerHTML, outerHTML, insertAdjacentHTML, document.write, eval, Function, srcdoc,
    nor an event handler or style set as an attribute; nothing kept in localStorage."""
    text = script.read_text()
    assert SINKS.findall(text) == []
    assert "localStorage" not in text and "sessionStorage" not in text
