"""`gateway wms-sink`: the reference WMS consumer, and the test double of every end-to-end test.

The contract it follows (what an integrator's own consumer must do):
1. Subscribe with an MQTT 5 shared subscription, `$share/{group}/{prefix}/+/+/movements`, QoS 1,
   so several consumers split the stream and each message goes to one of them.
2. Store each movement keyed by its `id` (idempotent: a copy with a known id changes nothing but a
   counter). Movements of one gateway carry `seq` 1, 2, 3, ...; the gateway publishes them in
   order, but a copy may come again after a reconnect, a broker cluster may hand one over late
   around a node kill, and with several consumers each sees part of a stream.
   Apply them in `seq` order per gateway: the store keeps the next seq it expects per gateway
   (table `streams`); that seq is applied to `movements`, a higher one is parked (table `parked`,
   committed like a stored one, so it is acked too) until the ones before it arrive. The first seq
   ever seen of a gateway is where its stream starts (a gateway older than the store); a gap that
   stays open `gap_timeout_s` is released, recorded in `gaps` and logged, never silent. Consumers
   of one group must share one store for this, as a WMS's consumers share its database.
3. Commit, THEN acknowledge on `{prefix}/{site}/{gateway}/ack` with `{"ids": [...]}` (or
   `{"upto_seq": N}` when everything up to N is stored). With `delivery = "wms"` the gateway keeps
   and re-sends a movement until this ack; an ack sent before the commit could lose it.
4. EPCIS mode: the id and seq are in the document's `dg:movementId` and `dg:seq`.

MQTT 3.1.1 (`protocol="3.1.1"`, for NATS, RabbitMQ before 3.13, Azure IoT Hub) has no shared
subscriptions: without a `group` the sink subscribes to the plain filter and is the only consumer;
a broker with its own sharing for 3.1.1 clients (mosquitto, EMQX, HiveMQ) still takes a `group`.
Commands then wait for their result on the gateway's `cmd-result/{name}`, as there is no response
topic. With `servers` (the nodes of a cluster) the sink moves to the next node when one fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import secrets
import sqlite3
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from gateway.errors import BrokerRefused, BrokerUnavailable, InputError
from gateway.logs import get_logger
from gateway.runtime.backoff import Backoff
from gateway.sync.mqtt import (
    Disconnected,
    LinkEvent,
    Message,
    MqttLink,
    PublishProperties,
)
from gateway.sync.servers import ServerRing
from gateway.sync.settings import LinkSettings, Protocol
from gateway.wms_store import (
    Gap,
    ParsedMovement,
    StoreOutcome,
    open_store,
    parse_movement,
    release_gaps,
    store_batch,
)

_log = get_logger("wms_sink")

ACK_BATCH = 500
# Movements the broker may send before the sink's PUBACKs (sent once a batch is committed).
RECEIVE_MAXIMUM = 4 * ACK_BATCH
ACK_EVERY_S = 0.05
STORE_RETRY_MIN_S = 0.1
STORE_RETRY_MAX_S = 2.0
# Longer than the gateway's ack_timeout_s (30 s by default): the gateway re-sends an unacked
# movement after that, so a gap from a message the broker lost fills before it is released.
GAP_TIMEOUT_S = 120.0
GAP_CHECK_EVERY_S = 1.0


@dataclass(slots=True)
class SinkStats:
    """What the sink has seen."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    parked: int = 0
    late: int = 0
    gaps_released: int = 0
    bad: int = 0
    acks_sent: int = 0
    reconnects: int = 0
    last_seq: dict[str, int] = field(default_factory=dict)


class WmsSink:
    """Consumes movements into SQLite by id, in seq order per gateway; acks after the commit."""

    def __init__(
        self,
        host: str,
        port: int,
        db: Path,
        *,
        prefix: str = "returns",
        group: str | None = "wms",
        client_id: str | None = None,
        ack: bool = True,
        username: str | None = None,
        password: str | None = None,
        protocol: Protocol = "5",
        servers: Sequence[tuple[str, int]] = (),
        ordered: bool = True,
        gap_timeout_s: float = GAP_TIMEOUT_S,
    ) -> None:
        self.host = host
        self.port = port
        self.protocol: Protocol = protocol
        self.servers = ServerRing(tuple(servers) or ((host, port),))
        self.db_path = db
        self.prefix = prefix
        self.group = group
        self.client_id = client_id or f"wms-sink-{uuid.uuid4().hex[:8]}"
        # A persistent session only helps a consumer that comes back under the same id; one
        # left behind by a random id stays in the shared group and takes its share, unacked.
        self.session_expiry_s = 3600 if client_id else 0
        self.ack = ack
        # Unordered is for consumers of one group with a store each: each sees part of every
        # stream, so its gaps never fill.
        self.ordered = ordered
        self.gap_timeout_s = gap_timeout_s
        self._gaps_checked = 0.0
        self.username = username
        self.password = password
        self.stats = SinkStats()
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._link: MqttLink | None = None
        self._task: asyncio.Task[None] | None = None
        self._db: sqlite3.Connection | None = None
        self._connected = asyncio.Event()
        self._replies: dict[bytes, asyncio.Future[bytes]] = {}
        self._results: dict[str, asyncio.Future[bytes]] = {}
        # Committed, but the link was gone when the ack was due: acked on the next link, or the
        # gateway would hold them until its ack_timeout_s and send them again.
        self._acks_owed: list[ParsedMovement] = []

    @property
    def topic_filter(self) -> str:
        """The shared subscription this sink joins (the plain filter without a group)."""
        movements = f"{self.prefix}/+/+/movements"
        return movements if self.group is None else f"$share/{self.group}/{movements}"

    async def __aenter__(self) -> Self:
        self._db = await asyncio.to_thread(open_store, self.db_path)
        self._task = asyncio.create_task(self._run(), name=f"wms-sink:{self.client_id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._link is not None:
            await self._link.disconnect()
        if self._db is not None:
            await asyncio.to_thread(self._db.close)
            self._db = None

    @property
    def link_up(self) -> bool:
        """Whether the MQTT link is up now (the sink notices a loss between batches)."""
        return self._link is not None and self._link.connected

    async def wait_connected(self, timeout_s: float = 10.0) -> None:
        """Wait until subscribed (raise TimeoutError otherwise)."""
        async with asyncio.timeout(timeout_s):
            await self._connected.wait()

    async def count(self) -> int:
        """Distinct movements stored."""
        return await self._query_int("SELECT COUNT(*) FROM movements")

    async def parked_count(self) -> int:
        """Movements parked until the seqs before them arrive."""
        return await self._query_int("SELECT COUNT(*) FROM parked")

    async def gaps(self) -> list[Gap]:
        """Every gap released so far, oldest first."""
        assert self._db is not None
        db = self._db
        rows = await asyncio.to_thread(
            lambda: db.execute(
                "SELECT site, gateway, from_seq, to_seq FROM gaps ORDER BY rowid"
            ).fetchall()
        )
        return [Gap(*row) for row in rows]

    async def ids(self) -> set[str]:
        """Every stored movement id."""
        assert self._db is not None
        db = self._db
        rows = await asyncio.to_thread(lambda: db.execute("SELECT id FROM movements").fetchall())
        return {row[0] for row in rows}

    async def rows(self) -> list[dict[str, Any]]:
        """Every stored movement as its JSON payload, in (gateway, seq) order."""
        assert self._db is not None
        db = self._db
        rows = await asyncio.to_thread(
            lambda: db.execute(
                "SELECT payload FROM movements ORDER BY site, gateway, seq"
            ).fetchall()
        )
        return [json.loads(row[0]) for row in rows]

    async def announce(
        self,
        site: str,
        gateway: str,
        command: dict[str, Any],
        *,
        signed: bytes | None = None,
        timeout_s: float = 10.0,
    ) -> dict[str, Any]:
        """Send `cmd/expected-returns` and wait for the result (MQTT 5 response topic)."""
        body = json.dumps(command).encode()
        if signed is not None:
            from gateway.domain.signing import sign_command  # noqa: PLC0415

            nonce = secrets.token_hex(12)
            body = sign_command("expected-returns", body, signed, time.time(), nonce)
        return await self.command(site, gateway, "expected-returns", body, timeout_s=timeout_s)

    async def command(
        self, site: str, gateway: str, name: str, body: bytes, *, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        """Publish a command and wait for its reply on this sink's response topic."""
        await self.wait_connected(timeout_s)
        assert self._link is not None
        if self.protocol == "3.1.1":
            return await self._command_311(site, gateway, name, body, timeout_s)
        correlation = uuid.uuid4().bytes
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._replies[correlation] = waiter
        topic = f"{self.prefix}/{site}/{gateway}/cmd/{name}"
        try:
            self._link.publish(
                topic,
                body,
                qos=1,
                properties=PublishProperties(
                    response_topic=self._reply_topic, correlation_data=correlation
                ),
            )
            async with asyncio.timeout(timeout_s):
                reply: dict[str, Any] = json.loads(await waiter)
        finally:
            self._replies.pop(correlation, None)
        return reply

    async def _command_311(
        self, site: str, gateway: str, name: str, body: bytes, timeout_s: float
    ) -> dict[str, Any]:
        """MQTT 3.1.1 has no response topic: the reply is the next one on `cmd-result/{name}`."""
        assert self._link is not None
        base = f"{self.prefix}/{site}/{gateway}"
        result_topic = f"{base}/cmd-result/{name}"
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._results[result_topic] = waiter
        try:
            await self._link.subscribe([result_topic], qos=1)
            self._link.publish(f"{base}/cmd/{name}", body, qos=1)
            async with asyncio.timeout(timeout_s):
                reply: dict[str, Any] = json.loads(await waiter)
        finally:
            self._results.pop(result_topic, None)
        return reply

    @property
    def _reply_topic(self) -> str:
        return f"wms/{self.client_id}/replies"

    # -- private -------------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(min_s=0.2, max_s=2.0)
        attempt = 0
        while True:
            host, port = self.servers.current
            link = MqttLink(
                LinkSettings(
                    host=host,
                    port=port,
                    client_id=self.client_id,
                    keepalive_s=10,
                    username=self.username,
                    password=self.password,
                    session_expiry_s=self.session_expiry_s,
                    protocol=self.protocol,
                    receive_maximum=RECEIVE_MAXIMUM,
                ),
                self._on_event,
            )
            self._link = link
            try:
                await link.connect()
                filters = [self.topic_filter]
                if self.protocol == "5":
                    filters.append(self._reply_topic)
                await link.subscribe(filters, qos=1)
                attempt = 0
                self.servers.connected()
                _log.info("wms_sink_connected", server=link.settings.server, filter=filters[0])
                if self._acks_owed:
                    _log.info("wms_sink_owed_acks_sent", movements=len(self._acks_owed))
                    self._send_acks(link, self._acks_owed)
                    self._acks_owed.clear()
                self._connected.set()
                await self._consume(link)
            except BrokerRefused as exc:
                _log.error("wms_sink_refused", reason=str(exc))
            except BrokerUnavailable as exc:
                _log.debug("wms_sink_link_down", reason=str(exc))
            self._connected.clear()
            link.abort("reconnecting")
            self.stats.reconnects += 1
            self.servers.failed()
            await asyncio.sleep(backoff.delay_s(self.servers.backoff_attempt(attempt)))
            attempt += 1

    def _on_event(self, event: LinkEvent) -> None:
        if isinstance(event, Message):
            self._queue.put_nowait(event)
        elif isinstance(event, Disconnected):
            # Wake the consumer so it notices the lost link and reconnects.
            self._queue.put_nowait(Message(topic="", payload=b""))

    async def _consume(self, link: MqttLink) -> None:
        while link.connected:
            try:
                first = await asyncio.wait_for(self._queue.get(), GAP_CHECK_EVERY_S)
            except TimeoutError:
                await self._release_gaps()
                continue
            batch = [first]
            while len(batch) < ACK_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            await self._handle(link, batch)
            for message in batch:  # committed (or not a movement): the broker may forget them
                if message.topic:
                    link.ack(message)
            if time.monotonic() - self._gaps_checked >= GAP_CHECK_EVERY_S:
                await self._release_gaps()
            if not link.connected:
                raise BrokerUnavailable("link lost")

    async def _handle(self, link: MqttLink, messages: list[Message]) -> None:
        parsed: list[ParsedMovement] = []
        for message in messages:
            if not message.topic or self._is_reply(message):
                continue
            self.stats.received += 1
            try:
                parsed.append(parse_movement(message.payload))
            except InputError as exc:
                self.stats.bad += 1
                _log.warning("wms_sink_bad_movement", topic=message.topic, reason=exc.reason)
        if not parsed:
            return
        outcome = await self._commit(parsed)
        self.stats.stored += outcome.stored
        self.stats.parked += outcome.parked
        self.stats.late += outcome.late
        self.stats.duplicates += outcome.duplicates
        if outcome.late:
            _log.warning("wms_sink_late_movement", movements=outcome.late)
        self._note_order(parsed)
        if self.ack:
            if link.connected:
                self._send_acks(link, parsed)
            else:
                self._acks_owed.extend(parsed)

    async def _commit(self, parsed: Sequence[ParsedMovement]) -> StoreOutcome:
        """Commit the batch, retrying while the store is locked or failing: never skip one.

        The batch is not acked until it is committed; a consumer that gave up here would keep its
        MQTT link, and its share of the group, while storing nothing.
        """
        assert self._db is not None
        delay_s = STORE_RETRY_MIN_S
        while True:
            try:
                return await asyncio.to_thread(store_batch, self._db, parsed, ordered=self.ordered)
            except sqlite3.OperationalError as exc:  # locked by another consumer, disk full, ...
                _log.warning("wms_sink_store_retry", error=str(exc), movements=len(parsed))
                await asyncio.sleep(delay_s)
                delay_s = min(STORE_RETRY_MAX_S, delay_s * 2)

    async def _release_gaps(self) -> None:
        """Give up on seqs missing longer than the gap timeout: apply what waited behind them."""
        self._gaps_checked = time.monotonic()
        if not self.ordered or self._db is None:
            return
        try:
            gaps, unparked = await asyncio.to_thread(
                release_gaps, self._db, time.time() - self.gap_timeout_s
            )
        except sqlite3.OperationalError as exc:  # locked: the next check tries again
            _log.warning("wms_sink_gap_check_retry", error=str(exc))
            return
        self.stats.stored += unparked
        self.stats.gaps_released += len(gaps)
        for gap in gaps:
            _log.warning(
                "wms_sink_gap_released",
                site=gap.site,
                gateway=gap.gateway,
                from_seq=gap.from_seq,
                to_seq=gap.to_seq,
                waited_s=self.gap_timeout_s,
            )

    def _is_reply(self, message: Message) -> bool:
        result = self._results.get(message.topic)
        if result is not None:
            if not result.done():
                result.set_result(message.payload)
            return True
        if "/cmd-result/" in message.topic:
            return True  # a late reply to a command that timed out: not a movement
        if message.topic != self._reply_topic:
            return False
        waiter = self._replies.get(message.correlation_data or b"")
        if waiter is not None and not waiter.done():
            waiter.set_result(message.payload)
        return True

    def _note_order(self, parsed: Sequence[ParsedMovement]) -> None:
        for item in parsed:
            key = f"{item.site}/{item.gateway}"
            last = self.stats.last_seq.get(key, 0)
            if item.seq < last:
                self.stats.out_of_order += 1
            self.stats.last_seq[key] = max(last, item.seq)

    def _send_acks(self, link: MqttLink, parsed: Sequence[ParsedMovement]) -> None:
        """Ack after the commit, one message per gateway."""
        by_gateway: dict[tuple[str, str], list[str]] = defaultdict(list)
        for item in parsed:
            by_gateway[(item.site, item.gateway)].append(item.id)
        for (site, gateway), ids in by_gateway.items():
            topic = f"{self.prefix}/{site}/{gateway}/ack"
            link.publish(topic, json.dumps({"ids": ids}).encode())
            self.stats.acks_sent += 1

    async def _query_int(self, sql: str) -> int:
        assert self._db is not None
        db = self._db
        row = await asyncio.to_thread(lambda: db.execute(sql).fetchone())
        return int(row[0])


def load_announcements(path: Path) -> list[dict[str, Any]]:
    """Expected returns from a CSV with a header row: rma, customer, epc, gtin, serial, qty."""
    rmas: dict[str, dict[str, Any]] = {}
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise InputError("announcements", f"cannot read {path}: {exc.strerror}") from exc
    with handle:
        for number, row in enumerate(csv.DictReader(handle), start=2):
            rma = (row.get("rma") or "").strip()
            if not rma:
                raise InputError("announcements", f"line {number}: 'rma' is empty")
            entry = rmas.setdefault(rma, {"rma": rma, "items": []})
            if row.get("customer"):
                entry["customer"] = row["customer"].strip()
            if row.get("expires_at"):
                entry["expires_at"] = row["expires_at"].strip()
            item: dict[str, Any] = {}
            for key in ("epc", "gtin", "serial"):
                if row.get(key):
                    item[key] = row[key].strip()
            qty = (row.get("qty") or "1").strip()
            if not qty.isdigit():
                raise InputError("announcements", f"line {number}: 'qty' must be a whole number")
            item["qty"] = int(qty)
            entry["items"].append(item)
    return list(rmas.values())
