"""Route tables as the config file gives them: every mistake and hostile value is a clear
error naming the route and the key (and the file's line); secrets are never in a message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hub.config import ConfigError, HubConfig
from hub.routes.spec import parse_route, secret_headers
from tests.routes.helpers import write_config
from tests.support.hubproc import serve_refused

HOOK = {"name": "hook", "filter": "d/+/t/+", "target": "webhook", "url": "http://h.example/in"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Bad Name"}, "routes: #1: name must be"),
        ({"target": "ftp"}, "routes: hook: target must be one of webhook, database, mqtt"),
        ({"filter": "d/#/x"}, "routes: hook: filter 'd/#/x' is not a topic filter"),
        ({"colour": "red"}, "routes: hook: unknown key 'colour' for a webhook route"),
        ({"url": "file:///etc/passwd"}, "routes: hook: url must be an http:// or https:// URL"),
        ({"method": "DELETE"}, "routes: hook: method must be POST or PUT"),
        ({"max_attempts": 0}, "routes: hook: max_attempts must be a whole number from 1"),
        ({"timeout_s": float("nan")}, "routes: hook: timeout_s must be a number"),
        ({"headers": {"X-A": "one\r\nX-Injected: yes"}}, "routes: hook: headers: 'X-A' must"),
        ({"headers": {"Bad Header": "v"}}, "routes: hook: headers: 'Bad Header' must"),
        ({"sensor": "../x"}, "routes: hook: sensor '../x' is not a sensor name"),
    ],
)
def test_bad_webhook_tables_name_route_and_key(change: dict[str, Any], message: str) -> None:
    """Each mistake in a webhook table is a ConfigError that names the route and key."""
    with pytest.raises(ConfigError) as caught:
        parse_route({**HOOK, **change}, 0)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"topic": "d/{device}/t/x"}, "topic must not be under d/ (devices) or $"),
        ({"topic": "$hub/events/x"}, "topic must not be under d/ (devices) or $"),
        ({"topic": "out/{device.__class__}"}, "topic may use {device} and {sensor} only"),
        ({"topic": "out/{device!r}"}, "topic may use {device} and {sensor} only"),
        ({"topic": "out/+/{device}"}, "topic must not hold a wildcard"),
        ({"topic": "out/{"}, "topic: "),
    ],
)
def test_bad_republish_templates(table: dict[str, Any], message: str) -> None:
    """Templates cannot reach attributes, hold wildcards or publish as devices or the hub."""
    with pytest.raises(ConfigError, match="routes: copy: ") as caught:
        parse_route({"name": "copy", "filter": "#", "target": "mqtt", **table}, 0)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("INSERT INTO t VALUES ($nope)", "unknown parameter $nope"),
        ("INSERT INTO t VALUES ($1)", "positional parameters ($1) are not supported"),
        ("SELECT $body$ x $body$", "dollar-quoted strings"),
        ("INSERT INTO t VALUES ('open", "an unterminated quote"),
    ],
)
def test_bad_statements(statement: str, message: str) -> None:
    """A statement's parameters are only the known $names, outside quotes."""
    table = {
        "name": "db",
        "filter": "#",
        "target": "database",
        "database": "sqlite:x.db",
        "statement": statement,
    }
    with pytest.raises(ConfigError, match="routes: db: statement: ") as caught:
        parse_route(table, 0)
    assert message in str(caught.value)


def test_names_must_differ() -> None:
    """Two routes with one name are refused."""
    with pytest.raises(ConfigError, match="routes: hook: two routes have this name"):
        HubConfig(routes=(HOOK, HOOK))


def test_secret_headers_never_appear_in_errors(tmp_path: Path, monkeypatch: Any) -> None:
    """Header values come from the environment and files; a missing one names the variable
    or file, and a value with a line break is refused without being shown."""
    spec = parse_route({**HOOK, "headers_from_env": {"Authorization": "HOOK_AUTH"}}, 0)
    monkeypatch.delenv("HOOK_AUTH", raising=False)
    with pytest.raises(ConfigError, match="environment variable HOOK_AUTH is not set"):
        secret_headers(spec)
    monkeypatch.setenv("HOOK_AUTH", "Bearer t0ken\n")
    assert secret_headers(spec) == {"Authorization": "Bearer t0ken"}
    secret = tmp_path / "token"
    secret.write_text("line1\nsecret-line2\n")
    spec = parse_route({**HOOK, "headers_from_file": {"Authorization": str(secret)}}, 0)
    with pytest.raises(ConfigError) as caught:
        secret_headers(spec)
    assert "must be one line" in str(caught.value) and "secret-line2" not in str(caught.value)


def test_config_check_names_the_routes_line(tmp_path: Path) -> None:
    """`hub config check` reports a bad route at the line of its [[routes]] table."""
    path = tmp_path / "hub.toml"
    path.write_text(
        'log_level = "INFO"\n\n[[routes]]\nname = "good"\nfilter = "#"\ntarget = "mqtt"\n'
        'topic = "copy/{device}"\n\n[[routes]]\nname = "bad"\nfilter = "#"\n'
        'target = "mqtt"\ntopic = "d/{device}"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "hub", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"hub: error: {path}:9: routes: bad: topic must not")


def test_a_route_whose_secret_is_missing_stops_the_hub_with_a_clear_error(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """`hub serve` with a route whose header's environment variable is unset exits 2 with
    one line naming the route, the header and the variable."""
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    route = {**HOOK, "headers_from_env": {"Authorization": "NOT_SET_HERE"}}
    config = write_config(tmp_path / "hub.toml", [route])
    result = serve_refused(tmp_path / "data", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "hub: error: routes: hook: header Authorization: environment variable NOT_SET_HERE "
        "is not set"
    )


def test_webhook_errors_never_carry_the_urls_password_or_query() -> None:
    """An HTTP client error that quotes the URL is reported without its password and query."""
    from hub.routes.targets import Webhook

    url = "http://user:pw123@h.example/in?key=k3y"
    hook = Webhook(parse_route({**HOOK, "url": url}, 0), {})
    scrubbed = hook._scrub(f"InvalidURL: {url}")
    assert "pw123" not in scrubbed and "k3y" not in scrubbed and "user:" in scrubbed


def test_the_readme_routes_example_is_a_valid_config(tmp_path: Path) -> None:
    """README's [[routes]] example reads as three routes, one of each target, and renders
    back to the same settings."""
    from hub import configfile

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("### Routes") :]
    block = section[section.index("```toml\n") + 8 :]
    path = tmp_path / "hub.toml"
    path.write_text(block[: block.index("```")])
    config = configfile.load(path)
    assert [(r.name, r.target) for r in config.routes] == [
        ("ingest", "webhook"),
        ("archive", "database"),
        ("to-ha", "mqtt"),
    ]
    again = tmp_path / "again.toml"
    again.write_text(configfile.render(config, secrets=True))
    assert configfile.load(again) == config  # `hub config show` writes them back as they were
