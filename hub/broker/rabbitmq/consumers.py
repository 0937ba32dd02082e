"""The hub's consumers of the cluster's queues: readings (acknowledged once stored, else back
to the queue or to the dead-letter exchange) and the state every hub sees (status, health,
replies). Part of :class:`hub.broker.rabbitmq.RabbitBroker`."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aio_pika.abc import AbstractIncomingMessage

from hub.broker.rabbitmq.keys import mqtt_topic
from hub.broker.settings import Refusal
from hub.commitlog import COMMITTED, Batch
from hub.topicmatch import filter_matches

if TYPE_CHECKING:
    from hub.broker.rabbitmq.broker import RabbitBroker

log = logging.getLogger(__name__)

REQUEUE_DELAY_S = 1.0  # a reading the store could not take goes back after this long


class _Settle:
    """Acknowledges one reading once each listener's commit handle has committed."""

    __slots__ = ("consumers", "failed", "message", "pending")

    def __init__(self, consumers: Consumers, message: AbstractIncomingMessage, n: int) -> None:
        self.consumers, self.message, self.pending, self.failed = consumers, message, n, False

    def batch_done(self, batch: Batch) -> None:
        self.pending -= 1
        self.failed = self.failed or batch.state != COMMITTED
        if self.pending == 0:
            self.consumers.settle(self.message, stored=not self.failed)


class Consumers:
    def __init__(self, broker: RabbitBroker) -> None:
        self.broker = broker
        self.dead_lettered = 0

    def _check(self, topic: str, payload: bytes) -> Refusal | None:
        check = self.broker.publish_check
        return check(None, topic, payload, False) if check is not None else None

    async def on_state(self, message: AbstractIncomingMessage) -> None:
        """Status, health and replies: every hub sees each (no acknowledgement needed)."""
        topic, payload = mqtt_topic(message.routing_key or ""), message.body
        refusal = self._check(topic, payload)
        if refusal is not None:
            self._refused(refusal, topic)
            return
        if any(filter_matches(f, topic) for f in self.broker.state_filters[:2]):
            self.broker.remember(topic, payload)  # status and health, retained by the contract
        self._deliver(topic, payload)

    def _deliver(self, topic: str, payload: bytes) -> list[Batch]:
        handles = []
        for listener in self.broker.message_listeners:
            try:
                handle = listener(topic, payload)
            except Exception:
                log.exception("message listener failed on %s", topic)
                continue
            if handle is not None:
                handles.append(handle)
        return handles

    async def on_reading(self, message: AbstractIncomingMessage) -> None:
        topic, payload = mqtt_topic(message.routing_key or ""), message.body
        refusal = self._check(topic, payload)
        if refusal is not None:
            self._refused(refusal, topic)
            self._dead_letter(message, topic, refusal.detail, refusal.device)
            return
        handles = self._deliver(topic, payload)
        if not handles:
            self._dead_letter(message, topic, "not a reading the store can take", None)
            return
        waiter = _Settle(self, message, len(handles))
        for handle in handles:
            handle.wait(waiter)

    def settle(self, message: AbstractIncomingMessage, *, stored: bool) -> None:
        if stored:
            self.broker.spawn(message.ack())
        else:  # the store cannot take it now: back to the queue, after a pause
            self.broker.spawn(self._requeue(message))

    async def _requeue(self, message: AbstractIncomingMessage) -> None:
        await asyncio.sleep(REQUEUE_DELAY_S)
        await message.nack(requeue=True)

    def _dead_letter(
        self, message: AbstractIncomingMessage, topic: str, why: str, device: str | None
    ) -> None:
        self.dead_lettered += 1
        self.broker.spawn(message.reject(requeue=False))
        self.broker.emit(
            "malformed",
            {
                "kind": "malformed",
                "client_id": device,
                "identity": "device" if device else None,
                "name": device,
                "network": "cluster",
                "peer": None,
                "detail": f"dead-lettered to {self.broker.settings.dead_letters}: {why}",
                "topic": topic[:200],
                "device": device,
            },
        )

    def _refused(self, refusal: Refusal, topic: str) -> None:
        event = {
            "kind": refusal.event,
            "client_id": refusal.device,
            "identity": "device" if refusal.device else None,
            "name": refusal.device,
            "network": "cluster",
            "peer": None,
            "detail": refusal.detail,
            "device": refusal.device,
        }
        if refusal.quota:
            event["quota"] = refusal.quota
        self.broker.emit(refusal.event, event)
