"""The SQLite buffer: raw-event journal, outbox of movements, checkpoint; the only SQLite user."""

from gateway.buffer.store import Buffer, BufferStats, BufferUnavailable, Gap, OutboxRow

__all__ = ["Buffer", "BufferStats", "BufferUnavailable", "Gap", "OutboxRow"]
