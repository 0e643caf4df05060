"""`gateway expected import|stats`: the registry of expected returns, beside a running daemon.

Both open the daemon's buffer file on a second connection (SQLite in WAL mode lets a reader and
one writer at a time share it). `import` writes in chunks of `ANNOUNCE_CHUNK_RMAS`, each its own
short transaction, so the daemon's own writes wait at most one chunk; the daemon notices the new
registry version before its next receipt and reloads what it holds in memory.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.buffer.expected import ANNOUNCE_CHUNK_RMAS, ExpectedStore
from gateway.config import Config, load_config
from gateway.errors import InputError
from gateway.logs import configure_logging

CSV_COLUMNS = ("rma", "customer", "epc", "gtin", "serial", "qty", "expires_at")


def import_cli(csv_path: Path, config_path: Path, *, replace: bool) -> int:
    """Announce every RMA of a CSV (the `wms-sink --announce` header); 0 if none was refused."""
    config = load_config(config_path)
    # Stdout carries the JSON result only; log lines (a migration, say) go to stderr.
    configure_logging("auto", "WARNING", stream=sys.stderr)
    config.gateway.state_dir.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(_import(csv_path, config, replace=replace))
    print(json.dumps(result))
    return 0 if not result["refused"] else 2


def stats_cli(config_path: Path) -> int:
    """Print the registry's counters and the buffer file's size as JSON."""
    from gateway.operations import read_only_buffer  # noqa: PLC0415 - the daemon stack loads only here

    config = load_config(config_path)

    async def read() -> dict[str, Any]:
        async with read_only_buffer(config) as buffer:
            stats = await ExpectedStore(buffer).stats(now_s=time.time())
            file_bytes = (await buffer.stats()).file_bytes
        return {**stats.as_dict(), "buffer_file_bytes": file_bytes}

    print(json.dumps(asyncio.run(read()), indent=2))
    return 0


def read_rmas(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(first CSV line, RMA entry) for each RMA; the rows of one RMA must be consecutive.

    InputError names the line of a row that cannot be an announcement at all.
    """
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise InputError("announcements", f"cannot read {path}: {exc.strerror}") from exc
    seen: set[str] = set()
    current: dict[str, Any] | None = None
    first_line = 0
    with handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "rma" not in reader.fieldnames:
            raise InputError("announcements", f"{path}: the header must name {CSV_COLUMNS}")
        for number, row in enumerate(reader, start=2):
            name = (row.get("rma") or "").strip()
            if not name:
                raise InputError("announcements", f"line {number}: 'rma' is empty")
            if current is None or current["rma"] != name:
                if current is not None:
                    yield first_line, current
                if name in seen:
                    raise InputError(
                        "announcements", f"line {number}: rows of {name[:64]!r} are not together"
                    )
                seen.add(name)
                current, first_line = {"rma": name, "items": []}, number
            _add_row(current, row, number)
    if current is not None:
        yield first_line, current


async def _import(path: Path, config: Config, *, replace: bool) -> dict[str, Any]:
    from gateway.buffer.keys import buffer_path  # noqa: PLC0415 - the buffer loads only here
    from gateway.buffer.store import Buffer  # noqa: PLC0415

    started = time.monotonic()
    buffer = await Buffer.open(
        buffer_path(config.gateway.state_dir),
        max_bytes=config.buffer.max_bytes,
        synchronous=config.buffer.synchronous,
    )
    store = ExpectedStore(buffer)
    action = "replace" if replace else "add"
    accepted = 0
    refused: list[dict[str, Any]] = []
    try:
        gen = await store.begin_replace() if replace else None
        chunk: list[dict[str, Any]] = []
        lines: list[int] = []
        for line, entry in read_rmas(path):
            chunk.append(entry)
            lines.append(line)
            if len(chunk) >= ANNOUNCE_CHUNK_RMAS:
                accepted += await _write(store, action, chunk, lines, gen, refused)
                chunk, lines = [], []
        if chunk:
            accepted += await _write(store, action, chunk, lines, gen, refused)
        if gen is not None:
            await store.finish_replace(gen)
        stats = await store.stats()
    finally:
        await buffer.close()
    return {
        "action": action,
        "accepted": accepted,
        "refused": refused,
        "open": stats.open_rmas,
        "seconds": round(time.monotonic() - started, 2),
    }


async def _write(
    store: ExpectedStore,
    action: str,
    chunk: list[dict[str, Any]],
    lines: list[int],
    gen: int | None,
    refused: list[dict[str, Any]],
) -> int:
    outcome = await store.apply_chunk({"action": action, "rmas": chunk}, 0, gen)
    refused.extend({**r.as_dict(), "line": lines[r.index]} for r in outcome.refused)
    return outcome.accepted


def _add_row(entry: dict[str, Any], row: dict[str, str | None], number: int) -> None:
    if row.get("customer"):
        entry["customer"] = str(row["customer"]).strip()
    if row.get("expires_at"):
        entry["expires_at"] = str(row["expires_at"]).strip()
    item: dict[str, Any] = {}
    for key in ("epc", "gtin", "serial"):
        value = row.get(key)
        if value:
            item[key] = value.strip()
    qty = (row.get("qty") or "1").strip()
    if not qty.isdigit():
        raise InputError("announcements", f"line {number}: 'qty' must be a whole number")
    item["qty"] = int(qty)
    entry["items"].append(item)
