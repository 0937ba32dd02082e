"""The console's files from memory (hub/web/files.py): ETags and 304s, gzip for clients that
ask for it, no-store pages, and clear refusals for names that are not the console's files."""

from __future__ import annotations

import gzip
import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hub.web.app import STATIC_DIR
from hub.web.files import load
from tests.support.hubproc import HubProcess, scaled


def _get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=scaled(5)) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_a_script_is_served_whole_with_an_etag_then_a_304(shared_hub: HubProcess) -> None:
    """A script comes byte for byte as on disk with an ETag and no-cache; asked again with
    its ETag it is a 304 without a body."""
    url = shared_hub.http_url + "/static/dashboard.js"
    status, headers, body = _get(url)
    assert status == 200 and body == (STATIC_DIR / "dashboard.js").read_bytes()
    assert headers["Cache-Control"] == "no-cache"
    assert headers["Content-Type"].startswith("text/javascript")
    status, again, body = _get(url, **{"If-None-Match": headers["ETag"]})
    assert (status, body, again["ETag"]) == (304, b"", headers["ETag"])
    assert _get(url, **{"If-None-Match": '"something-else"'})[0] == 200


def test_mqtt_js_is_gzipped_for_a_client_that_accepts_it(shared_hub: HubProcess) -> None:
    """MQTT.js (340 KB) goes gzipped to a client that accepts gzip and plain to one that
    does not; both unpack to the same bytes."""
    url = shared_hub.http_url + "/vendor/mqtt.min.js"
    status, headers, packed = _get(url, **{"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert headers["Vary"] == "Accept-Encoding"
    status, plain_headers, plain = _get(url)
    assert status == 200 and "Content-Encoding" not in plain_headers
    assert gzip.decompress(packed) == plain and len(packed) < len(plain) / 2


def test_pages_are_never_kept_by_the_browser(shared_hub: HubProcess) -> None:
    """The login page is no-store, so its ETag earns no 304."""
    url = shared_hub.http_url + "/login"
    status, headers, body = _get(url)
    assert status == 200 and headers["Cache-Control"] == "no-store" and b"<form" in body
    assert _get(url, **{"If-None-Match": headers["ETag"]})[0] == 200


@pytest.mark.parametrize(
    "path",
    [
        "/static/nope.js",
        "/static/index.html",  # pages only through their routes (and their guard)
        "/static/..%2fapp.py",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static/.hidden.js",
        "/static/" + "a" * 300 + ".js",
        "/vendor/..%2f..%2fpackage.json",
    ],
)
def test_names_that_are_not_the_consoles_files_are_404s(shared_hub: HubProcess, path: str) -> None:
    """Unknown names, pages, path tricks and overlong names get a JSON 404, never a file."""
    status, headers, body = _get(shared_hub.http_url + path)
    assert status == 404 and headers["Content-Type"].startswith("application/json")
    assert b'"error"' in body


def test_load_skips_gzip_where_it_does_not_pay(tmp_path: Path) -> None:
    """A file that does not shrink keeps no gzip copy; a missing file is None."""
    noise = tmp_path / "noise.js"
    noise.write_bytes(os.urandom(1024))
    found = load(noise)
    assert found is not None and found.gzipped is None and found.body == noise.read_bytes()
    assert load(tmp_path / "missing.js") is None


def test_answers_say_how_long_the_hub_took(shared_hub: HubProcess) -> None:
    """Pages, scripts and errors carry Server-Timing with the hub's time in milliseconds."""
    for path in ("/login", "/static/common.js", "/vendor/nope.js"):
        _, headers, _ = _get(shared_hub.http_url + path)
        name, _, duration = headers["Server-Timing"].partition(";dur=")
        assert name == "app" and float(duration) >= 0, path
