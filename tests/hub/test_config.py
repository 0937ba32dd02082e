"""The hub's config: one source of defaults, the TOML file, flags over it, `hub config`,
SIGHUP."""

from __future__ import annotations

import dataclasses
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hub import configfile
from hub.broker import BrokerSettings
from hub.cli import build_parser, check_config
from hub.config import ConfigError, HubConfig, parse_disk_threshold
from hub.serveflags import overrides
from hub.server import BROKER_CONSTANTS, broker_settings
from tests.support.hubproc import scaled, start_hub

# A value for every field that is not its default (and valid): the round trip must carry it.
OTHER: dict[str, Any] = {
    "host": "hub.example",
    "http_port": 9000,
    "data_dir": Path('dä ta/"quoted"\\x'),
    "log_level": "DEBUG",
    "slow_consumer": "disconnect",
    "store_url": 'postgresql://u:p"w\\@h/db\x7f',
    "store_sync": "normal",
    "disk_low": "100MB",
    "max_sensor_name": 12,
    "amqtt_plugins": {"amqtt.contrib.http.UserAuthHttpPlugin": {"host": "127.0.0.1", "port": 9}},
    "hass_prefix": "ha/discovery",
    "routes": [
        {
            "name": "hook",
            "filter": "d/+/t/+",
            "target": "webhook",
            "url": "http://x.example/in",
            "headers": {"X-Source": "hub"},
            "headers_from_env": {"Authorization": "HOOK_AUTH"},
            "max_attempts": 3,
            "backoff_s": 0.25,
            "device": "kitchen",
        },
        {
            "name": "db",
            "filter": "d/#",
            "target": "database",
            "database": "sqlite:copy.db",
            "statement": "INSERT INTO t (topic, v) VALUES ($topic, $value)",
            "batch": 10,
        },
        {
            "name": "copy",
            "filter": "d/+/t/temp",
            "target": "mqtt",
            "topic": "x/{device}",
            "qos": 0,
            "retain": True,
        },
    ],
    "broker": "rabbitmq",
    "rabbitmq_amqp": "amqp://127.0.0.1:5672,amqp://[::1]:5673",
    "rabbitmq_mgmt": "http://127.0.0.1:15672",
    "rabbitmq_vhost": "hub vhost",
    "rabbitmq_credentials": Path('cre"ds.json'),
    "auth_http_host": "::1",
    "auth_http_allow": "10.0.0.2,10.0.0.3",
}


def _default(f: dataclasses.Field[Any]) -> Any:
    """A field's default, made by its factory when it has one (amqtt_plugins: {})."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _other_config() -> HubConfig:
    values = {}
    for f in dataclasses.fields(HubConfig):
        if f.name in OTHER:
            values[f.name] = OTHER[f.name]
        elif isinstance(f.default, bool):
            values[f.name] = not f.default
        elif isinstance(f.default, int):
            values[f.name] = f.default + 1
        elif isinstance(f.default, float):
            values[f.name] = f.default + 0.5
        else:
            raise AssertionError(f"give {f.name} a value in OTHER")
    return HubConfig(**values)


def _hub(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        capture_output=True,
        text=True,
        timeout=scaled(30),
    )


def test_every_field_round_trips_through_toml(tmp_path: Path) -> None:
    """`render` writes every field (changed from its default) as TOML that reads back equal,
    and the defaults' rendering reads back as the defaults."""
    changed = _other_config()
    for f in dataclasses.fields(HubConfig):
        assert getattr(changed, f.name) != _default(f), f.name
    for config in (changed, HubConfig()):
        path = tmp_path / "hub.toml"
        path.write_text(configfile.render(config, secrets=True), encoding="utf-8")
        assert configfile.load(path) == config


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://hub:s3cret@db:5432/hub", "postgresql://hub:REDACTED@db:5432/hub"),
        ("postgresql://db/hub?password=s3cret", "postgresql://db/hub?REDACTED"),
        ("postgresql://hub@db/hub", "postgresql://hub@db/hub"),
    ],
)
def test_config_show_never_prints_the_store_password(url: str, shown: str) -> None:
    """`hub config show` redacts a password in store_url, in the user part or the query."""
    rendered = tomllib.loads(configfile.render(HubConfig(store_url=url)))
    assert rendered["store_url"] == shown and "s3cret" not in str(rendered)


def test_unknown_keys_sections_and_wrong_types_name_key_and_line(tmp_path: Path) -> None:
    """`hub config check` lists each unknown key, unknown section and wrong type with the
    file's line, exit 2, and says nothing is ok."""
    path = tmp_path / "hub.toml"
    path.write_text(
        "# the hub\n"
        "mqtt_port = 1884\n"
        "mqtt_prot = 3\n"
        '"rate_limit" = "fast"\n'
        "allow_anonymous = 1\n"
        "max_payload = true\n"
        "\n"
        "[metrics]\n"
        "x = 1\n"
    )
    result = _hub("config", "check", str(path))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"hub: error: {path}:3: unknown key 'mqtt_prot'",
        f'hub: error: {path}:4: rate_limit must be a number, not "fast"',
        f"hub: error: {path}:5: allow_anonymous must be true or false, not 1",
        f"hub: error: {path}:6: max_payload must be a whole number, not true",
        f"hub: error: {path}:8: unknown section [metrics]",
    ]


def test_a_value_the_config_refuses_names_its_line(tmp_path: Path) -> None:
    """A well-typed value out of range (checked by HubConfig or the broker's settings) is
    reported at the line that set it."""
    path = tmp_path / "hub.toml"
    path.write_text('host = "0.0.0.0"\n\nmax_connect = 1\n')
    result = _hub("config", "check", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"hub: error: {path}:3: max_connect must be")
    path.write_text("retention_days = -1\n")
    result = _hub("config", "check", str(path))
    assert result.stderr.startswith(f"hub: error: {path}:1: retention_days must be")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mqtt_port = [", "not valid TOML"),
        ("mqtt_port = 70000", "mqtt_port must be a port number"),
        ("\xff", "not UTF-8"),
    ],
)
def test_hostile_config_files_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    """Broken TOML, an impossible port and bytes that are not UTF-8 are one-line errors."""
    path = tmp_path / "hub.toml"
    path.write_bytes(text.encode("latin-1"))
    result = _hub("config", "check", str(path))
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_says_ok_and_show_prints_the_effective_config(tmp_path: Path) -> None:
    """A good file is `ok` (exit 0); `hub config show --config` prints TOML that reads back
    as that file's config."""
    path = tmp_path / "hub.toml"
    path.write_text('mqtt_port = 1884\ndata_dir = "/var/lib/hub"\nrate_limit = 10\n')
    checked = _hub("config", "check", str(path))
    assert (checked.returncode, checked.stdout) == (0, "ok\n")
    shown = _hub("config", "show", "--config", str(path))
    assert shown.returncode == 0
    effective = tomllib.loads(shown.stdout)
    assert (effective["mqtt_port"], effective["data_dir"], effective["rate_limit"]) == (
        1884,
        "/var/lib/hub",
        10.0,
    )
    assert effective["ws_port"] == HubConfig.ws_port
    assert "http_port" not in effective  # unset: a comment


def test_flags_override_the_file(tmp_path: Path) -> None:
    """A flag wins over the file's value; the file wins over the default; a boolean the file
    sets can be turned off by its --no- flag."""
    path = tmp_path / "hub.toml"
    path.write_text("mqtt_port = 7\nws_port = 9\nallow_anonymous = true\npublic_view = true\n")
    args = build_parser().parse_args(
        ["serve", "--config", str(path), "--mqtt-port", "5", "--no-allow-anonymous"]
    )
    config = configfile.load(args.config, overrides(args))
    assert (config.mqtt_port, config.ws_port) == (5, 9)
    assert (config.allow_anonymous, config.public_view) == (False, True)
    assert config.mqtts_port == HubConfig.mqtts_port


def test_a_real_hub_reads_its_file_and_flags_win(tmp_path: Path) -> None:
    """`hub serve --config`: the file's http_port 0 gives the pages a port of their own, and
    the flags' ports 0 win over the file's port that is taken."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "hub.toml"
        path.write_text(f"mqtt_port = {port}\nhttp_port = 0\n")
        process = start_hub(tmp_path / "data", "--config", str(path))
    try:
        assert process.http_port not in (0, process.ws_port)
        assert process.mqtt_port != port
    finally:
        process.stop()


def test_defaults_have_one_source() -> None:
    """`hub serve` with no flags and no file runs with HubConfig's defaults, and the broker's
    settings built from them agree with HubConfig on every setting both have."""
    args = build_parser().parse_args(["serve"])
    assert overrides(args) == {}
    config = configfile.load(args.config, overrides(args), check_config)
    assert config == HubConfig()
    settings = broker_settings(config)
    shared = {f.name for f in dataclasses.fields(BrokerSettings)} - BROKER_CONSTANTS
    assert shared <= {f.name for f in dataclasses.fields(HubConfig)}
    for name in shared:
        assert getattr(settings, name) == getattr(HubConfig(), name), name
    assert settings.rate_limit == 50.0  # the disagreement issue #14 found (50 vs 0.0)


def test_every_old_flag_still_parses() -> None:
    """The flags the README and the tests use keep their names and reach their fields."""
    args = build_parser().parse_args(
        [
            "serve",
            "--store",
            "postgresql://h/db",
            "--session-idle",
            "60",
            "--session-max",
            "120",
            "--allow-anonymous",
            "--public-view",
            "--http-port",
            "0",
            "--rate-limit",
            "0",
            "--max-sensor-name",
            "8",
            "--slow-consumer",
            "disconnect",
            "--disk-low",
            "1GB",
        ]
    )
    assert overrides(args) == {
        "store_url": "postgresql://h/db",
        "session_idle_s": 60.0,
        "session_max_s": 120.0,
        "allow_anonymous": True,
        "public_view": True,
        "http_port": 0,
        "rate_limit": 0.0,
        "max_sensor_name": 8,
        "slow_consumer": "disconnect",
        "disk_low": "1GB",
    }
    assert build_parser().parse_args(["--log-level", "INFO", "serve"]).log_level == "INFO"


def _wait_for_text(path: Path, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + scaled(timeout)
    while True:
        seen = path.read_text()
        if text in seen:
            return seen
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{seen}"
        time.sleep(0.05)


def test_sighup_reloads_the_log_level_of_a_running_hub(tmp_path: Path) -> None:
    """SIGHUP applies the file's new log level, names the changed settings that need a
    restart, and keeps running (connections kept) when the file has become wrong."""
    path = tmp_path / "hub.toml"
    path.write_text('log_level = "WARNING"\n')
    log_path = tmp_path / "hub.log"
    with log_path.open("w") as log:
        process = start_hub(tmp_path / "data", "--config", str(path), stderr=log)
    try:
        with socket.create_connection((process.host, process.mqtt_port), timeout=scaled(2)):
            assert "hub listening" not in log_path.read_text()  # INFO is below WARNING
            path.write_text('log_level = "INFO"\nretention_days = 7\n')
            process.proc.send_signal(signal.SIGHUP)
            _wait_for_text(log_path, "SIGHUP: log_level is now INFO")
            _wait_for_text(log_path, "retention_days changed in")
            path.write_text('log_level = "DEBUG"\nbogus = 1\n')
            process.proc.send_signal(signal.SIGHUP)
            _wait_for_text(log_path, "unknown key 'bogus'; the running settings stay")
            assert process.proc.poll() is None
        assert process.stop() < scaled(5) and process.proc.returncode == 0
        logged = _wait_for_text(log_path, "hub stopped")  # INFO: the reloaded level
        assert "DEBUG" not in logged  # the wrong file's level was not applied
    finally:
        process.stop()


def test_the_readme_example_is_complete_and_at_the_defaults() -> None:
    """README's annotated config file names every setting (unset ones as comments) and reads
    as the defaults."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("### Configuration file") :]
    block = section[section.index("```toml\n") + 8 :]
    block = block[: block.index("```")]
    assert configfile.parse(block, Path("README.md")) == {
        f.name: _default(f) for f in dataclasses.fields(HubConfig) if _default(f) is not None
    }
    named = {line.lstrip("# ").split(" ", 1)[0] for line in block.splitlines()}
    assert named == {f.name for f in dataclasses.fields(HubConfig)}


def test_disk_thresholds_parse_and_bad_ones_are_refused() -> None:
    """--disk-low takes a percentage or a size; anything else is a clear error at start."""
    assert parse_disk_threshold("5%") == (0.05, 0)
    assert parse_disk_threshold("100MB") == (0.0, 100 * 1024**2)
    assert parse_disk_threshold("2gb") == (0.0, 2 * 1024**3)
    assert parse_disk_threshold("4096") == (0.0, 4096)
    for bad in ("", "abc", "100%", "-5%", "-5MB", "5 %%", "1e999GB"):
        with pytest.raises(ValueError, match="not a disk threshold"):
            parse_disk_threshold(bad)
    with pytest.raises(ConfigError, match="disk_low"):
        HubConfig(disk_low="lots")
