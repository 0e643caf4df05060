"""The forwarder: publishes the outbox in `seq` order at QoS 1 and marks rows delivered.

The outbox is the truth. Every (re)connect starts from a fresh link with nothing in flight and goes
back to the oldest undelivered row (go-back-N, see `window.py`), so first copies reach the broker in
`seq` order and duplicates are bounded by the window. `delivery = "broker"`: a positive PUBACK
delivers a row. `delivery = "wms"`: only the WMS's acks do (see `wms_acks.py`); rows it has not
acked within `ack_timeout_s` are sent again with the same payload. Deliveries reach the outbox in
batches (`marks.py`); status, KPIs, replies, events and replays go through `control.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from gateway.errors import (
    BrokerRefused,
    BrokerUnavailable,
    BufferUnavailable,
    GatewayError,
    InputError,
)
from gateway.logs import get_logger
from gateway.runtime.backoff import Backoff
from gateway.runtime.inbound import Delivery, InboundLane
from gateway.sync.acks import AckIds, parse_ack
from gateway.sync.control import Control, ControlQueue, offline_status, online_status
from gateway.sync.inbox import Inbox
from gateway.sync.marks import MarkBatch
from gateway.sync.mqtt import (
    Disconnected,
    LinkEvent,
    Message,
    MqttLink,
    Published,
    PublishProperties,
)
from gateway.sync.outbox import OutboxRowLike, OutboxSource
from gateway.sync.servers import ServerRing
from gateway.sync.settings import ForwarderSettings, LinkSettings, Will
from gateway.sync.topics import Topics
from gateway.sync.window import FETCH_ROWS, Window
from gateway.sync.wms_acks import WmsAcks

__all__ = ["Forwarder", "ForwarderStats", "IncomingMessage", "OutboxRowLike", "OutboxSource"]

_log = get_logger("forwarder")

IncomingMessage = Message
"""A message on `cmd/+` or the site's announcements (topic, payload, MQTT 5 response topic, ...)."""

STABLE_CONNECTION_S = 5.0
# An attempt number past any cap: Backoff.delay_s gives the longest delay, jittered.
LONGEST = 64
STOP_LINK_S = 1.2
STOP_FLUSH_S = 0.7
# After the outbox failed under a session: start over soon, the link is not at fault.
OUTBOX_RETRY = Backoff(min_s=0.25, max_s=2.0)


@dataclass(slots=True)
class ForwarderStats:
    """Counters and state of the broker link, for health, metrics and the demo."""

    connected: bool = False
    published: int = 0
    delivered: int = 0
    refused: int = 0
    resent: int = 0
    replayed: int = 0
    acks_received: int = 0
    bad_acks: int = 0
    reconnects: int = 0
    messages_dropped: int = 0
    messages_unexpected: int = 0
    incoming_waiting: int = 0
    last_error: str | None = None
    window: int = 0
    inflight: int = 0
    inflight_peak: int = 0
    unacked: int = 0
    # Which of `[mqtt] servers` the link is on (None while down), and moves between them.
    server: str | None = None
    failovers: int = 0


class Forwarder:
    """Publishes the outbox over one supervised MQTT link; `run()` until cancelled or stopped."""

    def __init__(
        self,
        outbox: OutboxSource,
        settings: ForwarderSettings,
        topics: Topics,
        *,
        health: Callable[[], dict[str, object]],
        on_message: Callable[[IncomingMessage], Awaitable[None]] | None = None,
        scans: InboundLane[Delivery] | None = None,
        on_published: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._outbox = outbox
        self._settings = settings
        self._topics = topics
        self._health = health
        self._published_hook = on_published
        self._clock = clock
        self._wall_clock = wall_clock
        self._wms = settings.delivery == "wms"
        self._backoff = Backoff(min_s=settings.reconnect_min_s, max_s=settings.reconnect_max_s)
        self._servers = ServerRing(settings.servers or ((settings.link.host, settings.link.port),))
        self._stats = ForwarderStats(window=settings.max_inflight)
        self._window = Window(settings.max_inflight)
        self._acks = WmsAcks()
        self._marks = MarkBatch()
        self._control = ControlQueue(topics)
        self._inbox = Inbox(topics, on_message, scans)
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._link: MqttLink | None = None
        self._generation = 0
        self._lost_reason: str | None = None
        self._fill_scheduled = False
        self._last_status_s = 0.0

    # -- public ---------------------------------------------------------------------------------

    @property
    def stats(self) -> ForwarderStats:
        """A live view of the counters (the same object, refreshed)."""
        stats = self._stats
        stats.inflight = self._window.in_flight
        stats.unacked = len(self._acks)
        stats.window = self._window.size
        stats.delivered = self._marks.delivered
        stats.messages_dropped = self._inbox.dropped
        stats.messages_unexpected = self._inbox.unexpected
        stats.incoming_waiting = self._inbox.waiting()
        return stats

    def refresh_status(self) -> None:
        """Publish the retained status now (a reader changed state), not at the next period."""
        if self._connected():
            self._publish_birth()

    def notify(self) -> None:
        """New rows were committed to the outbox: wake the publisher."""
        self._window.notify()
        self._wake.set()

    async def run(self) -> None:
        """Connect, publish and reconnect with backoff until cancelled (or until `stop()`)."""
        if self._settings.link.protocol == "3.1.1" and self._settings.delivery == "broker":
            # A 3.1.1 PUBACK has no reason code: mosquitto acks a publish its ACL refuses, then
            # drops it, and that row would count as delivered.
            _log.warning(
                "mqtt311_broker_delivery",
                advice='MQTT 3.1.1 cannot report a refused publish: set delivery = "wms" to '
                "count only what the WMS acknowledged",
            )
        async with asyncio.TaskGroup() as group:
            dispatcher = group.create_task(self._inbox.run(), name="forwarder-dispatch")
            try:
                await self._connect_loop()
            finally:
                dispatcher.cancel()

    async def stop(self) -> None:
        """Publish the retained `offline` status, disconnect cleanly, flush marks; within 2 s."""
        self._stop_event.set()
        self._wake.set()
        link = self._link
        try:
            async with asyncio.timeout(STOP_LINK_S):
                if link is not None and link.connected:
                    await self._publish_offline(link)
                    await link.disconnect(timeout_s=0.5)
        except TimeoutError:
            _log.warning("broker_stop_timed_out")
        except BrokerUnavailable as exc:
            _log.debug("broker_stop_link_lost", reason=str(exc))
        finally:
            if link is not None and link.connected:
                link.abort("stop")
            self._link = None
            self._stats.connected = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_FLUSH_S):
                await self._marks.flush(self._outbox)

    async def publish_retained(self, topic: str, payload: bytes) -> None:
        """Publish retained at QoS 1 now, or keep the latest per topic for the next connect."""
        self._control.retain(topic, payload)
        if self._connected():
            self._queue_control(Control(topic, payload, retain=True))

    async def reply(self, msg: IncomingMessage, name: str, payload: bytes) -> None:
        """Answer a command on `cmd-result/{name}`, and on its MQTT 5 response topic if given.

        MQTT 3.1.1 carries no response topic, so there the reply goes to `cmd-result/{name}` only.
        """
        if not self._connected():
            _log.info("command_reply_dropped_offline", command=name)
            return
        self._queue_control(Control(self._topics.cmd_result(name), payload, retain=False))
        if msg.response_topic:
            props = PublishProperties(correlation_data=msg.correlation_data)
            self._queue_control(Control(msg.response_topic, payload, False, props))

    async def publish_event(self, payload: bytes, *, topic: str | None = None) -> None:
        """Publish a gateway event at QoS 1, best effort (the last few are kept while offline).

        With `topic` (a door's verdict) at QoS 0, and only while connected: it is stale at once.
        """
        if topic is not None:
            if self._connected():
                self._queue_control(Control(topic, payload, retain=False, qos=0))
        elif self._connected():
            self._queue_control(Control(self._topics.events, payload, retain=False))
        else:
            self._control.keep_event(payload)

    async def republish(self, rows: Sequence[OutboxRowLike]) -> int:
        """Send these rows again as they are (a WMS asked for a replay); return how many queued."""
        taken = self._control.add_replays(rows)
        self._schedule_fill()
        return taken

    # -- connection cycle -----------------------------------------------------------------------

    async def _connect_loop(self) -> None:
        settings = self._settings
        stopping = self._stop_event.is_set
        attempt = 0
        failures = 0
        outbox_retry = _OutboxRetry()
        ever_connected = False
        while not stopping():
            self._generation += 1
            will = Will(self._topics.status, offline_status(self._topics), qos=1, retain=True)
            host, port = self._servers.current
            link_settings = dataclasses.replace(settings.link, will=will, host=host, port=port)
            # Messages can come with the CONNACK, before the session starts: the inbox acks them.
            link = self._inbox.link = MqttLink(link_settings, self._handler(self._generation))
            try:
                await link.connect()
            except BrokerUnavailable as exc:
                _note_failure(self._stats, link_settings, "broker_connect_failed", exc, failures)
                failures += 1
                refused = isinstance(exc, BrokerRefused)
                # Refused (credentials, TLS trust): the longest backoff, jittered so a fleet
                # refused at once by a broker-side change does not come back in lockstep.
                delay_s = self._backoff.delay_s(
                    LONGEST if refused else self._servers.backoff_attempt(attempt)
                )
                attempt += 1
                self._servers.failed()
                await _wait_unless_set(self._stop_event, delay_s)
                continue
            if stopping():
                await link.disconnect(timeout_s=0.5)
                return
            if ever_connected:
                self._stats.reconnects += 1
            ever_connected = True
            connected_at_s = self._clock()
            if self._servers.connected():
                self._stats.failovers += 1
            self._stats.server = link_settings.server
            _log.info(
                "broker_connected",
                server=link_settings.server,
                protocol=link_settings.protocol,
                failovers=self._stats.failovers,
                receive_maximum=link.receive_maximum,
                after_failures=failures,
            )
            failures = 0
            try:
                await self._session(link)
            except BrokerUnavailable as exc:
                if stopping():
                    return
                _note_failure(self._stats, link_settings, "broker_link_lost", exc, failures)
                failures += 1
                if self._clock() - connected_at_s >= STABLE_CONNECTION_S:
                    attempt = 0
                delay_s = self._backoff.delay_s(self._servers.backoff_attempt(attempt))
                attempt += 1
                # Another node of a cluster takes over at once; a single broker is tried again.
                self._servers.failed()
                await _wait_unless_set(self._stop_event, delay_s)
            except GatewayError as exc:
                # Something under the outbox failed: nothing was lost; start over shortly.
                session_s = self._clock() - connected_at_s
                await outbox_retry.wait(exc, session_s, self._stats, self._stop_event)

    async def _session(self, link: MqttLink) -> None:
        """Run one connection until it is lost (raises BrokerUnavailable) or stopped."""
        self._lost_reason = None
        await self._marks.flush(self._outbox)
        self._link = link
        self._window.start(link.receive_maximum, self._clock())
        self._stats.window = self._window.size
        self._stats.connected = True
        self._stats.last_error = None
        self._acks.link_started()
        self._control.link_started()
        try:
            filters = self._inbox.filters
            codes = await link.subscribe(filters)
            for topic, code in zip(filters, codes, strict=False):
                if code >= 0x80:
                    _log.error("subscription_refused", topic=topic, reason_code=hex(code))
            self._publish_birth()
            await self._pump(link)
        except asyncio.CancelledError:
            # Cancelled from outside: leave the link up so stop() can say `offline` and disconnect.
            raise
        except BaseException:
            if link.connected:
                link.abort("session ended")
            raise
        finally:
            if not link.connected:
                self._window.end()
                self._link = None
                self._stats.connected = False
                self._stats.server = None

    async def _pump(self, link: MqttLink) -> None:
        """The per-connection loop: batch marks, prefetch rows, timers; the hot path is _fill."""
        settings = self._settings
        window = self._window
        stopping = self._stop_event.is_set
        while True:
            self._wake.clear()
            if self._lost_reason is not None or not link.connected:
                raise BrokerUnavailable(self._lost_reason or "link lost")
            if stopping():
                return
            now_s = self._clock()
            if window.stalled(now_s, settings.stall_timeout_s):
                _log.warning("broker_link_stalled", stall_timeout_s=settings.stall_timeout_s)
                link.abort("stalled: no PUBACK")
                raise BrokerUnavailable("stalled: no PUBACK within stall_timeout_s")
            await self._write_marks_and_go_back(now_s)
            if self._wms:
                self._acks.expire(now_s, settings.ack_timeout_s)
            if now_s - self._last_status_s >= settings.status_interval_s:
                self._publish_birth()
            if window.needs_rows(stopping()):
                after_seq, generation = window.read_from()
                rows = await self._outbox.pending(after_seq, FETCH_ROWS)
                window.fetched(rows, generation, self._acks.still_unacked if self._wms else None)
            self._fill()
            if not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._next_deadline_s(self._clock())):
                        await self._wake.wait()

    async def _write_marks_and_go_back(self, now_s: float) -> None:
        if self._marks.due(now_s, self._stop_event.is_set()):
            await self._marks.flush(self._outbox)
        if self._window.go_back_due(now_s):
            # After a refused row: start again at the oldest undelivered row, after a backoff.
            await self._marks.flush(self._outbox)
            self._window.go_back()

    # -- the hot path ---------------------------------------------------------------------------

    def _fill(self) -> None:
        """Publish from the queues until the window is full (control, resends, replay, rows)."""
        self._fill_scheduled = False
        link = self._link
        if link is None or not link.connected:
            return
        window = self._window
        stats = self._stats
        idle = window.in_flight == 0
        if idle:
            window.last_progress_s = self._clock()
        publish = functools.partial(link.publish_row, self._topics.movements)
        try:
            self._control.send(
                lambda c: link.publish(c.topic, c.payload, c.qos, c.retain, c.properties), window
            )
            if not self._stop_event.is_set() and not window.going_back:
                resent = window.send_again(publish, self._acks.next_resend)
                stats.published += resent
                stats.resent += resent
                stats.replayed += self._control.send_replays(publish, window)
                limit, skip_upto = self._acks.limits(window.rows_in_flight, wms=self._wms)
                stats.published += window.send_rows(publish, limit, skip_upto)
        except BrokerUnavailable:
            return  # the link is going; Disconnected follows and the session ends
        link.flush()
        inflight = window.in_flight
        stats.inflight_peak = max(stats.inflight_peak, inflight)
        if (idle and inflight) or window.needs_rows(self._stop_event.is_set()):
            self._wake.set()  # the pump prefetches, and re-arms its stall deadline

    def _on_published(self, event: Published) -> None:
        window = self._window
        now_s = self._clock()
        answer = window.answered(event.mid, now_s)
        if isinstance(answer, tuple):
            self._row_published(answer[0], is_resend=answer[1], event=event, now_s=now_s)
        elif answer is not None and not event.ok:
            self._stats.refused += 1
            _log.warning("publish_refused", topic=answer, reason_code=hex(event.reason_code))
        if window.going_back and not window.rows_in_flight:
            self._wake.set()  # the window drained: the pump may go back now
        self._progress.set()
        self._schedule_fill()

    def _row_published(
        self, row: OutboxRowLike, *, is_resend: bool, event: Published, now_s: float
    ) -> None:
        window = self._window
        if not event.ok:
            self._stats.refused += 1
            if window.going_back:
                _log.debug(
                    "publish_refused", seq=row.seq, id=row.id, reason_code=hex(event.reason_code)
                )
                window.refused(now_s, 0.0)
            else:
                _log.error(
                    "publish_refused",
                    seq=row.seq,
                    id=row.id,
                    reason_code=hex(event.reason_code),
                    advice="the broker refused a movement (ACL?); it stays in the outbox",
                )
                # An ACL will not change by itself and mosquitto drops the link after refusing:
                # like a refused login, try the row again only after the longest backoff.
                window.refused(now_s, self._backoff.delay_s(LONGEST))
            self._wake.set()
            return
        if self._link is not None:
            window.accepted(self._link.receive_maximum)
        if not is_resend and self._published_hook is not None:
            self._published_hook(row.seq)  # first broker acceptance: the read-to-publish latency
        if not self._wms:
            if self._marks.add_seq(row.seq, now_s):
                self._wake.set()  # the pump arms its few-ms batching deadline, or writes a batch
        elif not is_resend and self._acks.published(row, now_s):
            self._wake.set()  # the pump arms the ack timeout

    def _schedule_fill(self) -> None:
        if not self._fill_scheduled and self._link is not None:
            self._fill_scheduled = True
            asyncio.get_running_loop().call_soon(self._fill)

    # -- link events ----------------------------------------------------------------------------

    def _handler(self, generation: int) -> Callable[[LinkEvent], None]:
        def handle(event: LinkEvent) -> None:
            if generation != self._generation:
                return  # a late event from a link that is already gone
            if isinstance(event, Published):
                self._on_published(event)
            elif isinstance(event, Message):
                self._on_link_message(event)
            elif isinstance(event, Disconnected):
                self._lost_reason = event.reason
                self._wake.set()
                self._progress.set()

        return handle

    def _on_link_message(self, message: Message) -> None:
        if message.topic != self._topics.ack:
            self._inbox.route(message)
            return
        # WMS acks are idempotent and only change memory here (marks are written in batches):
        # acknowledged at once.
        self._inbox.acknowledge(message)
        try:
            ack = parse_ack(message.payload)
        except InputError as exc:
            self._stats.bad_acks += 1
            _log.warning("ack_rejected", reason=exc.reason, payload_bytes=len(message.payload))
            return
        self._stats.acks_received += 1
        in_flight = self._window.first_sends()
        if isinstance(ack, AckIds):
            self._marks.add_ack(ack.ids, None, self._clock())
            self._acks.acked_ids(ack.ids, in_flight)
        else:
            self._marks.add_ack((), ack.seq, self._clock())
            self._acks.acked_upto_seq(ack.seq, in_flight)
        self._wake.set()
        self._schedule_fill()

    # -- helpers --------------------------------------------------------------------------------

    def _next_deadline_s(self, now_s: float) -> float:
        settings = self._settings
        deadlines = [self._last_status_s + settings.status_interval_s]
        marks_s = self._marks.deadline_s(now_s)
        if marks_s is not None:
            deadlines.append(marks_s)
        deadlines.extend(self._window.deadlines_s(settings.stall_timeout_s))
        acks_s = self._acks.deadline_s(settings.ack_timeout_s)
        if acks_s is not None:
            deadlines.append(acks_s)
        return max(0.0, min(deadlines) - now_s)

    def _connected(self) -> bool:
        link = self._link
        return link is not None and link.connected and not self._stop_event.is_set()

    def _queue_control(self, item: Control) -> None:
        self._control.put(item)
        self._schedule_fill()

    def _publish_birth(self) -> None:
        self._last_status_s = self._clock()
        payload = online_status(self._topics, self._wall_clock(), self._health())
        self._queue_control(Control(self._topics.status, payload, retain=True))

    async def _publish_offline(self, link: MqttLink) -> None:
        window = self._window
        while not window.has_room():
            self._progress.clear()
            await self._progress.wait()
            if not link.connected:
                return
        mid = link.publish(self._topics.status, offline_status(self._topics), 1, retain=True)
        window.sent_other(mid, self._topics.status)
        while window.is_in_flight(mid) and link.connected:
            self._progress.clear()
            await self._progress.wait()


@dataclass(slots=True)
class _OutboxRetry:
    """Short capped waits after the outbox failed under a session; a failed buffer goes up."""

    failures: int = 0

    async def wait(
        self,
        exc: GatewayError,
        session_s: float,
        stats: ForwarderStats,
        stop_event: asyncio.Event,
    ) -> None:
        """Log `outbox_failed` and wait before starting over; a `BufferUnavailable` goes up."""
        if isinstance(exc, BufferUnavailable):
            # The buffer waits out a stalled file itself: what reaches here will not pass.
            raise exc
        if session_s >= STABLE_CONNECTION_S:
            self.failures = 0
        delay_s = OUTBOX_RETRY.delay_s(self.failures)
        self.failures += 1
        stats.last_error = str(exc)
        _log.error("outbox_failed", error=str(exc), retry_in_s=round(delay_s, 3))
        await _wait_unless_set(stop_event, delay_s)


def _note_failure(
    stats: ForwarderStats,
    link: LinkSettings,
    event: str,
    exc: BrokerUnavailable,
    failures: int,
) -> None:
    """WARNING for the first failure of a reconnect cycle, DEBUG for the repeats."""
    stats.last_error = str(exc)
    stats.connected = False
    log = _log.warning if failures == 0 else _log.debug
    log(
        event,
        server=link.server,
        reason=str(exc),
        refused=isinstance(exc, BrokerRefused),
        failures=failures + 1,
    )


async def _wait_unless_set(stop_event: asyncio.Event, delay_s: float) -> None:
    """Sleep `delay_s`, or less when `stop_event` is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay_s):
            await stop_event.wait()
