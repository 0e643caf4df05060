"""The SQLite buffer: raw-event journal, outbox of movements, checkpoint; the only SQLite user."""

from gateway.buffer.store import Buffer, BufferStats, Gap, OutboxRow

__all__ = ["Buffer", "BufferStats", "Gap", "OutboxRow"]
