"""Incoming messages: routed to their lane off the link callback, each PUBACKed once it is safe.

Three lanes, so that none holds up another: MQTT scans go to the lane a reader driver takes from
(acknowledged once journaled, by the driver's `ack`); commands and expected-returns announcements
each have their own, served one message at a time by the daemon's handler, and a message is
acknowledged once the handler returned (applied and its reply queued, or its error reply queued).
A handler that fails (the buffer under it) leaves its message unacknowledged: the broker sends it
again on the next connection. Messages on no topic of ours are acknowledged at once.

QoS 1 messages are never dropped: the broker sends no more than the Receive Maximum before our
PUBACKs, which bounds the lanes. QoS 0 messages may be dropped when too many wait; each is counted.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

from gateway.errors import BufferUnavailable, GatewayError
from gateway.logs import get_logger
from gateway.runtime.inbound import Delivery, InboundLane
from gateway.sync.mqtt import Message, MqttLink
from gateway.sync.topics import Topics

_log = get_logger("forwarder")

ANNOUNCEMENT = "expected-returns"


class Inbox:
    """Routes messages to the scan, command and announcement lanes; serves the last two."""

    def __init__(
        self,
        topics: Topics,
        handler: Callable[[Message], Awaitable[None]] | None,
        scans: InboundLane[Delivery] | None = None,
    ) -> None:
        self._topics = topics
        self._handler = handler
        self._scans = scans
        # The newest link (the forwarder sets it before connecting): acks go only to it.
        self.link: MqttLink | None = None
        self._commands: InboundLane[Message] = InboundLane()
        self._announcements: InboundLane[Message] = InboundLane()
        self.dropped = 0
        self.unexpected = 0

    @property
    def filters(self) -> list[str]:
        """The topic filters to subscribe to (scans only when a lane takes them)."""
        topics = self._topics
        filters = [topics.ack, topics.cmd_filter, topics.site_expected_returns]
        if self._scans is not None:
            filters.append(topics.scans_filter)
        return filters

    def acknowledge(self, message: Message) -> None:
        """PUBACK a message on the link it came on; if that link is gone, the broker resends it."""
        link = self.link
        if link is None or not link.ack(message):
            _log.debug("incoming_ack_withheld", topic=message.topic[:200], reason="link gone")

    def waiting(self) -> int:
        """Messages in the lanes, not yet handled (scans: not yet taken by the driver)."""
        scans = len(self._scans) if self._scans is not None else 0
        return scans + len(self._commands) + len(self._announcements)

    def route(self, message: Message) -> None:
        """Put a message in its lane without waiting (the link's callback calls this)."""
        topics = self._topics
        device = topics.scan_device(message.topic)
        if device is not None and self._scans is not None:
            delivery = Delivery(
                topic=message.topic,
                sender=device,
                payload=message.payload,
                mid=message.mid,
                qos=message.qos,
                dup=message.dup,
                ack=functools.partial(self.acknowledge, message),
            )
            self._offered(self._scans.offer(delivery), message)
            return
        name = topics.command_name(message.topic)
        if message.topic == topics.site_expected_returns:
            name = ANNOUNCEMENT  # the WMS announces once for every door of the site
        if name is None or self._handler is None:
            self.unexpected += 1
            self.acknowledge(message)  # nothing of ours to keep: let the broker forget it
            return
        lane = self._announcements if name == ANNOUNCEMENT else self._commands
        self._offered(lane.offer(message), message)

    async def run(self) -> None:
        """Serve the command and announcement lanes until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._serve(self._commands), name="inbox-commands")
            group.create_task(self._serve(self._announcements), name="inbox-announcements")

    async def _serve(self, lane: InboundLane[Message]) -> None:
        handler = self._handler
        if handler is None:
            return
        while True:
            message = await lane.get()
            try:
                await handler(message)
            except BufferUnavailable:
                raise  # the buffer failed for good (a stall is waited out inside it): stop
            except GatewayError as exc:
                # Not acknowledged: the broker sends it again on the next connection.
                _log.warning(
                    "incoming_message_failed",
                    topic=message.topic[:200],
                    error=str(exc),
                    acknowledged=False,
                )
                continue
            self.acknowledge(message)

    def _offered(self, taken: bool, message: Message) -> None:
        if not taken:  # only QoS 0 is ever refused
            self.dropped += 1
            _log.warning(
                "incoming_message_dropped",
                topic=message.topic[:200],
                qos=message.qos,
                reason="too many QoS 0 messages waiting",
            )
