"""Expected returns in the buffer: announcements in chunks, refusals, receipts, expiry, slices."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.buffer import expected as expected_store
from gateway.buffer.expected import ExpectedStore, write_updates
from gateway.buffer.store import Buffer
from gateway.daemon.expected import ExpectedLink
from gateway.domain.events import TagRead
from gateway.domain.expected import ExpectedReturns, lookup_keys
from gateway.domain.movements import Item, Movement
from gateway.domain.pipeline import SNAPSHOT_VERSION, Pipeline, PipelinePlan, StationPlan
from gateway.errors import InputError
from gateway.gs1 import BIIP_GS1

BIG = 64 * 1024 * 1024
EPC = "urn:epc:id:sgtin:0614141.812345.6789"
SGTIN_HEX = "3074257BF7194E4000001A85"  # EPC as the tag holds it
OTHER_HEX = "3074257BF7194E4000001A86"
_T = TypeVar("_T")


def rma(name: str, serial: str, **extra: Any) -> dict[str, Any]:
    return {"rma": name, "items": [{"gtin": "80614141123458", "serial": serial}], **extra}


async def with_store(path: Path, body: Callable[[ExpectedStore, Buffer], Awaitable[_T]]) -> _T:
    buffer = await Buffer.open(path, max_bytes=BIG)
    try:
        return await body(ExpectedStore(buffer), buffer)
    finally:
        await buffer.close()


async def test_malformed_entries_are_refused_by_index_and_the_rest_applied(tmp_path: Path) -> None:
    async def body(store: ExpectedStore, _: Buffer) -> dict[str, Any]:
        await store.announce({"action": "add", "rmas": [rma("KEEP", "1")]})
        return await store.announce(
            {
                "action": "add",
                "rmas": [
                    rma("A", "2"),
                    {"rma": 5},
                    {"rma": "B", "items": [{"qty": 1}]},
                    "not an object",
                    rma("C", "3"),
                ],
            }
        )

    result = await with_store(tmp_path / "b.sqlite3", body)
    assert result["accepted"] == 2
    assert [(r["index"], r["rma"]) for r in result["refused"]] == [
        (1, None),
        (2, "B"),
        (3, None),
    ]
    assert "epc" in result["refused"][1]["reason"]
    assert result["open"] == 3, "KEEP stays, A and C are added"


async def test_a_malformed_command_as_a_whole_changes_nothing(tmp_path: Path) -> None:
    async def body(store: ExpectedStore, _: Buffer) -> int:
        await store.announce({"rmas": [rma("KEEP", "1")]})
        for bad in ({"action": "explode", "rmas": []}, {"rmas": "x"}, {"rma": 5}):
            with pytest.raises(InputError):
                await store.announce(bad)
        return (await store.stats()).rmas

    assert await with_store(tmp_path / "b.sqlite3", body) == 1


async def test_chunked_add_replace_cancel_and_counters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(expected_store, "ANNOUNCE_CHUNK_RMAS", 7)
    monkeypatch.setattr(expected_store, "DELETE_CHUNK_RMAS", 5)
    chunks: list[int] = []

    async def body(store: ExpectedStore, _: Buffer) -> list[Any]:
        first = [rma(f"R{i}", str(i)) for i in range(50)]
        added = await store.announce(
            {"action": "add", "rmas": first}, after_chunk=lambda: chunks.append(1)
        )
        again = await store.announce({"action": "add", "rmas": first[:10]})
        after_add = await store.stats()
        replaced = await store.announce(
            {"action": "replace", "rmas": [rma(f"R{i}", str(i)) for i in range(40, 60)]}
        )
        after_replace = await store.stats()
        cancelled = await store.announce({"action": "cancel", "rmas": ["R45", "NOPE", 7]})
        return [added, again, after_add, replaced, after_replace, cancelled, await store.stats()]

    added, again, after_add, replaced, after_replace, cancelled, final = await with_store(
        tmp_path / "b.sqlite3", body
    )
    assert len(chunks) == 8, "50 RMAs in chunks of 7"
    assert added["accepted"] == 50
    assert again["accepted"] == 10
    assert (after_add.rmas, after_add.open_rmas, after_add.lines) == (50, 50, 50), "no doubles"
    assert replaced["open"] == 20
    assert (after_replace.rmas, after_replace.lines, after_replace.open_lines) == (20, 20, 20)
    assert cancelled["cancelled"] == 1
    assert [r["index"] for r in cancelled["refused"]] == [2]
    assert (final.rmas, final.open_rmas) == (19, 19)
    assert final.estimated_bytes > 0


async def test_receipt_updates_reach_the_rows_and_a_slice_sees_them(tmp_path: Path) -> None:
    async def body(store: ExpectedStore, buffer: Buffer) -> tuple[Any, ...]:
        await store.announce(
            {
                "rmas": [
                    {"rma": "R1", "items": [{"epc": EPC}, {"gtin": "00614141000012", "qty": 2}]},
                    {"rma": "R2", "items": [{"gtin": "00614141000012", "qty": 1}]},
                ]
            }
        )
        registry = ExpectedReturns(track_updates=True)
        items = [Item(epc=EPC), Item(gtin="00614141000012"), Item(gtin="00614141000012")]
        keys = {key for item in items for key in lookup_keys(item)}
        fetched = await store.fetch(keys, keys, None)
        registry.load(fetched.rmas, fetched.keys)
        outcomes = []
        for item in items:
            match = registry.match(item)
            assert match is not None
            outcomes.append(registry.receive(match, item.key, serialised=item.epc is not None))
        updates = registry.take_updates()
        await buffer.run_transaction(lambda conn: write_updates(conn, updates))
        stats = await store.stats()
        fresh = ExpectedReturns()
        again = await store.fetch(keys, keys, None)
        fresh.load(again.rmas, again.keys)
        unit = Item(gtin="00614141000012")
        match = fresh.match(unit)
        return outcomes, stats, match, fresh.receive(match, unit.key, serialised=False)  # type: ignore[arg-type]

    outcomes, stats, match, next_unit = await with_store(tmp_path / "b.sqlite3", body)
    assert outcomes == [("new", False), ("new", False), ("new", True)]
    assert (stats.rmas, stats.open_rmas, stats.lines, stats.open_lines) == (2, 1, 3, 1)
    assert match.rma == "R2", "R1's quantity line is full on disk: the next unit goes to R2"
    assert next_unit == ("new", True)


async def test_expiry_sweep_in_bounded_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(expected_store, "SWEEP_CHUNK_RMAS", 4)
    batches: list[int] = []

    async def body(store: ExpectedStore, _: Buffer) -> tuple[Any, ...]:
        old = [rma(f"OLD{i}", str(i), expires_at="2026-01-01T00:00:00Z") for i in range(10)]
        new = [rma(f"NEW{i}", str(100 + i), expires_at="2030-01-01T00:00:00Z") for i in range(3)]
        await store.announce({"rmas": [*old, *new, rma("FOREVER", "999")]})
        waiting = await store.stats(now_s=1_790_000_000.0)
        swept = await store.sweep_expired(1_790_000_000.0, after_chunk=lambda: batches.append(1))
        return waiting, swept, await store.stats(now_s=1_790_000_000.0)

    waiting, swept, after = await with_store(tmp_path / "b.sqlite3", body)
    assert waiting.expired_waiting == 10
    assert swept == 10
    assert len(batches) == 3
    assert (after.rmas, after.expired_total, after.expired_waiting) == (4, 10, 0)


async def test_an_add_again_keeps_what_arrived(tmp_path: Path) -> None:
    async def body(store: ExpectedStore, buffer: Buffer) -> tuple[Any, ...]:
        await store.announce({"rmas": [{"rma": "R", "items": [{"epc": EPC}]}]})
        registry = ExpectedReturns(track_updates=True)
        keys = set(lookup_keys(Item(epc=EPC)))
        fetched = await store.fetch(keys, keys, None)
        registry.load(fetched.rmas, fetched.keys)
        match = registry.match(Item(epc=EPC))
        assert match is not None
        registry.receive(match, EPC, serialised=True)
        updates = registry.take_updates()
        await buffer.run_transaction(lambda conn: write_updates(conn, updates))
        await store.announce({"rmas": [{"rma": "R", "items": [{"epc": EPC}], "customer": "c"}]})
        again = await store.fetch(keys, keys, fetched.version)
        fresh = ExpectedReturns()
        fresh.load(again.rmas, again.keys)
        match = fresh.match(Item(epc=EPC))
        assert match is not None
        return again.all_keys, fresh.receive(match, EPC, serialised=True), await store.stats()

    all_keys, outcome, stats = await with_store(tmp_path / "b.sqlite3", body)
    assert all_keys, "the announcement changed the version: a slice must reload everything"
    assert outcome == ("duplicate", False)
    assert (stats.open_rmas, stats.open_lines) == (0, 0)


async def test_an_announcement_delivered_again_resets_no_line_partly_received(
    tmp_path: Path,
) -> None:
    # Issue 20: the broker redelivers an announcement whose PUBACK a crash cut off.
    other = "urn:epc:id:sgtin:0614141.812345.6790"
    command = {"rmas": [{"rma": "R", "items": [{"epc": EPC}, {"epc": other}]}]}

    async def body(store: ExpectedStore, buffer: Buffer) -> tuple[Any, ...]:
        await store.announce(command)
        registry = ExpectedReturns(track_updates=True)
        keys = set(lookup_keys(Item(epc=EPC)))
        fetched = await store.fetch(keys, keys, None)
        registry.load(fetched.rmas, fetched.keys)
        match = registry.match(Item(epc=EPC))
        assert match is not None
        registry.receive(match, EPC, serialised=True)
        updates = registry.take_updates()
        await buffer.run_transaction(lambda conn: write_updates(conn, updates))
        before = await store.stats()
        result = await store.announce(command)
        lines = await buffer.run_transaction(
            lambda conn: conn.execute(
                "SELECT received FROM expected_lines ORDER BY line"
            ).fetchall(),
            read=True,
        )
        return before, await store.stats(), result, lines

    before, after, result, lines = await with_store(tmp_path / "b.sqlite3", body)
    assert result["accepted"] == 1
    assert (after.rmas, after.open_rmas, after.lines, after.open_lines) == (1, 1, 2, 1)
    assert after.as_dict() == before.as_dict()
    assert lines == [(1,), (0,)]


async def test_a_registry_in_an_old_snapshot_moves_into_the_buffer_with_what_arrived(
    tmp_path: Path,
) -> None:
    old = ExpectedReturns()
    old.apply({"rmas": [{"rma": "R1", "items": [{"epc": EPC}, {"gtin": "1", "qty": 2}]}]})
    match = old.match(Item(epc=EPC))
    assert match is not None
    old.receive(match, EPC, serialised=True)
    snapshot = {"v": SNAPSHOT_VERSION, "last_event_s": None, "expected": old.snapshot()}

    async def body(store: ExpectedStore, buffer: Buffer) -> tuple[Any, ...]:
        pipeline = Pipeline(PipelinePlan(gateway="g", stations={}, gs1=BIIP_GS1), snapshot)
        link = ExpectedLink(store)
        link.attach(pipeline, asyncio.Lock())
        moved = await link.import_legacy()
        again = await link.import_legacy()
        keys = set(lookup_keys(Item(epc=EPC)))
        fetched = await store.fetch(keys, keys, None)
        return moved, again, await store.stats(), fetched.rmas, pipeline.snapshot()

    moved, again, stats, rmas, new_snapshot = await with_store(tmp_path / "b.sqlite3", body)
    assert (moved, again) == (1, 0)
    assert (stats.rmas, stats.lines, stats.open_lines) == (1, 2, 1)
    assert rmas[0].line_counts == [1, 0]
    assert rmas[0].received == {EPC: 1}
    assert "expected" not in new_snapshot


async def test_a_visit_open_while_the_registry_changes_still_matches_its_rma(
    tmp_path: Path,
) -> None:
    """The slice is reloaded under an open visit: the visit's keys come back before it closes."""
    plan = PipelinePlan(
        gateway="g",
        stations={"door": StationPlan(id="door", kind="receiving")},
        zones={"portal": {"outside": [1, 2], "inside": [3, 4]}},
        gs1=BIIP_GS1,
    )
    t0 = 1_795_000_000.0
    crossing = [
        TagRead("portal", "door", SGTIN_HEX, antenna, t0 + i * 0.01, rssi_dbm=-50.0)
        for i, antenna in enumerate(a for a in (1, 2, 3, 4) for _ in range(20))
    ]

    async def body(store: ExpectedStore, _: Buffer) -> list[Movement]:
        await store.announce({"rmas": [{"rma": "R1", "items": [{"epc": EPC}]}]})
        pipeline = Pipeline(plan, None, ExpectedLink.new_slice())
        link = ExpectedLink(store)
        link.attach(pipeline, asyncio.Lock())
        out: list[Movement] = []
        await link.prefetch(crossing)
        for read in crossing:
            out += pipeline.feed(read, read.at_s)
        assert out == [], "the visit is still open"
        # Another RMA arrives (the version changes) while a stray tag is read at the door.
        await store.announce({"rmas": [rma("R2", "2")]})
        stray = TagRead("portal", "door", OTHER_HEX, 1, t0 + 0.9, rssi_dbm=-70.0)
        await link.prefetch([stray])
        out += pipeline.feed(stray, stray.at_s)
        return out + pipeline.tick(t0 + 60, t0 + 60)

    movements = await with_store(tmp_path / "b.sqlite3", body)
    receipts = [m for m in movements if m.item.epc == EPC]
    assert [(m.type, m.rma, m.expected) for m in receipts] == [("receipt", "R1", True)]
