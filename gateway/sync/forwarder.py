"""The forwarder: publishes the outbox in `seq` order at QoS 1 and marks rows delivered.

The outbox is the truth. Every (re)connect starts from a fresh link with nothing in flight and goes
back to the oldest undelivered row (go-back-N), so first copies reach the broker in `seq` order and
duplicates are bounded by the window. `delivery = "broker"`: a positive PUBACK delivers a row.
`delivery = "wms"`: only the WMS's acks do; rows it has not acked within `ack_timeout_s` are sent
again with the same payload, and at most `MAX_UNACKED` rows wait for an ack at any time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from gateway.config import MqttSection
from gateway.errors import BrokerRefused, BrokerUnavailable, GatewayError, InputError
from gateway.logs import get_logger
from gateway.runtime.backoff import Backoff
from gateway.sync.acks import AckIds, parse_ack
from gateway.sync.mqtt import (
    Disconnected,
    LinkEvent,
    LinkSettings,
    Message,
    MqttLink,
    Published,
    PublishProperties,
    Will,
)
from gateway.sync.topics import Topics

_log = get_logger("forwarder")

IncomingMessage = Message
"""A message on `cmd/+` or `scans/+` (topic, payload, MQTT 5 response topic, correlation data)."""

FETCH_ROWS = 1000
MARK_BATCH = 500
MARK_DELAY_S = 0.005
MAX_UNACKED = 4000
MAX_REPLAY_QUEUE = 200_000
MAX_OFFLINE_EVENTS = 100
INCOMING_QUEUE = 1000
STABLE_CONNECTION_S = 5.0
# An attempt number past any cap: Backoff.delay_s gives the longest delay, jittered.
LONGEST = 64
STOP_LINK_S = 1.2
STOP_FLUSH_S = 0.7


class OutboxRowLike(Protocol):
    """One outbox row as the forwarder needs it."""

    @property
    def seq(self) -> int: ...

    @property
    def id(self) -> str: ...

    @property
    def payload(self) -> bytes: ...


class OutboxSource(Protocol):
    """What the forwarder needs of the outbox (the buffer's Buffer satisfies it)."""

    async def pending(self, after_seq: int, limit: int) -> Sequence[OutboxRowLike]:
        """Undelivered rows with `seq > after_seq`, ascending, at most `limit`."""
        ...

    async def mark_delivered(self, seqs: Sequence[int]) -> int:
        """Mark these rows delivered; return how many changed."""
        ...

    async def mark_delivered_ids(self, ids: Sequence[str]) -> int:
        """Mark the rows with these movement ids delivered; return how many changed."""
        ...

    async def mark_delivered_upto(self, seq: int) -> int:
        """Mark every row with `seq <= seq` delivered; return how many changed."""
        ...


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
    last_error: str | None = None
    window: int = 0
    inflight: int = 0
    inflight_peak: int = 0
    unacked: int = 0


@dataclass(slots=True)
class _Unacked:
    row: OutboxRowLike
    sent_at_s: float


@dataclass(frozen=True, slots=True)
class _Control:
    topic: str
    payload: bytes
    retain: bool
    properties: PublishProperties | None = None


class Forwarder:
    """Publishes the outbox over one supervised MQTT link; `run()` until cancelled or stopped."""

    def __init__(
        self,
        outbox: OutboxSource,
        mqtt: MqttSection,
        topics: Topics,
        *,
        client_id: str,
        health: Callable[[], dict[str, object]],
        on_message: Callable[[IncomingMessage], Awaitable[None]] | None = None,
        on_published: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._outbox = outbox
        self._published_hook = on_published
        self._config = mqtt
        self._topics = topics
        self._client_id = client_id
        self._health = health
        self._on_message = on_message
        self._clock = clock
        self._wall_clock = wall_clock
        self._wms = mqtt.delivery == "wms"
        self._backoff = Backoff(min_s=mqtt.reconnect_min_s, max_s=mqtt.reconnect_max_s)
        self._stats = ForwarderStats(window=mqtt.max_inflight)
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._stopping = False
        self._incoming: asyncio.Queue[IncomingMessage] = asyncio.Queue(INCOMING_QUEUE)
        self._link: MqttLink | None = None
        self._generation = 0
        self._lost_reason: str | None = None
        self._window = mqtt.max_inflight
        # mid -> (row, is_resend) and mid -> topic, for what the broker has not answered yet.
        self._inflight_rows: dict[int, tuple[OutboxRowLike, bool]] = {}
        self._inflight_other: dict[int, str] = {}
        self._rows: deque[OutboxRowLike] = deque()
        self._resend: deque[OutboxRowLike] = deque()
        self._replay: deque[OutboxRowLike] = deque()
        self._control: deque[_Control] = deque()
        self._retained: dict[str, bytes] = {}
        self._offline_events: deque[bytes] = deque(maxlen=MAX_OFFLINE_EVENTS)
        self._fetched_upto = 0
        self._caught_up = False
        self._notify_generation = 0
        self._fill_scheduled = False
        self._last_progress_s = 0.0
        self._last_status_s = 0.0
        # Delivery bookkeeping, waiting to be written to the outbox in batches.
        self._marks: list[int] = []
        self._ack_ids: list[str] = []
        self._ack_upto: int | None = None
        self._first_mark_s: float | None = None
        # wms mode: rows PUBACKed but not acked by the WMS, oldest send first.
        self._unacked: OrderedDict[int, _Unacked] = OrderedDict()
        self._unacked_ids: dict[str, int] = {}
        self._acked_upto = 0
        self._acked_in_flight: set[int] = set()
        # Negative PUBACK: pause new rows, then go back to the oldest undelivered row.
        self._refusals = 0
        self._paused_until_s = 0.0
        self._go_back = False
        # One row at a time after a link died with rows unanswered, or after a refusal.
        self._probe = False
        self._row_answered = False

    # -- public ---------------------------------------------------------------------------------

    @property
    def stats(self) -> ForwarderStats:
        """A live view of the counters (the same object, refreshed)."""
        stats = self._stats
        stats.inflight = len(self._inflight_rows) + len(self._inflight_other)
        stats.unacked = len(self._unacked)
        stats.window = self._window
        return stats

    def refresh_status(self) -> None:
        """Publish the retained status now (a reader changed state), not at the next period."""
        if self._connected():
            self._publish_birth()

    def notify(self) -> None:
        """New rows were committed to the outbox: wake the publisher."""
        self._notify_generation += 1
        self._caught_up = False
        self._wake.set()

    async def run(self) -> None:
        """Connect, publish and reconnect with backoff until cancelled (or until `stop()`)."""
        async with asyncio.TaskGroup() as group:
            dispatcher = group.create_task(self._dispatch_loop(), name="forwarder-dispatch")
            try:
                await self._connect_loop()
            finally:
                dispatcher.cancel()

    async def stop(self) -> None:
        """Publish the retained `offline` status, disconnect cleanly, flush marks; within 2 s."""
        self._stopping = True
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
                await self._flush_marks()

    async def publish_retained(self, topic: str, payload: bytes) -> None:
        """Publish retained at QoS 1 now, or keep the latest per topic for the next connect."""
        self._retained[topic] = payload
        if self._connected():
            self._queue_control(_Control(topic, payload, retain=True))

    async def reply(self, msg: IncomingMessage, name: str, payload: bytes) -> None:
        """Answer a command on `cmd-result/{name}`, and on its MQTT 5 response topic if given."""
        if not self._connected():
            _log.info("command_reply_dropped_offline", command=name)
            return
        self._queue_control(_Control(self._topics.cmd_result(name), payload, retain=False))
        if msg.response_topic:
            props = PublishProperties(correlation_data=msg.correlation_data)
            self._queue_control(_Control(msg.response_topic, payload, False, props))

    async def publish_event(self, payload: bytes) -> None:
        """Publish a gateway event at QoS 1, best effort (the last few are kept while offline)."""
        if self._connected():
            self._queue_control(_Control(self._topics.events, payload, retain=False))
        else:
            self._offline_events.append(payload)

    async def republish(self, rows: Sequence[OutboxRowLike]) -> int:
        """Send these rows again as they are (a WMS asked for a replay); return how many queued."""
        room = max(0, MAX_REPLAY_QUEUE - len(self._replay))
        taken = list(rows[:room])
        self._replay.extend(taken)
        self._schedule_fill()
        return len(taken)

    # -- connection cycle -----------------------------------------------------------------------

    async def _connect_loop(self) -> None:
        attempt = 0
        failures = 0
        ever_connected = False
        while not self._stopping:
            self._generation += 1
            link = MqttLink(self._link_settings(), self._handler(self._generation))
            try:
                await link.connect()
            except BrokerUnavailable as exc:
                self._note_failure("broker_connect_failed", exc, failures)
                failures += 1
                refused = isinstance(exc, BrokerRefused)
                # Refused (credentials, TLS trust): the longest backoff, jittered so a fleet
                # refused at once by a broker-side change does not come back in lockstep.
                delay_s = self._backoff.delay_s(LONGEST if refused else attempt)
                attempt += 1
                await self._sleep(delay_s)
                continue
            if self._is_stopping():
                await link.disconnect(timeout_s=0.5)
                return
            if ever_connected:
                self._stats.reconnects += 1
            ever_connected = True
            connected_at_s = self._clock()
            _log.info(
                "broker_connected",
                host=self._config.host,
                port=self._config.port,
                receive_maximum=link.receive_maximum,
                after_failures=failures,
            )
            failures = 0
            try:
                await self._session(link)
            except BrokerUnavailable as exc:
                if self._is_stopping():
                    return
                self._note_failure("broker_link_lost", exc, failures)
                failures += 1
                if self._clock() - connected_at_s >= STABLE_CONNECTION_S:
                    attempt = 0
                delay_s = self._backoff.delay_s(attempt)
                attempt += 1
                await self._sleep(delay_s)
            except GatewayError as exc:
                # The outbox failed (disk full, locked): nothing was lost; start over later.
                self._stats.last_error = str(exc)
                _log.error("outbox_failed", error=str(exc), retry_in_s=self._backoff.max_s)
                await self._sleep(self._backoff.max_s)

    async def _session(self, link: MqttLink) -> None:
        """Run one connection until it is lost (raises BrokerUnavailable) or stopped."""
        self._lost_reason = None
        await self._flush_marks()
        self._start_session(link)
        try:
            topics = self._topics
            filters = [topics.ack, topics.cmd_filter, topics.scans_filter]
            filters.append(topics.site_expected_returns)
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
                self._end_session()

    def _start_session(self, link: MqttLink) -> None:
        self._link = link
        # After a link that dropped with rows in flight and no answer for any of them, send one
        # row first: mosquitto 2.0 closes the link right after refusing a publish (ACL) and its
        # 0x87 PUBACK is lost when more packets were queued behind the refused one.
        self._window = 1 if self._probe else self._full_window(link)
        self._row_answered = False
        self._stats.window = self._window
        self._stats.connected = True
        self._stats.last_error = None
        # Go-back-N: nothing is in flight on a fresh link; start again at the oldest undelivered.
        self._inflight_rows.clear()
        self._inflight_other.clear()
        self._acked_in_flight.clear()
        self._rows.clear()
        self._control.clear()
        self._fetched_upto = 0
        self._caught_up = False
        # A refusal's backoff outlives the link (mosquitto 2.0 drops the link after a 0x87 PUBACK).
        self._go_back = self._paused_until_s > self._clock()
        self._last_progress_s = self._clock()
        for topic, payload in self._retained.items():
            self._control.append(_Control(topic, payload, retain=True))
        while self._offline_events:
            event = self._offline_events.popleft()
            self._control.append(_Control(self._topics.events, event, retain=False))

    def _full_window(self, link: MqttLink) -> int:
        return max(1, min(self._config.max_inflight, link.receive_maximum))

    def _end_session(self) -> None:
        self._probe = self._probe or (bool(self._inflight_rows) and not self._row_answered)
        self._link = None
        self._stats.connected = False
        self._inflight_rows.clear()
        self._inflight_other.clear()

    async def _pump(self, link: MqttLink) -> None:
        """The per-connection loop: batch marks, prefetch rows, timers; the hot path is _fill."""
        while True:
            self._wake.clear()
            if self._lost_reason is not None or not link.connected:
                raise BrokerUnavailable(self._lost_reason or "link lost")
            if self._stopping:
                return
            now_s = self._clock()
            if self._stalled(now_s):
                _log.warning("broker_link_stalled", stall_timeout_s=self._config.stall_timeout_s)
                link.abort("stalled: no PUBACK")
                raise BrokerUnavailable("stalled: no PUBACK within stall_timeout_s")
            await self._write_marks_and_go_back(now_s)
            if self._wms:
                self._expire_unacked(now_s)
            if now_s - self._last_status_s >= self._config.status_interval_s:
                self._publish_birth()
            if self._needs_rows():
                await self._refill()
            self._fill()
            if not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._next_deadline_s(self._clock())):
                        await self._wake.wait()

    async def _write_marks_and_go_back(self, now_s: float) -> None:
        if self._marks_due(now_s):
            await self._flush_marks()
        if self._go_back and not self._inflight_rows and now_s >= self._paused_until_s:
            # After a refused row: start again at the oldest undelivered row, after a backoff.
            await self._flush_marks()
            self._rows.clear()
            self._fetched_upto = 0
            self._caught_up = False
            self._go_back = False

    # -- the hot path ---------------------------------------------------------------------------

    def _fill(self) -> None:
        """Publish from the queues until the window is full (control, resends, replay, rows)."""
        self._fill_scheduled = False
        link = self._link
        if link is None or not link.connected:
            return
        idle = not self._inflight_rows and not self._inflight_other
        if idle:
            self._last_progress_s = self._clock()
        try:
            self._send_control(link)
            if not self._stopping and not self._go_back:
                self._send_resends(link)
                self._send_replays(link)
                self._send_rows(link)
        except BrokerUnavailable:
            return  # the link is going; Disconnected follows and the session ends
        link.flush()
        stats = self._stats
        inflight = len(self._inflight_rows) + len(self._inflight_other)
        stats.inflight_peak = max(stats.inflight_peak, inflight)
        if (idle and inflight) or self._needs_rows():
            self._wake.set()  # the pump prefetches, and re-arms its stall deadline

    def _send_rows(self, link: MqttLink) -> None:
        rows = self._rows
        inflight_rows = self._inflight_rows
        room = self._window - len(inflight_rows) - len(self._inflight_other)
        if self._wms:
            room = min(room, MAX_UNACKED - len(self._unacked) - len(inflight_rows))
        topic = self._topics.movements
        publish = link.publish
        acked_upto = self._acked_upto if self._wms else -1
        sent = 0
        while sent < room and rows:
            row = rows.popleft()
            if row.seq <= acked_upto:
                continue
            inflight_rows[publish(topic, row.payload)] = (row, False)
            sent += 1
        self._stats.published += sent

    def _send_resends(self, link: MqttLink) -> None:
        topic = self._topics.movements
        while self._resend and self._room():
            row = self._resend.popleft()
            if row.seq in self._unacked:
                self._inflight_rows[link.publish(topic, row.payload)] = (row, True)
                self._stats.published += 1
                self._stats.resent += 1

    def _send_replays(self, link: MqttLink) -> None:
        topic = self._topics.movements
        while self._replay and self._room():
            row = self._replay.popleft()
            self._inflight_other[link.publish(topic, row.payload)] = "replay"
            self._stats.replayed += 1

    def _send_control(self, link: MqttLink) -> None:
        while self._control and self._room():
            item = self._control.popleft()
            mid = link.publish(item.topic, item.payload, 1, item.retain, item.properties)
            self._inflight_other[mid] = item.topic

    def _room(self) -> bool:
        return len(self._inflight_rows) + len(self._inflight_other) < self._window

    def _on_published(self, event: Published) -> None:
        self._last_progress_s = now_s = self._clock()
        entry = self._inflight_rows.pop(event.mid, None)
        if entry is not None:
            self._row_published(entry[0], is_resend=entry[1], event=event, now_s=now_s)
        else:
            topic = self._inflight_other.pop(event.mid, None)
            if topic is not None and not event.ok:
                self._stats.refused += 1
                _log.warning("publish_refused", topic=topic, reason_code=hex(event.reason_code))
        if self._go_back and not self._inflight_rows:
            self._wake.set()  # the window drained: the pump may go back now
        self._progress.set()
        self._schedule_fill()

    def _row_published(
        self, row: OutboxRowLike, *, is_resend: bool, event: Published, now_s: float
    ) -> None:
        self._row_answered = True
        if not event.ok:
            self._row_refused(row, event.reason_code, now_s)
            return
        if self._probe and self._link is not None:
            self._probe = False  # the broker takes rows again: back to the full window
            self._window = self._full_window(self._link)
        self._refusals = 0
        if not is_resend and self._published_hook is not None:
            self._published_hook(row.seq)  # first broker acceptance: the read-to-publish latency
        if not self._wms:
            marks = self._marks
            if not marks:
                self._first_mark_s = now_s
                self._wake.set()  # the pump arms its few-ms batching deadline
            marks.append(row.seq)
            if len(marks) >= MARK_BATCH:
                self._wake.set()
        elif is_resend:
            return
        elif row.seq in self._acked_in_flight:
            self._acked_in_flight.discard(row.seq)
        else:
            if not self._unacked:
                self._wake.set()  # the pump arms the ack timeout
            self._unacked[row.seq] = _Unacked(row, now_s)
            self._unacked_ids[row.id] = row.seq

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
        if message.topic == self._topics.ack:
            self._on_ack(message.payload)
            return
        if self._on_message is None:
            return
        try:
            self._incoming.put_nowait(message)
        except asyncio.QueueFull:
            self._stats.messages_dropped += 1
            _log.warning("incoming_message_dropped", topic=message.topic[:200], reason="queue full")

    def _on_ack(self, payload: bytes) -> None:
        try:
            ack = parse_ack(payload)
        except InputError as exc:
            self._stats.bad_acks += 1
            _log.warning("ack_rejected", reason=exc.reason, payload_bytes=len(payload))
            return
        self._stats.acks_received += 1
        if isinstance(ack, AckIds):
            self._ack_by_ids(ack.ids)
        else:
            self._ack_upto_seq(ack.seq)
        if self._first_mark_s is None:
            self._first_mark_s = self._clock()
        self._wake.set()
        self._schedule_fill()

    def _ack_by_ids(self, ids: tuple[str, ...]) -> None:
        self._ack_ids.extend(ids)
        for acked_id in ids:
            seq = self._unacked_ids.pop(acked_id, None)
            if seq is not None:
                self._unacked.pop(seq, None)
        wanted = set(ids)
        for row, is_resend in self._inflight_rows.values():
            if not is_resend and row.id in wanted:
                self._acked_in_flight.add(row.seq)

    def _ack_upto_seq(self, upto: int) -> None:
        self._ack_upto = upto if self._ack_upto is None else max(self._ack_upto, upto)
        self._acked_upto = max(self._acked_upto, upto)
        for seq in [s for s in self._unacked if s <= upto]:
            entry = self._unacked.pop(seq)
            self._unacked_ids.pop(entry.row.id, None)
        for row, is_resend in self._inflight_rows.values():
            if not is_resend and row.seq <= upto:
                self._acked_in_flight.add(row.seq)

    async def _dispatch_loop(self) -> None:
        while True:
            message = await self._incoming.get()
            if self._on_message is None:
                continue
            try:
                await self._on_message(message)
            except GatewayError as exc:
                _log.warning("incoming_message_failed", topic=message.topic[:200], error=str(exc))

    # -- helpers --------------------------------------------------------------------------------

    def _row_refused(self, row: OutboxRowLike, reason_code: int, now_s: float) -> None:
        self._stats.refused += 1
        self._probe = True
        if self._go_back:
            _log.debug("publish_refused", seq=row.seq, id=row.id, reason_code=hex(reason_code))
        else:
            _log.error(
                "publish_refused",
                seq=row.seq,
                id=row.id,
                reason_code=hex(reason_code),
                advice="the broker refused a movement (ACL?); it stays in the outbox",
            )
            # An ACL will not change by itself and mosquitto drops the link after refusing:
            # like a refused login, try the row again only after the longest backoff.
            self._paused_until_s = now_s + self._backoff.delay_s(LONGEST)
            self._refusals += 1
            self._go_back = True
        self._wake.set()

    def _room_for_unacked(self) -> bool:
        if not self._wms:
            return True
        return len(self._unacked) + len(self._inflight_rows) < MAX_UNACKED

    def _needs_rows(self) -> bool:
        return (
            not self._caught_up
            and not self._go_back
            and not self._stopping
            and len(self._rows) < FETCH_ROWS // 2
        )

    async def _refill(self) -> None:
        generation = self._notify_generation
        rows = await self._outbox.pending(self._fetched_upto, FETCH_ROWS)
        if rows:
            self._fetched_upto = rows[-1].seq
        if self._wms:
            skip_upto = self._acked_upto
            unacked = self._unacked
            self._rows.extend(r for r in rows if r.seq > skip_upto and r.seq not in unacked)
        else:
            self._rows.extend(rows)
        if len(rows) < FETCH_ROWS and generation == self._notify_generation:
            self._caught_up = True

    def _marks_due(self, now_s: float) -> bool:
        if not self._marks and not self._ack_ids and self._ack_upto is None:
            return False
        if len(self._marks) >= MARK_BATCH or self._stopping:
            return True
        return self._first_mark_s is None or now_s - self._first_mark_s >= MARK_DELAY_S

    async def _flush_marks(self) -> None:
        """Write collected deliveries to the outbox (seqs from PUBACKs, ids and seqs from acks)."""
        while self._marks or self._ack_ids or self._ack_upto is not None:
            seqs, self._marks = self._marks, []
            ids, self._ack_ids = self._ack_ids, []
            upto, self._ack_upto = self._ack_upto, None
            self._first_mark_s = None
            delivered = 0
            try:
                if seqs:
                    delivered += await self._outbox.mark_delivered(seqs)
                    seqs = []
                if ids:
                    delivered += await self._outbox.mark_delivered_ids(ids)
                    ids = []
                if upto is not None:
                    delivered += await self._outbox.mark_delivered_upto(upto)
                    upto = None
            finally:
                # Interrupted (cancelled, outbox error): keep what is unwritten for the next flush;
                # marking twice is harmless.
                self._marks[:0] = seqs
                self._ack_ids[:0] = ids
                if upto is not None:
                    self._ack_upto = max(upto, self._ack_upto or 0)
                self._stats.delivered += delivered

    def _expire_unacked(self, now_s: float) -> None:
        timeout_s = self._config.ack_timeout_s
        unacked = self._unacked
        while unacked:
            seq, entry = next(iter(unacked.items()))
            if now_s - entry.sent_at_s < timeout_s:
                break
            entry.sent_at_s = now_s
            unacked.move_to_end(seq)
            self._resend.append(entry.row)

    def _stalled(self, now_s: float) -> bool:
        if not self._inflight_rows and not self._inflight_other:
            return False
        return now_s - self._last_progress_s >= self._config.stall_timeout_s

    def _next_deadline_s(self, now_s: float) -> float:
        deadlines = [self._last_status_s + self._config.status_interval_s]
        if self._marks or self._ack_ids or self._ack_upto is not None:
            deadlines.append((self._first_mark_s or now_s) + MARK_DELAY_S)
        if self._inflight_rows or self._inflight_other:
            deadlines.append(self._last_progress_s + self._config.stall_timeout_s)
        if self._unacked:
            oldest = next(iter(self._unacked.values()))
            deadlines.append(oldest.sent_at_s + self._config.ack_timeout_s)
        if self._go_back and not self._inflight_rows:
            deadlines.append(self._paused_until_s)
        return max(0.0, min(deadlines) - now_s)

    def _is_stopping(self) -> bool:
        return self._stopping

    def _connected(self) -> bool:
        link = self._link
        return link is not None and link.connected and not self._stopping

    def _queue_control(self, item: _Control) -> None:
        self._control.append(item)
        self._schedule_fill()

    def _publish_birth(self) -> None:
        self._last_status_s = self._clock()
        self._control.append(_Control(self._topics.status, self._status_payload(), retain=True))
        self._schedule_fill()

    async def _publish_offline(self, link: MqttLink) -> None:
        while len(self._inflight_rows) + len(self._inflight_other) >= self._window:
            self._progress.clear()
            await self._progress.wait()
            if not link.connected:
                return
        mid = link.publish(self._topics.status, self._offline_payload(), 1, retain=True)
        self._inflight_other[mid] = self._topics.status
        while mid in self._inflight_other and link.connected:
            self._progress.clear()
            await self._progress.wait()

    def _status_payload(self) -> bytes:
        body: dict[str, object] = {
            "state": "online",
            "gateway": self._topics.gateway,
            "site": self._topics.site,
            "at": _rfc3339(self._wall_clock()),
        }
        for key, value in self._health().items():
            body.setdefault(key, value)
        return json.dumps(body, separators=(",", ":"), default=str).encode()

    def _offline_payload(self) -> bytes:
        body = {"state": "offline", "gateway": self._topics.gateway, "site": self._topics.site}
        return json.dumps(body, separators=(",", ":")).encode()

    def _link_settings(self) -> LinkSettings:
        will = Will(self._topics.status, self._offline_payload(), qos=1, retain=True)
        return LinkSettings.from_config(self._config, self._client_id, will)

    def _note_failure(self, event: str, exc: BrokerUnavailable, failures: int) -> None:
        """WARNING for the first failure of a reconnect cycle, DEBUG for the repeats."""
        self._stats.last_error = str(exc)
        self._stats.connected = False
        log = _log.warning if failures == 0 else _log.debug
        log(
            event,
            host=self._config.host,
            port=self._config.port,
            reason=str(exc),
            refused=isinstance(exc, BrokerRefused),
            failures=failures + 1,
        )

    async def _sleep(self, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._stop_event.wait()


def _rfc3339(at_s: float) -> str:
    return (
        datetime.fromtimestamp(at_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
