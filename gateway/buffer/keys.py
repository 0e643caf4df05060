"""Where the daemon keeps its buffer file, and the keys it keeps in the buffer's kv table."""

from __future__ import annotations

from pathlib import Path

BUFFER_FILE = "buffer.sqlite3"
KPI_STATE_KEY = "kpi-state"
PROFILE_HISTORY_KEY = "profile-history"


def buffer_path(state_dir: Path) -> Path:
    """The buffer file inside a gateway's state directory."""
    return state_dir / BUFFER_FILE


def replay_epoch_key(reader: str, file: Path) -> str:
    """The key under which a replay reader's first start time is kept."""
    return f"replay-epoch:{reader}:{file}"
