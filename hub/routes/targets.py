"""Where a route delivers: a webhook, a database, or the broker again (republish).

Each target takes a batch from the route's queue, in arrival order, and says which messages
it delivered and which it gave up on (with the last status and error). Retries wait with
exponential backoff and jitter; the batch's messages of one device go out one after another,
in order, while different devices' go out side by side (webhooks, up to ``concurrency``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:  # aiohttp loads when a webhook first posts, not at the hub's start
    import aiohttp

from hub.routes.queue import Failure, Queued
from hub.routes.spec import RouteSpec, sql_tokens
from hub.topics import ContractError, parse_reading

log = logging.getLogger(__name__)

CONTRACT_QOS = "1"  # every device topic's QoS in the topic contract (README, "Topic contract")
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_ERROR = 300


@dataclass
class Outcome:
    delivered: list[int] = field(default_factory=list)
    dead: list[tuple[Queued, Failure]] = field(default_factory=list)
    retries: int = 0


class Target(Protocol):
    async def deliver(self, batch: list[Queued]) -> Outcome: ...

    async def close(self) -> None: ...


def backoff(spec: RouteSpec, attempt: int) -> float:
    """The wait before attempt + 1: doubling from backoff_s up to backoff_max_s, with jitter
    (a half to the whole of it) so that many routes do not retry in step."""
    delay = min(spec.backoff_max_s, spec.backoff_s * 2 ** (attempt - 1))
    return delay * random.uniform(0.5, 1.0)


class Retryable(Exception):
    """A failed attempt worth trying again (a timeout, a refused connection, a 5xx)."""

    def __init__(self, status: str, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


class Final(Retryable):
    """A failed attempt that would fail again (a 4xx, a bad template)."""


async def attempts(spec: RouteSpec, once: Callable[[], Any], outcome: Outcome) -> Failure | None:
    """Runs ``once`` until it succeeds or max_attempts have failed; None when it succeeded."""
    attempt = 0
    while True:
        attempt += 1
        try:
            await once()
            return None
        except Final as exc:
            return Failure(attempt, exc.status, exc.error)
        except Retryable as exc:
            if attempt >= spec.max_attempts:
                return Failure(attempt, exc.status, exc.error)
            outcome.retries += 1
            log.info(
                "route %s: attempt %d failed (%s: %s); retrying",
                spec.name,
                attempt,
                exc.status,
                exc.error,
            )
            await asyncio.sleep(backoff(spec, attempt))


def lanes(batch: list[Queued]) -> list[list[Queued]]:
    """The batch split by device (by topic for other messages), each lane in order."""
    by: dict[str, list[Queued]] = {}
    for queued in batch:
        by.setdefault(queued.device or f"topic:{queued.topic}", []).append(queued)
    return list(by.values())


class Webhook:
    def __init__(self, spec: RouteSpec, headers: dict[str, str]) -> None:
        self.spec = spec
        self._headers = headers  # read from the environment and files: never logged
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.spec.timeout_s),
                connector=aiohttp.TCPConnector(limit=self.spec.concurrency),
            )
        return self._session

    def headers(self, queued: Queued) -> dict[str, str]:
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Hub-Route": self.spec.name,
            "X-Hub-Message-Id": str(queued.id),  # the same on every retry: receivers dedupe
            "X-Hub-Topic": quote(queued.topic, safe="/+#$-_.~"),
            "X-Hub-Retain": "1" if queued.retain else "0",
            "X-Hub-Time": f"{queued.time:.3f}",
        }
        if queued.device is not None:
            headers["X-Hub-Device"] = queued.device
            headers["X-Hub-QoS"] = CONTRACT_QOS
        if queued.sensor is not None:
            headers["X-Hub-Sensor"] = queued.sensor
        headers.update(self._headers)
        return headers

    async def _post(self, queued: Queued) -> None:
        import aiohttp

        try:
            async with self._client().request(
                self.spec.method,
                self.spec.url,
                data=queued.payload,
                headers=self.headers(queued),
                allow_redirects=False,
            ) as response:
                if 200 <= response.status < 300:
                    return
                text = (await response.content.read(MAX_ERROR)).decode("utf-8", "replace")
                error = f"HTTP {response.status} {response.reason}: {text}".strip()
                kind = Retryable if response.status in RETRY_STATUSES else Final
                raise kind(str(response.status), error[:MAX_ERROR])
        except TimeoutError:
            raise Retryable("timeout", f"no answer within {self.spec.timeout_s} s") from None
        except aiohttp.ClientConnectorError as exc:
            raise Retryable("refused", f"cannot connect: {exc.os_error}"[:MAX_ERROR]) from None
        except aiohttp.ClientError as exc:
            text = self._scrub(f"{type(exc).__name__}: {exc}")
            raise Retryable("error", text[:MAX_ERROR]) from None

    def _scrub(self, text: str) -> str:
        """An error without the URL's password or query (they may hold credentials)."""
        parts = urlsplit(self.spec.url)
        for secret in (parts.password, parts.query):
            if secret:
                text = text.replace(secret, "REDACTED")
        return text

    async def deliver(self, batch: list[Queued]) -> Outcome:
        outcome = Outcome()
        limit = asyncio.Semaphore(self.spec.concurrency)

        async def lane(messages: list[Queued]) -> None:
            async with limit:
                for queued in messages:
                    failure = await attempts(self.spec, partial(self._post, queued), outcome)
                    if failure is None:
                        outcome.delivered.append(queued.id)
                    else:
                        outcome.dead.append((queued, failure))

        await asyncio.gather(*(lane(one) for one in lanes(batch)))
        return outcome

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def compile_statement(statement: str, style: str) -> tuple[str, list[str]]:
    """The statement for a driver and its parameters' names in order: SQLite takes the
    ``$name`` parameters as they are; psycopg takes ``%s`` (so a literal ``%`` is doubled).
    Values are always bound, never formatted into the text."""
    if style == "sqlite":
        return statement, []
    parts, names = [], []
    for kind, text in sql_tokens(statement):
        if kind == "param":
            parts.append("%s")
            names.append(text[1:])
        else:
            parts.append(text.replace("%", "%%"))
    return "".join(parts), names


def parameters(queued: Queued) -> dict[str, Any]:
    """The values a statement's $names bind to."""
    value = None
    if queued.sensor is not None:
        try:
            value = parse_reading(queued.payload).value
        except ContractError:
            value = None
    return {
        "topic": queued.topic,
        "payload": queued.payload.decode("utf-8", "replace"),
        "device": queued.device,
        "sensor": queued.sensor,
        "value": value,
        "time": queued.time,
    }


class Database:
    """A batch is one transaction (executemany); a failed batch is retried whole."""

    def __init__(self, spec: RouteSpec, data_dir: Path) -> None:
        self.spec = spec
        url = spec.database
        self.style = "sqlite" if url.startswith("sqlite:") else "postgresql"
        self._path = data_dir / url.removeprefix("sqlite:") if self.style == "sqlite" else None
        self._sql, self._names = compile_statement(spec.statement, self.style)
        self._db: Any = None
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        if self.style == "sqlite":
            assert self._path is not None
            return sqlite3.connect(
                self._path, timeout=5.0, isolation_level=None, check_same_thread=False
            )
        import psycopg

        return psycopg.connect(self.spec.database, connect_timeout=5)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        """On a worker thread: one transaction."""
        with self._lock:
            if self._db is None or (self.style == "postgresql" and self._db.closed):
                self._db = self._connect()
            db = self._db
            if self.style == "sqlite":
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.executemany(self._sql, rows)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            else:
                try:
                    with db.transaction(), db.cursor() as cursor:
                        cursor.executemany(self._sql, [[r[n] for n in self._names] for r in rows])
                except Exception:
                    if db.broken:
                        self._db = None
                    raise

    async def deliver(self, batch: list[Queued]) -> Outcome:
        outcome = Outcome()
        rows = [parameters(q) for q in batch]

        async def once() -> None:
            try:
                await asyncio.to_thread(self._write, rows)
            except Exception as exc:
                text = str(exc).strip().splitlines()
                error = f"{type(exc).__name__}: {text[0] if text else ''}"[:MAX_ERROR]
                raise Retryable("error", error) from None

        failure = await attempts(self.spec, once, outcome)
        if failure is None:
            outcome.delivered = [q.id for q in batch]
        else:
            outcome.dead = [(q, failure) for q in batch]
        return outcome

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(close)


# publish(topic, payload, qos, retain, origin): the broker's publish, marked with its origin.
Publish = Callable[[str, bytes, int, bool, str], None]


class Republish:
    """Publishes each message again under the route's topic template, as the hub."""

    def __init__(self, spec: RouteSpec, publish: Publish) -> None:
        self.spec = spec
        self._publish = publish

    def topic(self, queued: Queued) -> str:
        fields = {"device": queued.device, "sensor": queued.sensor}
        for name, value in fields.items():
            if f"{{{name}}}" in self.spec.topic and value is None:
                raise Final("template", f"{queued.topic[:100]!r} has no {name} for the topic")
        return self.spec.topic.format_map(fields)

    async def deliver(self, batch: list[Queued]) -> Outcome:
        outcome = Outcome()
        for queued in batch:
            origin = ",".join(filter(None, [queued.origin, self.spec.name]))
            try:
                topic = self.topic(queued)
            except Final as exc:
                outcome.dead.append((queued, Failure(1, exc.status, exc.error)))
                continue
            self._publish(topic, queued.payload, self.spec.qos, self.spec.retain, origin)
            outcome.delivered.append(queued.id)
        return outcome

    async def close(self) -> None:
        return None
