"""Commands and scans from the broker, handed to the daemon one at a time, off the link callback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gateway.errors import BufferUnavailable, GatewayError
from gateway.logs import get_logger
from gateway.sync.mqtt import Message

_log = get_logger("forwarder")

INCOMING_QUEUE = 1000


class Inbox:
    """A bounded queue between the link (which must not block) and the daemon's handler."""

    def __init__(self, handler: Callable[[Message], Awaitable[None]]) -> None:
        self._handler = handler
        self._queue: asyncio.Queue[Message] = asyncio.Queue(INCOMING_QUEUE)

    def offer(self, message: Message) -> bool:
        """Queue a message without waiting; False when the queue is full (it is dropped)."""
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            return False
        return True

    async def run(self) -> None:
        """Hand queued messages to the handler until cancelled; a handler's error is logged."""
        while True:
            message = await self._queue.get()
            try:
                await self._handler(message)
            except BufferUnavailable:
                raise  # the buffer failed for good (a stall is waited out inside it): stop
            except GatewayError as exc:
                _log.warning("incoming_message_failed", topic=message.topic[:200], error=str(exc))
