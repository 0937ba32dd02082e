"""The running hub's settings: the log level, and what SIGHUP reloads from the config file.

SIGHUP re-reads the file (with the same flags on top), applies what can change without
dropping a connection (the log level and the routes: hub.config.RELOADABLE) and logs which changed
settings need a restart. A file that has become wrong is logged and changes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hub import configfile
from hub.config import RELOADABLE, ConfigError, HubConfig

log = logging.getLogger(__name__)


def set_log_level(level_name: str) -> None:
    """The hub's log level; amqtt's chatter stays at WARNING or above unless asked."""
    level = logging.getLevelName(level_name.upper())
    if not isinstance(level, int):
        raise ConfigError(f"unknown log level {level_name!r}")
    logging.getLogger().setLevel(level)
    # amqtt reports every connection at INFO; keep its chatter below the hub's own unless asked.
    logging.getLogger("amqtt").setLevel(max(level, logging.WARNING))
    logging.getLogger("transitions").setLevel(max(level, logging.WARNING))


def configure_logging(level_name: str) -> None:
    logging.basicConfig(
        stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    set_log_level(level_name)


class Reloader:
    """Re-reads the config file on SIGHUP and applies what may change while running."""

    def __init__(
        self,
        config: HubConfig,
        path: Path | None,
        overrides: dict[str, Any],
        check: configfile.Check | None = None,
    ) -> None:
        self.config = config
        self.path = path
        self.overrides = overrides
        self.check = check
        self._tasks: set[asyncio.Task[list[str]]] = set()
        # The running hub's routes (hub.routes.service.Routes.apply), once it has started.
        self.apply_routes: Callable[[tuple[Any, ...]], Awaitable[list[str]]] | None = None

    def on_signal(self) -> None:
        """The SIGHUP handler: the file is read off the event loop."""
        task = asyncio.get_running_loop().create_task(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> list[str]:
        """Applies the file's reloadable settings; returns the names of those that changed."""
        if self.path is None:
            log.warning("SIGHUP: the hub runs without --config: nothing to reload")
            return []
        try:
            new = await asyncio.to_thread(configfile.load, self.path, self.overrides, self.check)
        except ConfigError as exc:
            log.error("SIGHUP: %s; the running settings stay", str(exc).replace("\n", "; "))
            return []
        old = self.config
        changed = [
            f.name
            for f in dataclasses.fields(HubConfig)
            if getattr(new, f.name) != getattr(old, f.name)
        ]
        applied = {name: getattr(new, name) for name in changed if name in RELOADABLE}
        if "log_level" in applied:
            set_log_level(new.log_level)
            log.warning("SIGHUP: log_level is now %s", new.log_level.upper())
        if "routes" in applied and self.apply_routes is None:  # the hub is still starting
            log.error("SIGHUP: the hub is starting: routes not reloaded; send SIGHUP again")
            del applied["routes"]
        elif "routes" in applied and self.apply_routes is not None:
            try:
                names = await self.apply_routes(new.routes)
            except ConfigError as exc:
                log.error("SIGHUP: %s; the running routes stay", exc)
                del applied["routes"]
            else:
                log.warning("SIGHUP: routes reloaded: %s", ", ".join(names) or "none changed")
        later = [name for name in changed if name not in RELOADABLE]
        if later:
            log.warning(
                "SIGHUP: %s changed in %s: takes effect after a restart",
                ", ".join(later),
                self.path,
            )
        if not changed:
            log.warning("SIGHUP: %s: no setting changed", self.path)
        self.config = dataclasses.replace(old, **applied)
        return changed
