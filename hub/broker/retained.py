"""Retained messages: a topic tree for wildcard look-ups, and the quotas that bound them.

No I/O. Each retained message is charged to the client that published it (its quota key):
at most ``per_client`` messages and ``per_client_bytes`` bytes (topics and payloads) each, and
``total_bytes`` for the whole hub. The hub's own messages count towards the total only and are
never refused. A retained publish that would exceed a quota is not retained (it is still
routed); the message it would have replaced stays.

Retained messages live long and are many: every full pass of Python's cyclic garbage
collector walks all of them (64 to 290 ms with 100,000 of them while they were loaded, a
stall for every client). When the store has grown by a quarter (at least FREEZE_STEP
messages) since the last time, ``gc.freeze()`` moves every object alive to the collector's
permanent generation, which it no longer walks; those objects are still freed as usual when
their last reference goes (retained messages and the tree hold no reference cycles). Churn
(replacing messages) never triggers it, only growth.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

from hub.broker.session import Message
from hub.broker.topictree import RetainedTree

log = logging.getLogger(__name__)
FREEZE_STEP = 10_000
QUOTA_MESSAGES = "retained_messages"
QUOTA_BYTES = "retained_bytes"
QUOTA_HUB_BYTES = "hub_retained_bytes"


def _size(message: Message) -> int:
    return len(message.payload) + len(message.topic_bytes)


class RetainedStore:
    def __init__(self, per_client: int, per_client_bytes: int, total_bytes: int) -> None:
        self.per_client = per_client
        self.per_client_bytes = per_client_bytes
        self.total_bytes = total_bytes
        self.messages: dict[str, Message] = {}  # topic -> message: exact look-ups
        self.tree: RetainedTree[Message] = RetainedTree()  # wildcard look-ups
        self.bytes = 0
        self._owner: dict[str, str] = {}  # topic -> quota key of its publisher
        self._use: dict[str, list[int]] = {}  # quota key -> [messages, bytes]
        self._frozen_at = 0  # how many messages there were at the last gc.freeze()

    def __len__(self) -> int:
        return len(self.messages)

    def get(self, topic: str) -> Message | None:
        return self.messages.get(topic)

    def topics(self) -> Iterator[str]:
        return iter(self.messages)

    def matching(self, topic_filter: str) -> Iterator[Message]:
        """Every retained message the filter matches, walked lazily through the tree."""
        if "+" not in topic_filter and "#" not in topic_filter:
            message = self.messages.get(topic_filter)
            return iter((message,) if message is not None else ())
        return self.tree.matching(topic_filter)

    def usage(self, owner: str) -> tuple[int, int]:
        """(messages, bytes) retained for a client."""
        use = self._use.get(owner)
        return (use[0], use[1]) if use is not None else (0, 0)

    def store(self, message: Message, owner: str | None) -> str | None:
        """Retains (or, with an empty payload, clears [MQTT-3.3.1-10]) the topic's message;
        returns the quota that refused it, or None."""
        topic = message.topic
        old = self.messages.get(topic)
        if not message.payload:
            if old is not None:
                self._forget(topic, old)
            return None
        size = _size(message)
        old_size = _size(old) if old is not None else 0
        if owner is not None:
            count, used = self.usage(owner)
            if old is not None and self._owner.get(topic) == owner:
                count, used = count - 1, used - old_size
            if count + 1 > self.per_client:
                return QUOTA_MESSAGES
            if used + size > self.per_client_bytes:
                return QUOTA_BYTES
            if self.bytes - old_size + size > self.total_bytes:
                return QUOTA_HUB_BYTES
        self._keep(message, owner, old)
        return None

    def restore(self, message: Message, owner: str | None) -> None:
        """A retained message the broker's state store kept, charged to its publisher
        whatever the quotas say now (they may have shrunk since it was stored)."""
        self._keep(message, owner, self.messages.get(message.topic))

    def _keep(self, message: Message, owner: str | None, old: Message | None) -> None:
        topic = message.topic
        size = _size(message)
        if old is not None:
            self._forget(topic, old)
        self.messages[topic] = message
        self.tree.set(topic, message)
        self.bytes += size
        if owner is not None:
            self._owner[topic] = owner
            use = self._use.get(owner)
            if use is None:
                self._use[owner] = [1, size]
            else:
                use[0] += 1
                use[1] += size
        if old is None and len(self.messages) >= self._frozen_at + max(
            FREEZE_STEP, self._frozen_at // 4
        ):
            self._frozen_at = len(self.messages)
            gc.freeze()
            log.debug(
                "%d retained messages: frozen out of the garbage collector's passes",
                self._frozen_at,
            )

    def _forget(self, topic: str, old: Message) -> None:
        del self.messages[topic]
        self.tree.pop(topic)
        size = _size(old)
        self.bytes -= size
        owner = self._owner.pop(topic, None)
        if owner is not None:
            use = self._use[owner]
            use[0] -= 1
            use[1] -= size
            if not use[0]:
                del self._use[owner]
