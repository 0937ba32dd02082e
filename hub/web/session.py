"""Console sessions, in memory (a restart logs everyone out). Plain logic, no sockets.

The cookie carries a random 256-bit session id; the table keeps only its SHA-256, so a memory
dump or a log line of the table opens no session. A session ends ``idle_s`` after its last use
and ``max_s`` after its login, whichever comes first; each has its own CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

COOKIE = "hub_session"
MAX_SESSIONS = 10_000  # in all; the oldest are dropped first
MAX_PER_ACCOUNT = 32


@dataclass
class Session:
    name: str
    role: str
    csrf: str
    created: float
    last_used: float

    def expires(self, max_s: float) -> float:
        return self.created + max_s

    def idle_expires(self, idle_s: float, max_s: float) -> float:
        return min(self.last_used + idle_s, self.expires(max_s))

    def csrf_matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode(errors="replace")).hexdigest()


class Sessions:
    """The live sessions, keyed by the hash of their cookie value."""

    def __init__(self, idle_s: float = 30 * 60, max_s: float = 12 * 3600) -> None:
        self.idle_s = idle_s
        self.max_s = max_s
        self._by_digest: dict[str, Session] = {}  # insertion order: oldest first

    def __len__(self) -> int:
        return len(self._by_digest)

    def create(self, name: str, role: str, now: float | None = None) -> tuple[str, Session]:
        """A new session; returns the cookie value (shown to the browser only) and it."""
        now = time.time() if now is None else now
        self.prune(now)
        mine = [d for d, s in self._by_digest.items() if s.name == name]
        for digest in mine[: max(0, len(mine) - MAX_PER_ACCOUNT + 1)]:
            del self._by_digest[digest]
        while len(self._by_digest) >= MAX_SESSIONS:
            del self._by_digest[next(iter(self._by_digest))]
        cookie = secrets.token_urlsafe(32)
        session = Session(name, role, secrets.token_urlsafe(32), now, now)
        self._by_digest[_digest(cookie)] = session
        return cookie, session

    def get(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The live session of a cookie value, marked as used now; None when unknown or
        expired (an expired one is ended)."""
        if not cookie or len(cookie) > 128:
            return None
        now = time.time() if now is None else now
        digest = _digest(cookie)
        session = self._by_digest.get(digest)
        if session is None:
            return None
        if now >= session.idle_expires(self.idle_s, self.max_s):
            del self._by_digest[digest]
            return None
        session.last_used = now
        return session

    def end(self, cookie: str | None) -> bool:
        if not cookie:
            return False
        return self._by_digest.pop(_digest(cookie), None) is not None

    def end_account(self, name: str) -> int:
        """Ends every session of an account (disabled or removed); returns how many."""
        gone = [d for d, s in self._by_digest.items() if s.name == name]
        for digest in gone:
            del self._by_digest[digest]
        return len(gone)

    def prune(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        expired = [
            d for d, s in self._by_digest.items() if now >= s.idle_expires(self.idle_s, self.max_s)
        ]
        for digest in expired:
            del self._by_digest[digest]
