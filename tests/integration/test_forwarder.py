"""The forwarder against a real mosquitto, with a small real SQLite outbox."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from structlog.testing import capture_logs

from gateway.config import MqttSection
from gateway.runtime.inbound import Delivery, InboundLane
from gateway.sync.forwarder import Forwarder, IncomingMessage
from gateway.sync.mqtt import LinkEvent, MqttLink, Published
from gateway.sync.settings import LinkSettings
from gateway.sync.topics import Topics
from tests.support.broker import Mosquitto
from tests.support.wms import Collector, publish, retained

TOPICS = Topics(prefix="returns", site="milan-returns", gateway="dock-3")
BASE = TOPICS.base


@dataclass(frozen=True, slots=True)
class Row:
    """An outbox row as the forwarder sees it."""

    seq: int
    id: str
    payload: bytes


class SqliteOutbox:
    """A small real outbox in a SQLite file (the shape of the buffer's, not its code)."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
            " payload BLOB NOT NULL, delivered INTEGER NOT NULL DEFAULT 0)"
        )
        self.calls: dict[str, int] = {"pending": 0, "mark_delivered": 0}

    def add(self, count: int) -> list[Row]:
        """Append `count` movement rows; return them."""
        start = self.db.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()[0]
        rows = []
        for seq in range(start + 1, start + count + 1):
            movement_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"movement-{seq}"))
            body = {"schema": "dock-gateway/movement/1", "id": movement_id, "seq": seq}
            rows.append(Row(seq, movement_id, json.dumps(body).encode()))
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT INTO outbox (seq, id, payload) VALUES (?, ?, ?)",
            [(r.seq, r.id, r.payload) for r in rows],
        )
        self.db.execute("COMMIT")
        return rows

    def undelivered(self) -> int:
        """Rows not delivered yet."""
        count: int = self.db.execute("SELECT count(*) FROM outbox WHERE delivered = 0").fetchone()[
            0
        ]
        return count

    def undelivered_seqs(self) -> list[int]:
        """The seqs not delivered yet."""
        return [r[0] for r in self.db.execute("SELECT seq FROM outbox WHERE delivered = 0")]

    async def pending(self, after_seq: int, limit: int) -> Sequence[Row]:
        self.calls["pending"] += 1
        return [
            Row(*r)
            for r in self.db.execute(
                "SELECT seq, id, payload FROM outbox WHERE seq > ? AND delivered = 0"
                " ORDER BY seq LIMIT ?",
                (after_seq, limit),
            )
        ]

    async def mark_delivered(self, seqs: Sequence[int]) -> int:
        self.calls["mark_delivered"] += 1
        cursor = self.db.executemany(
            "UPDATE outbox SET delivered = 1 WHERE seq = ? AND delivered = 0",
            [(s,) for s in seqs],
        )
        return cursor.rowcount

    async def mark_delivered_ids(self, ids: Sequence[str]) -> int:
        cursor = self.db.executemany(
            "UPDATE outbox SET delivered = 1 WHERE id = ? AND delivered = 0", [(i,) for i in ids]
        )
        return cursor.rowcount

    async def mark_delivered_upto(self, seq: int) -> int:
        cursor = self.db.execute(
            "UPDATE outbox SET delivered = 1 WHERE seq <= ? AND delivered = 0", (seq,)
        )
        return cursor.rowcount


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[SqliteOutbox]:
    box = SqliteOutbox(tmp_path / "outbox.sqlite3")
    yield box
    box.db.close()


def _section(port: int, **overrides: Any) -> MqttSection:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "keepalive_s": 5,
        **overrides,
    }
    return MqttSection(**values)


def _forwarder(
    outbox: SqliteOutbox,
    section: MqttSection,
    on_message: Callable[[IncomingMessage], Awaitable[None]] | None = None,
    scans: InboundLane[Delivery] | None = None,
) -> Forwarder:
    return Forwarder(
        outbox,
        section.forwarder_settings(f"test-gw-{uuid.uuid4().hex[:6]}"),
        TOPICS,
        health=lambda: {"buffer": {"pending": outbox.undelivered()}},
        on_message=on_message,
        scans=scans,
    )


async def _until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Wait (bounded) until predicate() holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _running(forwarder: Forwarder) -> Any:
    task = asyncio.create_task(forwarder.run(), name="forwarder")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await forwarder.stop()


def _first_seen_seqs(collector: Collector) -> list[int]:
    seen: dict[str, int] = {}
    for message in collector.received():
        body = message.json()
        seen.setdefault(body["id"], body["seq"])
    return list(seen.values())


def _status(port: int) -> str | None:
    payload = retained(port, f"{BASE}/status", timeout_s=2.0)
    return None if payload is None else json.loads(payload)["state"]


async def test_in_order_delivery_of_5000_rows(broker: Mosquitto, outbox: SqliteOutbox) -> None:
    rows = outbox.add(5000)
    forwarder = _forwarder(outbox, _section(broker.port, max_inflight=50))

    with Collector(broker.port, [f"{BASE}/movements"]) as collector:
        async with _running(forwarder):
            await _until(lambda: outbox.undelivered() == 0, 60, "every row delivered")
            assert forwarder.stats.connected
            assert forwarder.stats.delivered == 5000
            assert forwarder.stats.inflight_peak <= 50
        collector.wait_for(lambda c: len(c.received()) >= 5000, 30, "5000 messages")
        assert collector.distinct_ids() == {r.id for r in rows}
        assert _first_seen_seqs(collector) == list(range(1, 5001)), "first copies in seq order"
    # Marks are written in batches, not one call per row.
    assert outbox.calls["mark_delivered"] < 1000
    assert forwarder.stats.published == 5000
    assert _status(broker.port) == "offline", "a clean stop says offline"


async def test_rows_committed_later_are_published_after_notify(
    broker: Mosquitto, outbox: SqliteOutbox
) -> None:
    outbox.add(10)
    forwarder = _forwarder(outbox, _section(broker.port))

    async with _running(forwarder):
        await _until(lambda: outbox.undelivered() == 0, 20, "first rows")
        calls = outbox.calls["pending"]
        await asyncio.sleep(0.3)
        assert outbox.calls["pending"] == calls, "caught up: no polling of the outbox"
        outbox.add(25)
        forwarder.notify()
        await _until(lambda: outbox.undelivered() == 0, 20, "rows after notify")
    assert forwarder.stats.delivered == 35


# MQTT 3.1.1 too: the same guarantees without reason codes, Receive Maximum or session expiry.
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_broker_restart_mid_stream_loses_nothing(
    broker: Mosquitto, outbox: SqliteOutbox, protocol: str
) -> None:
    rows = outbox.add(6000)
    forwarder = _forwarder(outbox, _section(broker.port, max_inflight=20, protocol=protocol))

    with Collector(broker.port, [f"{BASE}/movements"]) as collector:
        async with _running(forwarder):
            await _until(lambda: outbox.undelivered() < 5000, 30, "a first part delivered")
            await asyncio.to_thread(broker.stop)
            await _until(lambda: not forwarder.stats.connected, 10, "link lost")
            left = outbox.undelivered()
            assert left > 0
            await asyncio.sleep(0.5)
            await asyncio.to_thread(broker.start)
            await _until(lambda: outbox.undelivered() == 0, 60, "the rest delivered")
            assert forwarder.stats.reconnects >= 1
        collector.wait_for(
            lambda c: c.distinct_ids() == {r.id for r in rows}, 60, "every id after restart"
        )
        seqs = _first_seen_seqs(collector)
        assert seqs == sorted(seqs), "first copies in seq order across the restart"
        duplicates = len(collector.received()) - len(rows)
        assert duplicates <= 2 * 20, "duplicates bounded by the window"


async def test_last_will_then_birth_after_reconnect(
    broker: Mosquitto, outbox: SqliteOutbox
) -> None:
    section = _section(broker.port)

    first = _forwarder(outbox, section)
    task = asyncio.create_task(first.run())
    await _until(lambda: first.stats.connected, 10, "connected")
    await first.publish_retained(TOPICS.kpi, b'{"kpi": 1}')
    assert await asyncio.to_thread(_status, broker.port) == "online"
    # Die without a clean stop: cancel the task and drop the socket, no DISCONNECT.
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    link = first._link
    assert link is not None
    link.abort("test kills the socket")
    assert await asyncio.to_thread(_status, broker.port) == "offline", "the Last Will"
    second = _forwarder(outbox, section)
    await second.publish_retained(TOPICS.kpi, b'{"kpi": 2}')  # offline: kept for later
    async with _running(second):
        await _until(lambda: second.stats.connected, 10, "reconnected")
        await _until(lambda: second.stats.inflight == 0, 5, "birth acknowledged")
        status = await asyncio.to_thread(retained, broker.port, f"{BASE}/status", 5.0)
        assert status is not None
        body = json.loads(status)
        assert body["state"] == "online"
        assert body["gateway"] == "dock-3"
        assert body["site"] == "milan-returns"
        assert body["buffer"] == {"pending": 0}, "health() is in the birth"
        assert body["at"].endswith("Z")
        kpi = await asyncio.to_thread(retained, broker.port, TOPICS.kpi, 5.0)
        assert kpi == b'{"kpi": 2}'


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_wms_mode_delivers_only_on_acks_and_resends(
    broker: Mosquitto, outbox: SqliteOutbox, protocol: str
) -> None:
    rows = outbox.add(20)
    forwarder = _forwarder(
        outbox, _section(broker.port, delivery="wms", ack_timeout_s=1.0, protocol=protocol)
    )

    with Collector(broker.port, [f"{BASE}/movements"]) as collector:
        async with _running(forwarder):
            await _until(lambda: len(collector.received()) >= 20, 20, "first copies")
            await asyncio.sleep(0.2)
            assert outbox.undelivered() == 20, "a PUBACK does not deliver in wms mode"
            await _until(lambda: len(collector.received()) >= 40, 20, "copies after timeout")
            assert forwarder.stats.resent >= 20
            assert outbox.undelivered() == 20
            by_ids = json.dumps({"ids": [r.id for r in rows[:5]]}).encode()
            await asyncio.to_thread(publish, broker.port, TOPICS.ack, by_ids)
            await _until(lambda: outbox.undelivered() == 15, 10, "5 acked by id")
            await asyncio.to_thread(
                publish, broker.port, TOPICS.ack, json.dumps({"upto_seq": 12}).encode()
            )
            await _until(lambda: outbox.undelivered() == 8, 10, "up to 12 acked")
            assert forwarder.stats.acks_received == 2
            # Acked rows are not sent again; the rest still are.
            await asyncio.sleep(0.2)
            mark = len(collector.received())
            await _until(lambda: len(collector.received()) >= mark + 8, 20, "next resend")
            later = [m.json()["seq"] for m in collector.received()[mark:]]
            assert all(seq > 12 for seq in later), later
        copies: dict[str, set[bytes]] = {}
        for message in collector.received():
            copies.setdefault(message.json()["id"], set()).add(message.payload)
        assert set(copies) == {r.id for r in rows}
        assert all(len(payloads) == 1 for payloads in copies.values()), "same payload each time"


async def test_bad_acks_are_counted_and_the_forwarder_goes_on(
    broker: Mosquitto, outbox: SqliteOutbox
) -> None:
    outbox.add(10)
    forwarder = _forwarder(outbox, _section(broker.port, delivery="wms", ack_timeout_s=60.0))
    garbage = [
        b"not json",
        b'{"ids": 5}',
        b"[1,2,3]",
        b'{"upto_seq": "x"}',
        b'{"ids": [1, 2]}',
        random.Random(1).randbytes(1_000_000),
    ]

    with capture_logs() as logs:
        async with _running(forwarder):
            await _until(lambda: forwarder.stats.unacked == 10, 20, "10 rows sent")
            for payload in garbage:
                await asyncio.to_thread(publish, broker.port, TOPICS.ack, payload)
            await _until(lambda: forwarder.stats.bad_acks == len(garbage), 20, "bad acks")
            assert forwarder.stats.connected
            await asyncio.to_thread(
                publish, broker.port, TOPICS.ack, json.dumps({"upto_seq": 10}).encode()
            )
            await _until(lambda: outbox.undelivered() == 0, 10, "a good ack still works")
    rejected = [e for e in logs if e["event"] == "ack_rejected"]
    assert len(rejected) == len(garbage)
    assert {e["reason"] for e in rejected} >= {
        "not JSON",
        "'ids' must be a list",
        "not a JSON object",
        "'upto_seq' must be an integer",
        "'ids' must hold strings",
    }
    assert any("larger than" in e["reason"] for e in rejected)


async def test_window_capped_by_receive_maximum(tmp_path: Path, outbox: SqliteOutbox) -> None:
    outbox.add(2000)
    with Mosquitto(tmp_path / "mq5", extra_conf="max_inflight_messages 5\n") as small:
        forwarder = _forwarder(outbox, _section(small.port, max_inflight=100))

        link = MqttLink(LinkSettings("127.0.0.1", small.port, "probe"), lambda _e: None)
        await link.connect()
        assert link.receive_maximum == 5
        await link.disconnect()
        async with _running(forwarder):
            await _until(lambda: outbox.undelivered() == 0, 60, "every row delivered")
            assert forwarder.stats.window == 5
    assert 1 <= forwarder.stats.inflight_peak <= 5


async def test_thousands_of_rows_in_flight_on_one_link_are_all_answered(tmp_path: Path) -> None:
    """One read can hold thousands of PUBACKs; paho would parse one a call for rows it never saw."""
    events: list[LinkEvent] = []
    with Mosquitto(tmp_path / "bulk") as broker:
        link = MqttLink(LinkSettings("127.0.0.1", broker.port, "bulk"), events.append)
        await link.connect()
        try:
            mids = [link.publish_row(f"{BASE}/movements", b'{"n": 1}') for _ in range(5000)]
            link.flush()
            await _until(lambda: len(events) >= len(mids), 30, "a PUBACK for every row")
        finally:
            await link.disconnect()
    acked = [e.mid for e in events if isinstance(e, Published) and e.ok]
    assert sorted(acked) == sorted(mids)


async def test_negative_puback_keeps_the_row(tmp_path: Path, outbox: SqliteOutbox) -> None:
    outbox.add(30)
    acl = tmp_path / "acl"
    acl.write_text(
        "".join(
            f"topic readwrite {BASE}/{name}\n"
            for name in ("status", "ack", "cmd/#", "scans/#", "cmd-result/#", "events", "kpi")
        ),
        encoding="utf-8",
    )
    acl.chmod(0o644)
    with Mosquitto(tmp_path / "mqacl", extra_conf=f"acl_file {acl}\n") as denying:
        # Window 1: mosquitto 2.0 closes the link right after a 0x87 PUBACK (its issue #2579), and
        # more publishes behind the refused one would turn that close into a RST that loses it.
        section = _section(denying.port, max_inflight=1, reconnect_min_s=0.5, reconnect_max_s=2)
        forwarder = _forwarder(outbox, section)

        with capture_logs() as logs:
            async with _running(forwarder):
                await _until(lambda: forwarder.stats.refused >= 1, 10, "a refused PUBACK")
                published = forwarder.stats.published
                await asyncio.sleep(1.5)
                # The row stays and is retried after a backoff, not in a spin.
                assert outbox.undelivered() == 30, "a refused row is never delivered"
                assert forwarder.stats.published - published <= 6, "not spinning"
    alerts = [e for e in logs if e["event"] == "publish_refused" and e["log_level"] == "error"]
    assert alerts
    assert alerts[0]["reason_code"] == "0x87"


async def test_stalled_link_forces_a_reconnect(broker: Mosquitto, outbox: SqliteOutbox) -> None:
    outbox.add(3000)
    forwarder = _forwarder(outbox, _section(broker.port, stall_timeout_s=0.5, keepalive_s=60))
    assert broker.proc is not None
    pid = broker.proc.pid

    with capture_logs() as logs:
        async with _running(forwarder):
            await _until(lambda: outbox.undelivered() < 3000, 20, "publishing")
            os.kill(pid, signal.SIGSTOP)  # a blackhole: the socket stays up, nothing answers
            try:
                await _until(
                    lambda: any(e["event"] == "broker_link_stalled" for e in logs),
                    10,
                    "stall detected",
                )
            finally:
                os.kill(pid, signal.SIGCONT)
            await _until(lambda: outbox.undelivered() == 0, 60, "delivered after the stall")
    assert forwarder.stats.reconnects >= 1


async def test_commands_reach_the_handler_and_replies_use_the_response_topic(
    broker: Mosquitto, outbox: SqliteOutbox
) -> None:
    got: list[IncomingMessage] = []
    forwarder: Forwarder

    async def handle(message: IncomingMessage) -> None:
        got.append(message)
        name = TOPICS.command_name(message.topic)
        if name is not None:
            await forwarder.reply(message, name, b'{"ok": true}')

    scans: InboundLane[Delivery] = InboundLane()
    forwarder = _forwarder(outbox, _section(broker.port), on_message=handle, scans=scans)

    def request() -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        try:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = "wms/replies/1"
            props.CorrelationData = b"corr-42"
            client.publish(TOPICS.cmd("replay"), b"{}", 1, properties=props).wait_for_publish(5)
        finally:
            client.disconnect()
            client.loop_stop()

    replies: list[tuple[str, bytes, bytes | None]] = []
    listener = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        corr = getattr(msg.properties, "CorrelationData", None)
        replies.append((msg.topic, bytes(msg.payload), corr))

    listener.on_message = on_message
    listener.connect("127.0.0.1", broker.port)
    listener.subscribe([("wms/replies/#", 1), (f"{BASE}/cmd-result/+", 1)])
    listener.loop_start()

    try:
        async with _running(forwarder):
            await _until(lambda: forwarder.stats.connected, 10, "connected")
            await _until(lambda: forwarder.stats.inflight == 0, 5, "birth acknowledged")
            await asyncio.to_thread(request)
            await asyncio.to_thread(publish, broker.port, f"{BASE}/scans/handheld-1", b"RMA-1")
            await _until(lambda: len(replies) >= 2 and len(scans) == 1, 10, "replies and a scan")
    finally:
        listener.disconnect()
        listener.loop_stop()
    # Scans go to the reader's lane, commands to the handler.
    assert [m.topic for m in got] == [TOPICS.cmd("replay")]
    scan = await scans.get()
    assert (scan.sender, scan.payload, scan.qos) == ("handheld-1", b"RMA-1", 1)
    command = next(m for m in got if m.topic == TOPICS.cmd("replay"))
    assert command.response_topic == "wms/replies/1"
    assert command.correlation_data == b"corr-42"
    assert (f"{BASE}/cmd-result/replay", b'{"ok": true}', None) in replies
    assert ("wms/replies/1", b'{"ok": true}', b"corr-42") in replies


async def test_wrong_password_is_refused_with_the_longest_backoff(
    tmp_path: Path, outbox: SqliteOutbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "mqauth"
    workdir.mkdir()
    passwd = workdir / "passwd"
    passwd.write_text("", encoding="utf-8")
    import subprocess

    subprocess.run(
        ["mosquitto_passwd", "-b", str(passwd), "gateway", "right-secret"], check=True, timeout=10
    )
    passwd.chmod(0o644)
    conf = f"allow_anonymous false\npassword_file {passwd}\n"
    monkeypatch.setenv("TEST_MQTT_PASSWORD", "wrong-secret-value")
    with Mosquitto(workdir, extra_conf=conf) as auth:
        # The generated config says allow_anonymous true first; ours comes later and wins.
        section = _section(
            auth.port,
            username="gateway",
            password_env="TEST_MQTT_PASSWORD",
            reconnect_min_s=0.1,
            reconnect_max_s=1.0,
        )
        forwarder = _forwarder(outbox, section)

        with capture_logs() as logs:
            async with _running(forwarder):
                await _until(lambda: forwarder.stats.last_error is not None, 10, "refusal")
                await asyncio.sleep(1.5)
    failures = [e for e in logs if e["event"] == "broker_connect_failed"]
    assert failures
    assert failures[0]["refused"] is True
    assert failures[0]["log_level"] == "warning"
    assert all(e["log_level"] == "debug" for e in failures[1:]), "repeats at DEBUG"
    assert len(failures) <= 4, "refusals wait the longest backoff"
    assert "wrong-secret-value" not in repr(logs)
    assert not forwarder.stats.connected


def _make_certs(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 and localhost, made with the openssl CLI."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        name: folder / f"{name}.pem"
        for name in ("ca", "ca-key", "server", "server-key", "other-ca", "other-ca-key")
    }
    csr = folder / "server.csr"
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n", encoding="utf-8")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    for ca in ("ca", "other-ca"):
        openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN=test {ca}", "-keyout", str(paths[f"{ca}-key"]), "-out", str(paths[ca]),
        )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(paths["server-key"]), "-out", str(csr),
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(paths["ca"]), "-CAkey", str(paths["ca-key"]),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(paths["server"]),
    )  # fmt: skip
    for path in paths.values():
        path.chmod(0o644)
    return paths


async def test_tls_link_verifies_the_broker(tmp_path: Path, outbox: SqliteOutbox) -> None:
    rows = outbox.add(200)
    certs = _make_certs(tmp_path / "certs")
    # These lines apply to the listener the generated config opens: it speaks TLS only.
    conf = f"cafile {certs['ca']}\ncertfile {certs['server']}\nkeyfile {certs['server-key']}\n"
    with Mosquitto(tmp_path / "mqtls", extra_conf=conf) as tls_broker:
        good = _forwarder(outbox, _section(tls_broker.port, tls={"ca_file": certs["ca"]}))
        wrong = _forwarder(outbox, _section(tls_broker.port, tls={"ca_file": certs["other-ca"]}))

        with capture_logs() as logs:
            async with _running(wrong):
                await _until(lambda: wrong.stats.last_error is not None, 10, "TLS refusal")
                assert not wrong.stats.connected
            async with _running(good):
                await _until(lambda: outbox.undelivered() == 0, 30, "delivered over TLS")
    assert good.stats.delivered == len(rows)
    refused = [e for e in logs if e["event"] == "broker_connect_failed"]
    assert refused
    assert refused[0]["refused"] is True, "an untrusted broker waits the longest backoff"
    assert "TLS verification failed" in refused[0]["reason"]
