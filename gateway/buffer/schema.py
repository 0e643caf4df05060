"""The buffer's schema: numbered `.sql` files in `migrations/`, applied in order, `user_version`.

Every pending migration runs in one transaction with the `user_version` update, so a file is
either at its old version or at the newest, never in between.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib import resources

from gateway.errors import BufferUnavailable, GatewayError
from gateway.logs import get_logger

_log = get_logger("buffer")

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered migration file."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The numbered `.sql` files shipped in `gateway/buffer/migrations`, in order, no holes."""
    found: list[Migration] = []
    for entry in resources.files("gateway.buffer").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise GatewayError(f"buffer migrations are not numbered 1..n: {[m.name for m in found]}")
    return found


def migrate(conn: sqlite3.Connection, where: str) -> None:
    """Apply every pending migration in one transaction and set `user_version`."""
    version = _user_version(conn)
    found = migrations()
    latest = found[-1].version
    if version > latest:
        raise BufferUnavailable(
            where, f"schema version {version} is newer than this gateway's {latest}"
        )
    pending = [m for m in found if m.version > version]
    if not pending:
        return
    # executescript() runs statements as given: one explicit transaction around all of them.
    script = "\n".join(
        [
            "BEGIN IMMEDIATE;",
            *(m.sql for m in pending),
            f"PRAGMA user_version = {latest};",
            "COMMIT;",
        ]
    )
    try:
        conn.executescript(script)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    _log.info("buffer_migrated", from_version=version, to_version=latest)


def require_latest(conn: sqlite3.Connection, where: str) -> None:
    """Refuse a file whose schema is not the newest: a reader may not migrate it."""
    version = _user_version(conn)
    latest = migrations()[-1].version
    if version != latest:
        raise BufferUnavailable(
            where, f"schema version {version}, this gateway reads version {latest}"
        )


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])
