"""The KPI state: fed by committed movements and publish acks, kept in the buffer on restart."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence

from gateway.buffer.keys import KPI_STATE_KEY
from gateway.buffer.store import Buffer
from gateway.daemon.shared import LOG_COMPONENT
from gateway.domain.kpi import CostFactors, KpiState
from gateway.domain.movements import Movement
from gateway.errors import InputError
from gateway.logs import get_logger

_log = get_logger(LOG_COMPONENT)

LATENCY_TRACKED_MAX = 20_000


class KpiTracker:
    """Adds committed movements to the KPIs and times each one from its evidence to its publish."""

    def __init__(
        self,
        factors: CostFactors,
        absent_s_by_station: Mapping[str, float],
        clock: Callable[[], float],
    ) -> None:
        self.state = KpiState(factors)
        self._factors = factors
        self._absent_s = dict(absent_s_by_station)
        self._clock = clock
        self._read_times: dict[int, float] = {}

    async def restore(self, buffer: Buffer) -> None:
        """Take up the KPI state the last run left; start empty if it is unreadable."""
        raw = await buffer.kv_get(KPI_STATE_KEY)
        if raw is None:
            return
        try:
            self.state = KpiState.restore(json.loads(raw), self._factors)
        except (InputError, ValueError):
            _log.error("kpi_state_unreadable_starting_empty")

    async def save(self, buffer: Buffer) -> None:
        """Keep the KPI state in the buffer for the next run."""
        await buffer.kv_put(KPI_STATE_KEY, json.dumps(self.state.snapshot()).encode())

    def add_committed(
        self, movements: Sequence[Movement], seqs: Sequence[int], now_s: float
    ) -> None:
        """Count movements just committed to the outbox under `seqs`."""
        for movement in movements:
            self.state.add(movement, now_s)
        if len(seqs) == len(movements):
            self._note_read_times(movements, seqs)

    def published(self, seq: int) -> None:
        """The broker took movement `seq`: record how long it took from its last read."""
        ready_s = self._read_times.pop(seq, None)
        if ready_s is not None:
            self.state.record_latency(max(0.0, self._clock() - ready_s))

    def _note_read_times(self, movements: Sequence[Movement], seqs: Sequence[int]) -> None:
        """Remember when each new movement's evidence was complete, for the latency KPI."""
        for movement, seq in zip(movements, seqs, strict=True):
            ready_s = movement.evidence.last_seen_s
            if movement.evidence.source == "rfid":
                # A visit can only end absent_s after its last read: that wait is by design.
                ready_s += self._absent_s.get(movement.station, 0.0)
            self._read_times[seq] = ready_s
        while len(self._read_times) > LATENCY_TRACKED_MAX:
            self._read_times.pop(next(iter(self._read_times)))
