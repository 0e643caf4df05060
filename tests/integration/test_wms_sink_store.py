"""The reference consumer keeps its share of a shared group only while it can store: a locked
store (another consumer writing the same database) delays it, and loses nothing."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway import wms_sink
from gateway.wms_sink import WmsSink
from tests.support.broker import Mosquitto
from tests.support.wms import publish


def _movement(seq: int) -> bytes:
    return json.dumps(
        {
            "schema": "dock-gateway/movement/1",
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"locked-{seq}")),
            "seq": seq,
            "type": "receipt",
            "site": "milan-returns",
            "gateway": "dock-3",
        }
    ).encode()


async def test_a_locked_store_is_retried_and_nothing_is_skipped(
    tmp_path: Path, broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A short busy timeout, so the lock below outlasts it (the product waits 30 s).
    monkeypatch.setattr(wms_sink, "STORE_BUSY_TIMEOUT_S", 0.1)
    db = tmp_path / "wms.db"

    async def run() -> tuple[int, int]:
        async with WmsSink("127.0.0.1", broker.port, db, group="wms") as sink:
            await sink.wait_connected()
            other = sqlite3.connect(db, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")
            for seq in (1, 2, 3):
                await asyncio.to_thread(
                    publish, broker.port, "returns/milan-returns/dock-3/movements", _movement(seq)
                )
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
