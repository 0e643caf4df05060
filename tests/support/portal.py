"""The reader profile of a busy four-antenna portal (the RFID end-to-end test and bench)."""

from __future__ import annotations

_ANTENNA = "[[antennas]]\nport = {port}\npower_dbm = 27.0\n"


def portal_profile(
    name: str, *, tag_population: int, report_every_n_tags: int, keepalive_s: float
) -> str:
    """A generic-LLRP profile: session 2, dual target, four antennas at 27 dBm."""
    head = (
        f'name = "{name}"\nmodel = "generic-llrp"\n[reader]\nreader_mode = 0\nsession = 2\n'
        f'tag_population = {tag_population}\nsearch_mode = "dual-target"\n'
        f"report_every_n_tags = {report_every_n_tags}\nkeepalive_s = {keepalive_s}\n"
        "rssi_floor_dbm = -80.0\n"
    )
    return head + "".join(_ANTENNA.format(port=port) for port in range(1, 5))
