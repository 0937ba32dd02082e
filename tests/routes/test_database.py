"""Database routes into the real PostgreSQL the tests start and into SQLite, with the real
hub: readings arrive with their parameters bound, and a payload holding SQL text is stored as
data (never run)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hub.routes.targets import compile_statement
from tests.routes.helpers import client, hub_with_routes, publish_readings
from tests.support.postgres import fresh_database
from tests.support.waits import eventually

HOSTILE = b"x'); DROP TABLE copies; --"
STATEMENT = (
    "INSERT INTO copies (topic, payload, device, sensor, value, at) "
    "VALUES ($topic, $payload, $device, $sensor, $value, $time)"
)
TABLE = (
    "CREATE TABLE copies (topic TEXT, payload TEXT, device TEXT, sensor TEXT, "
    "value DOUBLE PRECISION, at DOUBLE PRECISION)"
)


def route(database: str) -> dict[str, Any]:
    return {
        "name": "copy",
        "filter": "d/#",
        "target": "database",
        "database": database,
        "statement": STATEMENT,
        "batch": 50,
        "backoff_s": 0.05,
        "backoff_max_s": 0.2,
    }


async def traffic(hub: Any) -> None:
    await publish_readings(hub, "dev-a", range(10))
    other = await client(hub, "hostile")
    await other.publish("d/dev-a/r", HOSTILE, qos=1)  # a reply topic: the payload as it is
    await other.disconnect()


def check_rows(rows: list[tuple[Any, ...]]) -> None:
    readings = [r for r in rows if r[3] == "temp"]
    assert [r[4] for r in readings] == [seq + 0.5 for seq in range(10)]
    assert {r[2] for r in readings} == {"dev-a"} and all(r[5] > 0 for r in readings)
    (hostile,) = [r for r in rows if r[0] == "d/dev-a/r"]
    assert hostile[1] == HOSTILE.decode() and hostile[3] is None and hostile[4] is None


def test_sqlite_route_binds_parameters_and_stores_sql_text_as_data(tmp_path: Path) -> None:
    """A database route into an SQLite file in the data dir takes every reading with its
    device, sensor, value and time, and a payload that is SQL text as a string."""
    (tmp_path / "data").mkdir(mode=0o700)
    path = tmp_path / "data" / "copies.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(TABLE)
    hub = hub_with_routes(tmp_path, [route("sqlite:copies.sqlite3")])
    try:
        asyncio.run(traffic(hub))

        def rows() -> list[tuple[Any, ...]]:
            with sqlite3.connect(path) as db:
                found = db.execute("SELECT * FROM copies ORDER BY rowid").fetchall()
            assert len(found) == 11, found
            return found

        check_rows(eventually(rows, 20, "11 rows in SQLite"))
    finally:
        hub.stop()


def test_postgres_route_binds_parameters_and_stores_sql_text_as_data(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The same route into PostgreSQL: batched, bound, the SQL text stored as data; the
    database down at first (a table missing) is retried until it is there."""
    url = fresh_database(request.getfixturevalue("postgres_url"))
    hub = hub_with_routes(tmp_path, [{**route(url), "max_attempts": 100}])
    try:
        asyncio.run(traffic(hub))
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(TABLE)

        def rows() -> list[tuple[Any, ...]]:
            with psycopg.connect(url) as db:
                found = db.execute("SELECT * FROM copies ORDER BY at, value").fetchall()
            assert len(found) == 11, found
            return found

        check_rows(eventually(rows, 30, "11 rows in PostgreSQL"))
    finally:
        hub.stop()


def test_statements_are_compiled_for_each_driver_never_formatted() -> None:
    """psycopg gets %s placeholders (a literal % doubled, a $name inside quotes kept);
    SQLite gets the $names as they are."""
    sql, names = compile_statement(
        "INSERT INTO t VALUES ($topic, '$device 100%', $value) -- $sensor", "postgresql"
    )
    assert sql == "INSERT INTO t VALUES (%s, '$device 100%%', %s) -- $sensor"
    assert names == ["topic", "value"]
    assert compile_statement("SELECT $topic", "sqlite") == ("SELECT $topic", [])
