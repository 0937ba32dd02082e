"""Commands sent as the hub: numbered, kept in the history with who sent them, pending until
the device replies (matched by command id) or they expire.

Every command is published at QoS 1 on the device's command topic. The broker queues it for a
device with a persistent session; the firmware uses clean sessions, so a device that is not
connected does not get it then: it stays pending, is sent once more when the device comes
online (its ``online`` status), and expires at ``expires_at``. A command published while its
device was online is never sent again (it was delivered; a settings update sent twice would
reboot the device twice). A reply that comes after that
is not recorded (the command is no longer pending).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from typing import Any

from hub.recorder import Recorder
from hub.topics import command_topic, reply_device, reply_topic

log = logging.getLogger(__name__)

MAX_PENDING = 10_000  # in all
MAX_PENDING_PER_DEVICE = 32
MAX_REPLY_BYTES = 4096
RECENT = 1000  # finished commands kept in memory for polling
EXPIRE_EVERY_S = 1.0
SETTLE_S = 2.0  # after a device's "online", the time a delivered command takes to be answered
MAX_DOUBT = 200_000  # devices whose connection may have died unseen, remembered at once


class CommandRefused(Exception):
    """Too many pending commands (for the device or in all)."""


class Commands:
    def __init__(self, broker: Any, recorder: Recorder, next_id: int = 1) -> None:
        self._broker = broker
        self._recorder = recorder
        self._next_id = max(next_id, 1)
        self.pending: dict[int, dict[str, Any]] = {}
        self.recent: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        # Commands published while their device was online: delivered, so never sent again
        # (a settings update sent twice would reboot the device twice).
        self._sent_online: set[int] = set()
        # Cluster mode (connections_lost): when each pending command was last published; the
        # commands that may have been lost with their device's node; when to send them again;
        # the devices whose connection may have died unseen (since when); and when each device
        # with pending commands was last seen online.
        self._published: dict[int, float] = {}
        self._unsure: set[int] = set()
        self._resend_at: dict[int, float] = {}
        self._doubt: OrderedDict[str, float] = OrderedDict()
        self._online_at: OrderedDict[str, float] = OrderedDict()

    def load(self, stored: list[dict[str, Any]]) -> None:
        """Pending commands the store kept (sent again when their device comes online)."""
        for command in stored:
            if command["status"] == "pending" and len(self.pending) < MAX_PENDING:
                self.pending[command["id"]] = command
            self._next_id = max(self._next_id, command["id"] + 1)

    def create(
        self, device: str, command: dict[str, Any], by: str, ttl_s: float, online: bool
    ) -> dict[str, Any]:
        """Records and publishes a command; returns its record."""
        if (
            len(self.pending) >= MAX_PENDING
            or sum(1 for c in self.pending.values() if c["device"] == device)
            >= MAX_PENDING_PER_DEVICE
        ):
            raise CommandRefused(f"too many pending commands for {device!r}")
        now = time.time()
        body = {k: v for k, v in command.items() if k != "id"}
        record: dict[str, Any] = {
            "id": self._next_id,
            "device": device,
            "by": by,
            "op": str(body["op"]),
            "body": body,
            "sent_at": now,
            "status": "pending",
            "reply": None,
            "replied_at": None,
            "expires_at": now + ttl_s,
        }
        self._next_id += 1
        self.pending[record["id"]] = record
        self._recorder.command(record)
        self._publish(record)
        if online:
            self._sent_online.add(record["id"])
            if device in self._doubt:  # its connection may be dead: checked once it is back
                self._unsure.add(record["id"])
        return record

    async def stored(self) -> None:
        """Waits until what was recorded so far is written (or kept for a retry after a
        store failure): a command answered 202 survives a crash of the hub."""
        await self._recorder.flush()

    def _publish(self, record: dict[str, Any]) -> None:
        payload = json.dumps({**record["body"], "id": record["id"]}).encode()
        self._published[record["id"]] = time.time()
        self._broker.publish(command_topic(record["device"]), payload, qos=1)

    async def wait(self, command_id: int, timeout: float) -> dict[str, Any]:
        """The reply to a pending command; TimeoutError after timeout."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[command_id] = future
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(command_id, None)

    def get(self, command_id: int) -> dict[str, Any] | None:
        return self.pending.get(command_id) or self.recent.get(command_id)

    def _finish(self, record: dict[str, Any]) -> None:
        self.pending.pop(record["id"], None)
        self._sent_online.discard(record["id"])
        self._published.pop(record["id"], None)
        self._unsure.discard(record["id"])
        self._resend_at.pop(record["id"], None)
        self.recent[record["id"]] = record
        while len(self.recent) > RECENT:
            self.recent.popitem(last=False)
        self._recorder.command(record)

    # --- the broker's and the device table's listeners ----------------------------------------
    def on_message(self, topic: str, payload: bytes) -> None:
        """Replies on d/<id>/r, matched by command id (and device)."""
        if not self.pending or reply_device(topic) is None:
            return None
        if len(payload) > MAX_REPLY_BYTES:
            return None
        try:
            reply = json.loads(payload)
            command_id = reply["id"]
        except (ValueError, KeyError, TypeError, RecursionError):
            return None
        if not isinstance(command_id, int) or isinstance(command_id, bool):
            return None
        record = self.pending.get(command_id)
        if record is None or topic != reply_topic(record["device"]):
            return None
        record.update(status="replied", reply=reply, replied_at=time.time())
        self._finish(record)
        future = self._waiting.get(command_id)
        if future is not None and not future.done():
            future.set_result(reply)
        return None

    def on_state(self, device: str, what: str, state: dict[str, Any]) -> None:
        """A device that comes online gets its pending commands again, oldest first; those
        that may have been lost with its node (cluster mode) once ``SETTLE_S`` has passed. A
        device that goes offline first waits for its next ``online``."""
        if what != "status":
            return
        mine = sorted(
            (c for c in self.pending.values() if c["device"] == device), key=lambda c: c["id"]
        )
        if state.get("status") != "online":
            self._doubt.pop(device, None)
            for record in mine:
                self._resend_at.pop(record["id"], None)
            return
        now = time.time()
        self._doubt.pop(device, None)
        if mine:
            self._online_at[device] = now
            self._online_at.move_to_end(device)
            while len(self._online_at) > MAX_PENDING:
                self._online_at.popitem(last=False)
        for record in mine:
            if record["expires_at"] <= now:
                continue
            if record["id"] not in self._sent_online:
                self._publish(record)
                self._sent_online.add(record["id"])
                self._unsure.discard(record["id"])
            elif record["id"] in self._unsure:
                self._resend_at[record["id"]] = now + SETTLE_S

    def connections_lost(self, devices: list[str], since: float) -> None:
        """Cluster mode: these devices' connections may have died at ``since`` or later
        without a will or a close event (their node crashed). Their commands published since
        then and not answered are sent again once the device is back: ``SETTLE_S`` after its
        next ``online``, or after the one already seen since then."""
        lost = set(devices)
        now = time.time()
        for device in lost:
            if self._online_at.get(device, 0.0) <= since:  # not seen back yet
                self._doubt[device] = since
                self._doubt.move_to_end(device)
        while len(self._doubt) > MAX_DOUBT:
            self._doubt.popitem(last=False)
        for record in self.pending.values():
            device = record["device"]
            published = self._published.get(record["id"])
            if device not in lost or published is None or published < since:
                continue
            if record["id"] not in self._sent_online:
                continue  # sent again at the next online anyway
            back = self._online_at.get(device, 0.0)
            if back > since and published >= back:
                continue  # published to the session the device has now: delivered
            self._unsure.add(record["id"])
            if back > since:  # back already (seen online since the node went down)
                self._resend_at[record["id"]] = now + SETTLE_S

    def _resend_due(self, now: float) -> None:
        for command_id, due in list(self._resend_at.items()):
            record = self.pending.get(command_id)
            if record is None:
                del self._resend_at[command_id]
            elif due <= now:
                del self._resend_at[command_id]
                self._unsure.discard(command_id)
                log.info("command %d to %s sent again (its node was lost)", *_who(record))
                self._publish(record)

    # --- expiry -------------------------------------------------------------------------------
    def expire(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for record in [c for c in self.pending.values() if c["expires_at"] <= now]:
            record["status"] = "expired"
            self._finish(record)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(EXPIRE_EVERY_S)
            self.expire()
            self._resend_due(time.time())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _who(record: dict[str, Any]) -> tuple[int, str]:
    return record["id"], record["device"]
