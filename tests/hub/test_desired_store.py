"""Desired documents without a running hub: checks, versions, the 4 KB limit, inheritance."""

import json
from pathlib import Path

import pytest

from hub.desired.document import (
    MAX_BYTES,
    DocumentError,
    DocumentTooLarge,
    check_document,
    delta,
    merge,
    parse_assignment,
)
from hub.desired.store import DesiredConflict, DesiredError, DesiredStore
from tests.support.hubproc import hub_cli


@pytest.fixture
def store(tmp_path: Path) -> DesiredStore:
    return DesiredStore(tmp_path / "data")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"period_s": 0}, "'period_s' must be a whole number from 1 to 86400"),
        ({"period_s": True}, "'period_s' must be a whole number"),
        ({"period_s": 2.5}, "'period_s' must be a whole number"),
        ({"tls": 1}, "'tls' must be true or false"),
        ({"hub_host": ""}, "'hub_host' must be text of 1 to 255"),
        ({"hubs": ["a:1", "b"]}, "'hubs' must be a list of 1 to 8"),
        ({"hubs": [f"h{n}:1" for n in range(9)]}, "'hubs' must be a list of 1 to 8"),
        ({"hubs": ["a:1"], "hub_port": 2}, "'hubs' or 'hub_host'/'hub_port', not both"),
        ({"backoff_min_ms": 500, "backoff_max_ms": 100}, "'backoff_max_ms' must not be below"),
        ({"password": "x"}, "'password' may not be in a desired document"),
        ({"id": "other"}, "'id' may not be in a desired document"),
        ({"bogus": 1}, "unknown setting 'bogus'"),
        ({"app": "../x"}, "'app' must be an app version"),
        ([1], "must be a JSON object"),
    ],
)
def test_bad_documents_are_refused_with_what_is_wrong(doc: object, message: str) -> None:
    """Every kind of bad document raises DocumentError naming the key and the rule."""
    with pytest.raises(DocumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_document(doc)


def test_good_document_and_the_size_limit() -> None:
    """A document of every kind of setting passes; one over 4 KB is DocumentTooLarge."""
    good = {
        "period_s": 10,
        "tls": False,
        "wifi_ssid": "shed",
        "hubs": ["10.0.0.1:1883", "[fd00::1]:1883"],
        "app": "1.2.0",
    }
    assert check_document(good) == good
    with pytest.raises(DocumentTooLarge, match=f"the limit is {MAX_BYTES} bytes"):
        check_document({"wifi_ssid": "x" * 5000})


def test_merge_and_delta() -> None:
    """Later layers win; a hub address in either form replaces the other; the delta is what
    the device has not confirmed, plus app while its fw differs."""
    merged = merge([{"hubs": ["a:1"], "period_s": 5}, {"hub_port": 2, "meta_s": 9}])
    assert merged == {"period_s": 5, "hub_port": 2, "meta_s": 9}
    assert delta({"period_s": 5, "app": "2"}, {"period_s": 5}, "1") == {"app": "2"}
    assert delta({"period_s": 5, "app": "2"}, {"period_s": 4}, "2") == {"period_s": 5}


def test_assignments_from_the_command_line() -> None:
    """key=value takes JSON values, text for text settings and versions."""
    assert parse_assignment("period_s=7") == ("period_s", 7)
    assert parse_assignment("tls=true") == ("tls", True)
    assert parse_assignment("app=1.2") == ("app", "1.2")
    assert parse_assignment('hubs=["a:1","b:2"]') == ("hubs", ["a:1", "b:2"])
    with pytest.raises(DocumentError, match="expected key=value"):
        parse_assignment("period_s")
    with pytest.raises(DocumentError, match="whole number"):
        parse_assignment("period_s=fast")


def test_versions_and_conflicts(store: DesiredStore) -> None:
    """Each write is the next version; a write based on a stale version is refused and
    changes nothing; a refused document keeps the stored one."""
    first = store.write("device", "dev-1", "alice", base=0, changes={"period_s": 5})
    assert first.version == 1
    second = store.write("device", "dev-1", "bob", base=1, replace={"meta_s": 60})
    assert second.version == 2 and second.doc == {"meta_s": 60}
    with pytest.raises(DesiredConflict, match="at version 2, not 1"):
        store.write("device", "dev-1", "carol", base=1, changes={"period_s": 9})
    with pytest.raises(DocumentTooLarge):
        store.write("device", "dev-1", "carol", base=2, changes={"wifi_ssid": "x" * 5000})
    with pytest.raises(DocumentError, match="'nope' is not set"):
        store.write("device", "dev-1", "carol", base=2, unset=["nope"])
    kept = store.get("device", "dev-1")
    assert (kept.version, kept.doc, kept.updated_by) == (2, {"meta_s": 60}, "bob")
    store.set_device_app("dev-1", "2.0.0", "rollout-7")
    assert store.get("device", "dev-1").doc == {"meta_s": 60, "app": "2.0.0"}
    with pytest.raises(DesiredError, match="no group 'ghost'"):
        store.write("group", "ghost", "alice", base=None, changes={"period_s": 5})
    with pytest.raises(DesiredError, match="bad device id"):
        store.write("device", "Bad Id", "alice", base=None, changes={"period_s": 5})


def test_group_inheritance_precedence_and_device_override(store: DesiredStore) -> None:
    """Groups combine by priority, then name; the device's own document wins over all."""
    groups = store.groups
    groups.add_label("dev-1", "hall")
    groups.record_boards({"dev-1": "unix-sim"})
    groups.add("hall", "label", "hall", priority=1)
    groups.add("alpha", "board", "unix-sim")
    groups.add("beta", "devices", "dev-1")
    store.write("group", "alpha", "a", base=None, changes={"period_s": 10, "meta_s": 10})
    store.write("group", "beta", "a", base=None, changes={"period_s": 20, "queue_len": 20})
    store.write("group", "hall", "a", base=None, changes={"meta_s": 30})
    store.write("device", "dev-1", "a", base=None, changes={"queue_len": 40})
    desired, sources = store.snapshot().effective("dev-1")
    assert desired == {"period_s": 10, "meta_s": 30, "queue_len": 40}
    assert sources == {"period_s": "group:alpha", "meta_s": "group:hall", "queue_len": "device"}
    assert store.snapshot().effective("dev-2") == ({}, {})


def test_cli_set_show_unset_and_conflict(tmp_path: Path) -> None:
    """`hub desired set/show/unset` with --group and --if-version; errors exit 2 plainly."""
    data = tmp_path / "data"
    assert hub_cli(data, "group", "add", "all", "--devices", "dev-1").returncode == 0
    done = hub_cli(data, "desired", "set", "--group", "all", "period_s=9", "meta_s=60")
    assert done.returncode == 0 and "version 1" in done.stdout, done.stderr
    assert hub_cli(data, "desired", "set", "dev-1", "period_s=7").returncode == 0
    shown = json.loads(hub_cli(data, "desired", "show", "dev-1").stdout)
    assert shown["effective"] == {"period_s": 7, "meta_s": 60}
    assert shown["delta"] == {"period_s": 7, "meta_s": 60} and shown["version"] == 1
    stale = hub_cli(data, "desired", "set", "dev-1", "period_s=8", "--if-version", "0")
    assert stale.returncode == 2
    assert "hub: error: the desired state of device 'dev-1' is at version 1, not 0" in (
        stale.stderr
    )
    bad = hub_cli(data, "desired", "set", "dev-1", "password=hunter2")
    assert bad.returncode == 2 and "credentials" in bad.stderr and "hunter2" not in bad.stderr
    assert (
        hub_cli(data, "desired", "unset", "dev-1", "period_s", "--if-version", "1").returncode == 0
    )
    group = json.loads(hub_cli(data, "desired", "show", "--group", "all").stdout)
    assert group["desired"] == {"period_s": 9, "meta_s": 60} and group["version"] == 1
    shown = json.loads(hub_cli(data, "desired", "show", "dev-1").stdout)
    assert shown["effective"] == {"period_s": 9, "meta_s": 60} and shown["version"] == 2
