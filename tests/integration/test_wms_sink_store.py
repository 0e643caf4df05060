"""The reference consumer keeps its share of a shared group only while it can store: a locked
store (another consumer writing the same database) delays it, and loses nothing. It applies each
gateway's movements in seq order: early ones are parked durably, a gap that never fills is
released and recorded."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway import wms_sink, wms_store
from gateway.wms_sink import WmsSink
from tests.support.broker import Mosquitto
from tests.support.wms import Collector, publish


def _id(seq: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"locked-{seq}"))


def _movement(seq: int) -> bytes:
    return json.dumps(
        {
            "schema": "dock-gateway/movement/1",
            "id": _id(seq),
            "seq": seq,
            "type": "receipt",
            "site": "milan-returns",
            "gateway": "dock-3",
        }
    ).encode()


async def _lock_and_publish(
    db: Path, broker: Mosquitto, seqs: tuple[int, ...]
) -> sqlite3.Connection:
    """Lock the store as another consumer would (held until the caller commits), then publish."""
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    for seq in seqs:
        await asyncio.to_thread(
            publish, broker.port, "returns/milan-returns/dock-3/movements", _movement(seq)
        )
    return other


async def test_a_locked_store_is_retried_and_nothing_is_skipped(
    tmp_path: Path, broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A short busy timeout, so the lock below outlasts it (the product waits 30 s).
    monkeypatch.setattr(wms_store, "STORE_BUSY_TIMEOUT_S", 0.1)
    db = tmp_path / "wms.db"

    async def run() -> tuple[int, int]:
        async with WmsSink("127.0.0.1", broker.port, db, group="wms") as sink:
            await sink.wait_connected()
            other = await _lock_and_publish(db, broker, (1, 2, 3))
            await asyncio.sleep(1.0)
            held = other.execute("SELECT count(*) FROM movements").fetchone()[0]
            other.execute("COMMIT")
            other.close()
            deadline = asyncio.get_running_loop().time() + 10
            while await sink.count() < 3:
                assert asyncio.get_running_loop().time() < deadline, "not stored after the lock"
                await asyncio.sleep(0.1)
            return held, sink.stats.stored

    with capture_logs() as logs:
        held, stored = await run()
    assert held == 0, "stored while the lock was held"
    assert stored == 3
    assert any(e["event"] == "wms_sink_store_retry" for e in logs)


async def _until_stored(sink: WmsSink, count: int, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while await sink.count() < count:
        assert asyncio.get_running_loop().time() < deadline, f"not {count} stored"
        await asyncio.sleep(0.05)


def _stored_seqs(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT seq FROM movements ORDER BY rowid")]


async def test_out_of_order_arrivals_are_applied_in_seq_order_across_a_restart(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """3 and 4 come before 2: parked (and acked), kept through a restart, applied when 2 comes."""
    db = tmp_path / "wms.db"
    topic = "returns/milan-returns/dock-3/movements"
    acks: list[bytes] = []
    with Collector(broker.port, ["returns/milan-returns/dock-3/ack"]) as collector:
        async with WmsSink("127.0.0.1", broker.port, db, group="wms") as sink:
            await sink.wait_connected()
            for seq in (1, 3, 4, 3):
                await asyncio.to_thread(publish, broker.port, topic, _movement(seq))
            await _until_stored(sink, 1)
            deadline = asyncio.get_running_loop().time() + 10
            while sink.stats.parked + sink.stats.duplicates < 3:
                assert asyncio.get_running_loop().time() < deadline, "3 and 4 not parked"
                await asyncio.sleep(0.05)
            assert await sink.parked_count() == 2
            assert sink.stats.duplicates == 1
        # Parked ones are committed, so acked: the gateway need not send them again.
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            acks = [m.payload for m in collector.received("/ack")]
            acked = {i for payload in acks for i in json.loads(payload)["ids"]}
            if acked >= {_id(1), _id(3), _id(4)}:
                break
            assert asyncio.get_running_loop().time() < deadline, f"acks: {acks}"
            await asyncio.sleep(0.05)
    assert _stored_seqs(db) == [1]
    async with WmsSink("127.0.0.1", broker.port, db, group="wms") as sink:
        await sink.wait_connected()
        await asyncio.to_thread(publish, broker.port, topic, _movement(2))
        await _until_stored(sink, 4)
        assert await sink.parked_count() == 0
    assert _stored_seqs(db) == [1, 2, 3, 4]


async def test_a_gap_that_does_not_fill_is_released_logged_and_recorded(
    tmp_path: Path, broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wms_sink, "GAP_CHECK_EVERY_S", 0.1)
    db = tmp_path / "wms.db"
    topic = "returns/milan-returns/dock-3/movements"
    with capture_logs() as logs:
        async with WmsSink("127.0.0.1", broker.port, db, group="wms", gap_timeout_s=0.5) as sink:
            await sink.wait_connected()
            for seq in (1, 2, 5, 6):
                await asyncio.to_thread(publish, broker.port, topic, _movement(seq))
            await _until_stored(sink, 2)
            await _until_stored(sink, 4, timeout_s=10)
            # The stats follow the release's commit, which the count above may have seen first.
            deadline = asyncio.get_running_loop().time() + 5
            while sink.stats.gaps_released == 0:
                assert asyncio.get_running_loop().time() < deadline, "gap not counted"
                await asyncio.sleep(0.05)
            gaps = await sink.gaps()
            released = sink.stats.gaps_released
    assert _stored_seqs(db) == [1, 2, 5, 6]
    assert gaps == [wms_store.Gap("milan-returns", "dock-3", 3, 4)]
    assert released == 1
    [event] = [e for e in logs if e["event"] == "wms_sink_gap_released"]
    assert (event["from_seq"], event["to_seq"], event["log_level"]) == (3, 4, "warning")


async def test_acks_owed_when_the_link_dropped_during_the_commit_are_sent_after_reconnect(
    tmp_path: Path, broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The batch is taken from the link, then the store is locked while the broker goes away:
    # the commit lands with no link to ack on. The gateway would wait ack_timeout_s and send
    # the batch again; the acks must follow on the next link instead.
    monkeypatch.setattr(wms_store, "STORE_BUSY_TIMEOUT_S", 0.1)
    db = tmp_path / "wms.db"
    acks = Collector(broker.port, ["returns/milan-returns/dock-3/ack"], client_id="gw-acks")
    acks.prime()  # a persistent session: acks sent while it is away wait for it
    async with WmsSink("127.0.0.1", broker.port, db, group="wms", client_id="wms-0") as sink:
        await sink.wait_connected()
        other = await _lock_and_publish(db, broker, (1, 2, 3))
        deadline = asyncio.get_running_loop().time() + 10
        while sink.stats.received < 3:
            assert asyncio.get_running_loop().time() < deadline, "never received"
            await asyncio.sleep(0.05)
        await asyncio.to_thread(broker.stop)
        while sink.link_up:
            assert asyncio.get_running_loop().time() < deadline, "the link never dropped"
            await asyncio.sleep(0.05)
        other.execute("COMMIT")
        other.close()
        await _until_stored(sink, 3)
        assert sink.stats.acks_sent == 0
        await asyncio.to_thread(broker.start)
        with acks:
            await asyncio.to_thread(
                acks.wait_for, lambda c: len(c.received("/ack")) >= 1, 20, "the owed ack"
            )
            acked = {i for m in acks.received("/ack") for i in m.json()["ids"]}
    assert acked == {_id(1), _id(2), _id(3)}
