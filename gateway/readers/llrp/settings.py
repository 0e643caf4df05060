"""Reader settings the LLRP driver applies; the lead builds them from a firmware profile."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LlrpSettings:
    """Antennas, power, air settings, report trigger and keepalive for one LLRP reader.

    `power_dbm_by_antenna` empty means the reader's maximum power on every antenna; a value is
    matched to the closest entry of the reader's power table. `search_mode` is Impinj's
    InventorySearchMode and turns on Impinj extensions (real Impinj readers only).
    `gpo_ports` are the outputs the station lights drive; `trigger_gpi`, when set, makes the
    inventory run while that input is high and `trigger_linger_s` after it falls, started by the
    ROSpec's GPI start trigger or, with `trigger_by_gateway`, by START_ROSPEC on GPI events (for
    readers without GPI start triggers). Ports the reader lacks (GPIOCapabilities) are refused.
    """

    antennas: tuple[int, ...] = (1, 2, 3, 4)
    power_dbm_by_antenna: tuple[tuple[int, float], ...] = ()
    mode_identifier: int | None = None
    session: int = 2
    tag_population: int = 4
    search_mode: int | None = None
    report_every_n_tags: int = 1
    keepalive_s: float = 10.0
    max_clock_skew_s: float = 300.0
    tag_filter_masks: tuple[str, ...] = ()
    connect_timeout_s: float = 10.0
    disconnect_timeout_s: float = 4.0
    max_pending_reads: int = 100_000
    gpo_ports: tuple[int, ...] = ()
    trigger_gpi: int | None = None
    trigger_linger_s: float = 0.0
    trigger_by_gateway: bool = False
