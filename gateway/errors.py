"""The one error tree: each error is named for what the caller does next; data in attributes."""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """A configuration or profile is invalid; `key` names the offending field (dotted path)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class InputError(GatewayError):
    """Bad input from outside (a scan, a command, a file line); `what` names the input kind."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.what = what
        self.reason = reason


class ParseError(InputError):
    """An identifier (EPC, barcode) could not be decoded."""


class FrameError(InputError):
    """A wire frame (LLRP, serial line) is malformed; the connection may go on or be reset."""


class ReaderUnavailable(GatewayError):
    """A reader or scanner cannot be reached or was lost; the supervisor reconnects with backoff."""

    def __init__(self, reader: str, reason: str) -> None:
        super().__init__(f"{reader}: {reason}")
        self.reader = reader
        self.reason = reason


class ReaderRejectedConfig(GatewayError):
    """A reader refused the configuration it was sent; retrying the same one will not help."""

    def __init__(self, reader: str, reason: str) -> None:
        super().__init__(f"{reader}: {reason}")
        self.reader = reader
        self.reason = reason


class BrokerUnavailable(GatewayError):
    """The broker cannot be reached or dropped the link; the forwarder reconnects with backoff."""


class BrokerRefused(BrokerUnavailable):
    """The broker refused us (credentials, not authorised); retry only at the longest backoff."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutboxFull(GatewayError):
    """The buffer is at its byte budget with nothing left to free; input refused, gap recorded."""

    def __init__(self, needed_bytes: int, budget_bytes: int) -> None:
        super().__init__(f"buffer full: need {needed_bytes} bytes, budget {budget_bytes}")
        self.needed_bytes = needed_bytes
        self.budget_bytes = budget_bytes


class BufferUnavailable(GatewayError):
    """The buffer file cannot be used and waiting will not help (corrupt, full, closed, missing).

    `code` is SQLite's primary result code when SQLite said so, else None.
    """

    def __init__(self, path: str, reason: str, code: int | None = None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.code = code


class BufferStalled(BufferUnavailable):
    """The buffer file is held by another connection or the disk erred; the buffer tries again."""


class BufferCorrupt(GatewayError):
    """The SQLite file failed its integrity check; it was moved aside to `moved_to`."""

    def __init__(self, path: str, moved_to: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}; moved to {moved_to}")
        self.path = path
        self.moved_to = moved_to
        self.reason = reason


class ShutdownRequested(GatewayError):
    """Raised inside the top TaskGroup to stop the daemon (SIGTERM/SIGINT, duration elapsed)."""
