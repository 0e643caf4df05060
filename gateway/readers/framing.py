"""The scan framer: a byte stream from a scanner cut into scans, pure, with bounded memory.

A scan ends at the configured suffix (CR, LF, CRLF; `ANY` = CR or LF, for network scanners whose
suffix is not known), or, with suffix `none`, when no byte came for the inter-character timeout: the
caller passes `now_s` to `feed()` and calls `flush(now_s)` once the timeout has passed. The data is
kept as sent: an AIM symbology identifier prefix (`]C1`, `]d2`, `]Q3`, ...) stays in front and GS
(0x1D) stays inside. A line longer than `max_scan_bytes` is discarded as it arrives, never buffered,
and reported once at its terminator; control bytes other than GS, or bytes that are not UTF-8,
reject the line. Empty lines are skipped: a CRLF read by an `ANY` framer is one scan, not two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Suffix = Literal["CR", "LF", "CRLF", "ANY", "none"]

GS: Final = 0x1D
_CR: Final = 0x0D
_LF: Final = 0x0A
_DEL: Final = 0x7F


@dataclass(frozen=True, slots=True)
class Scan:
    """One complete scan as text: AIM prefix kept, GS as \\x1d."""

    data: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line that is not a scan: `reason` is too_long, control_byte or not_utf8."""

    reason: str
    length: int


Frame = Scan | Rejected


class ScanFramer:
    """Cuts bytes into `Scan`s and `Rejected` lines; never holds more than max_scan_bytes."""

    def __init__(
        self,
        suffix: Suffix = "CR",
        *,
        max_scan_bytes: int = 4096,
        inter_char_timeout_s: float = 0.1,
    ) -> None:
        if max_scan_bytes < 1:
            raise ValueError("max_scan_bytes must be positive")
        if inter_char_timeout_s <= 0:
            raise ValueError("inter_char_timeout_s must be positive")
        self._suffix: Suffix = suffix
        self._max = max_scan_bytes
        self._timeout_s = inter_char_timeout_s
        self._buf = bytearray()
        # Length of the current line once it went over the limit (its bytes are not kept).
        self._overflow = 0
        self._bad_control = False
        # CRLF mode: a CR was seen and the next byte decides whether it ends the line.
        self._pending_cr = False
        self._last_byte_s: float | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes of the unfinished line held in memory (never above max_scan_bytes)."""
        return len(self._buf)

    @property
    def pending(self) -> bool:
        """True while a line has started and not ended."""
        return bool(self._buf) or self._overflow > 0 or self._pending_cr or self._bad_control

    def deadline_s(self) -> float | None:
        """For suffix `none`: when `flush()` should be called, or None if nothing is pending."""
        if self._suffix != "none" or not self.pending or self._last_byte_s is None:
            return None
        return self._last_byte_s + self._timeout_s

    def feed(self, chunk: bytes, now_s: float = 0.0) -> list[Frame]:
        """Add bytes received at `now_s`; return the lines they complete, in order."""
        out: list[Frame] = []
        if not chunk:
            return out
        if self._suffix == "none":
            out.extend(self.flush(now_s))
            self._last_byte_s = now_s
            for byte in chunk:
                self._add(byte)
            return out
        for byte in chunk:
            self._step(byte, out)
        return out

    def flush(self, now_s: float) -> list[Frame]:
        """For suffix `none`: end the pending line if the inter-character timeout has passed."""
        deadline = self.deadline_s()
        if deadline is None or now_s < deadline:
            return []
        frame = self._end_line()
        return [] if frame is None else [frame]

    def _step(self, byte: int, out: list[Frame]) -> None:
        suffix = self._suffix
        if suffix == "CRLF":
            if self._pending_cr:
                self._pending_cr = False
                if byte == _LF:
                    self._emit(out)
                    return
                # A CR not followed by LF is a stray control byte inside the line.
                self._bad_control = True
            if byte == _CR:
                self._pending_cr = True
                return
            if byte == _LF:
                # A scanner set to CRLF always sends both; a bare LF still ends the line.
                self._emit(out)
                return
            self._add(byte)
            return
        if (
            (suffix == "CR" and byte == _CR)
            or (suffix == "LF" and byte == _LF)
            or (suffix == "ANY" and byte in {_CR, _LF})
        ):
            self._emit(out)
            return
        self._add(byte)

    def _add(self, byte: int) -> None:
        if byte != GS and (byte < 0x20 or byte == _DEL):
            self._bad_control = True
        if self._overflow:
            self._overflow += 1
            return
        if len(self._buf) >= self._max:
            self._overflow = len(self._buf) + 1
            self._buf.clear()
            return
        self._buf.append(byte)

    def _emit(self, out: list[Frame]) -> None:
        frame = self._end_line()
        if frame is not None:
            out.append(frame)

    def _end_line(self) -> Frame | None:
        overflow, bad_control, pending_cr = self._overflow, self._bad_control, self._pending_cr
        data = bytes(self._buf)
        self._buf.clear()
        self._overflow = 0
        self._bad_control = False
        self._pending_cr = False
        if overflow:
            return Rejected("too_long", overflow)
        if pending_cr:
            bad_control = True
            data += b"\r"
        if bad_control:
            return Rejected("control_byte", len(data))
        if not data:
            return None
        try:
            return Scan(data.decode("utf-8"))
        except UnicodeDecodeError:
            return Rejected("not_utf8", len(data))
