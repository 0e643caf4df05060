"""LLRP general-purpose I/O: GPO writes, GPI events, GPIO capabilities; and a reader's outputs.

Frames are built and read here (no sllurp), so the driver, the simulator and the tests share one
encoding. `GpoLatch` owns the output states wanted of one reader across its sessions.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from gateway.errors import FrameError
from gateway.readers.llrp import frames as f

P_GPO_WRITE_DATA: Final = 219
P_GPI_PORT_CURRENT_STATE: Final = 225
P_GPI_EVENT: Final = 248
P_GPI_TRIGGER_VALUE: Final = f.P_GPI_TRIGGER_VALUE
# ROSpecStartTrigger type 3 (GPI) and ROSpecStopTrigger type 2 (GPI with timeout).
START_TRIGGER_GPI: Final = 3
STOP_TRIGGER_GPI_WITH_TIMEOUT: Final = 2


@dataclass(frozen=True, slots=True)
class GpioCapabilities:
    """How many GPI and GPO ports a reader says it has (GPIOCapabilities)."""

    gpis: int
    gpos: int


def gpo_write_body(states: Mapping[int, bool]) -> bytes:
    """A SET_READER_CONFIG body that only writes these GPO ports (no factory reset)."""
    params = b"".join(
        f.tlv(P_GPO_WRITE_DATA, struct.pack("!HB", port, 0x80 if on else 0))
        for port, on in sorted(states.items())
    )
    return b"\x00" + params


def gpo_write(msg_id: int, states: Mapping[int, bool]) -> bytes:
    """The whole SET_READER_CONFIG frame writing these GPO ports."""
    return f.Message(f.SET_READER_CONFIG, msg_id, gpo_write_body(states)).to_bytes()


def gpo_writes(set_config_body: bytes) -> dict[int, bool]:
    """The GPOWriteData of a SET_READER_CONFIG body, port to state; FrameError if malformed."""
    out: dict[int, bool] = {}
    try:
        for p in f.iter_params(set_config_body[1:]):
            if p.param_type == P_GPO_WRITE_DATA:
                port, data = struct.unpack_from("!HB", p.value)
                out[port] = bool(data & 0x80)
    except struct.error as exc:
        raise FrameError("llrp", f"GPOWriteData: {exc}") from exc
    return out


def gpi_event(msg_id: int, port: int, *, high: bool, utc_us: int) -> bytes:
    """READER_EVENT_NOTIFICATION carrying a GPIEvent: `port` went high or low."""
    data = f.tlv(f.P_UTC_TIMESTAMP, struct.pack("!Q", utc_us)) + f.tlv(
        P_GPI_EVENT, struct.pack("!HB", port, 0x80 if high else 0)
    )
    return f.Message(
        f.READER_EVENT_NOTIFICATION, msg_id, f.tlv(f.P_READER_EVENT_NOTIFICATION_DATA, data)
    ).to_bytes()


def gpio_capabilities_param(gpis: int, gpos: int) -> bytes:
    """The GPIOCapabilities parameter."""
    return f.tlv(f.P_GPIO_CAPABILITIES, struct.pack("!HH", gpis, gpos))


class GpoLatch:
    """The GPO states wanted of one reader; written to whichever session is connected.

    Lives on the event loop, across driver sessions: a reader that reconnects gets the states
    wanted now, not those of the moment it was lost.
    """

    def __init__(self, reader: str) -> None:
        self.reader = reader
        self._wanted: dict[int, bool] = {}
        self._write: Callable[[Mapping[int, bool]], None] | None = None
        self.writes = 0

    @property
    def wanted(self) -> dict[int, bool]:
        """A copy of the states wanted now, port to on/off."""
        return dict(self._wanted)

    def set(self, states: Mapping[int, bool]) -> None:
        """Want these port states; written now if a session is connected, else at its connect."""
        changed = {port: on for port, on in states.items() if self._wanted.get(port) != on}
        self._wanted.update(states)
        if changed and self._write is not None:
            self.writes += 1
            self._write(changed)

    def attach(self, write: Callable[[Mapping[int, bool]], None]) -> None:
        """A session is up: it writes from now on, starting with every state wanted."""
        self._write = write
        if self._wanted:
            self.writes += 1
            write(dict(self._wanted))

    def detach(self, write: Callable[[Mapping[int, bool]], None]) -> None:
        """The session that attached `write` is gone."""
        if self._write == write:
            self._write = None
