"""MQTT deliveries the journal holds (migration 0003): what tells a redelivery from a new scan.

`Buffer.append_raw(events, seen)` upserts (packet id, digest) of each MQTT scan in the
transaction that journals it; the table is keyed by packet id, so it never holds more than
65,535 rows. A broker sends a message again with DUP set when its PUBACK never came: if the
(mid, digest) it carries is recorded, the scan was journaled and only the PUBACK was lost.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.buffer import rows

if TYPE_CHECKING:
    from gateway.buffer.store import Buffer


async def recorded(buffer: Buffer, mids: Sequence[int]) -> dict[int, bytes]:
    """The digest recorded with each of these packet ids, where there is one."""
    param = json.dumps(list(mids))

    def read(conn: sqlite3.Connection) -> dict[int, bytes]:
        found = conn.execute(rows.SELECT_INBOUND_SEEN, (param,)).fetchall()
        return {int(mid): bytes(digest) for mid, digest in found}

    return await buffer.run_transaction(read, read=True)
