"""The console's own files (pages, scripts, styles, the vendored browser libraries) served from
memory: each is read once, off the event loop, and kept with a strong ETag and a gzip copy.

A page's start then costs the hub one pass of its event loop per file, no thread hop and no
sendfile, which matters when the loop is busy with 10,000 devices' messages (a console opened
right after they connected waited about a second for its five scripts). Browsers keep the files
and ask again with ``If-None-Match`` (``Cache-Control: no-cache``): a 304 while unchanged, the
new file after a hub upgrade. Files are read at the first request after the hub starts; a
changed file on disk is served after a restart.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

COMPRESSIBLE = (".js", ".css", ".html", ".json", ".svg", ".txt")
MAX_FILE = 4 * 1024 * 1024  # the console's largest file (MQTT.js) is 340 KB
TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}


@dataclass(frozen=True)
class Cached:
    body: bytes
    gzipped: bytes | None  # None: not worth it
    etag: str
    content_type: str


def load(path: Path) -> Cached | None:
    """On a thread: the file, its ETag and gzip copy; None if it is missing or not a file."""
    if not path.is_file() or path.stat().st_size > MAX_FILE:
        return None
    body = path.read_bytes()
    packed = gzip.compress(body, 6, mtime=0) if path.suffix in COMPRESSIBLE else None
    content_type = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    return Cached(
        body=body,
        gzipped=packed if packed is not None and len(packed) < 0.9 * len(body) else None,
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        content_type=content_type or "application/octet-stream",
    )


class Files:
    """Files by absolute path, read on first use; a missing file is looked for again."""

    def __init__(self) -> None:
        self._cache: dict[Path, Cached] = {}
        self._loading: dict[Path, asyncio.Future[Cached | None]] = {}

    async def get(self, path: Path) -> Cached | None:
        found = self._cache.get(path)
        if found is not None:
            return found
        pending = self._loading.get(path)
        if pending is None:  # one read however many requests ask at once
            pending = asyncio.ensure_future(asyncio.to_thread(load, path))
            self._loading[path] = pending
        try:
            found = await asyncio.shield(pending)
        finally:
            if pending.done():
                self._loading.pop(path, None)
        if found is not None:
            self._cache[path] = found
        return found

    async def response(
        self, request: web.Request, path: Path, cache_control: str = "no-cache"
    ) -> web.Response | None:
        """The file as an answer to ``request`` (200, or 304 for a matching If-None-Match);
        None if there is no such file."""
        found = await self.get(path)
        if found is None:
            return None
        headers = {"ETag": found.etag, "Cache-Control": cache_control, "Vary": "Accept-Encoding"}
        if cache_control != "no-store" and found.etag in _tags(request):
            return web.Response(status=304, headers=headers)
        body = found.body
        if found.gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", ""):
            body = found.gzipped
            headers["Content-Encoding"] = "gzip"
        headers["Content-Type"] = found.content_type
        return web.Response(body=body, headers=headers)


def _tags(request: web.Request) -> set[str]:
    given = request.headers.get("If-None-Match", "")
    return {t.strip().removeprefix("W/") for t in given.split(",")[:32]}
