"""The reader profile of a busy four-antenna portal (the RFID end-to-end test and bench)."""

from __future__ import annotations

from pathlib import Path

from tests.support.daemon import write_config

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


def portal_config(
    tmp_path: Path,
    broker_port: int,
    reader_port: int,
    *,
    tag_population: int,
    report_every_n_tags: int,
    keepalive_s: float,
    absent_s: float = 2.0,
) -> Path:
    """A daemon config: receiving station door-3 behind a four-antenna portal at `reader_port`."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "test-portal.toml").write_text(
        portal_profile(
            "test-portal",
            tag_population=tag_population,
            report_every_n_tags=report_every_n_tags,
            keepalive_s=keepalive_s,
        )
    )
    return write_config(
        tmp_path / "gateway.toml",
        broker_port=broker_port,
        state_dir=tmp_path / "state",
        stations=[{"id": "door-3", "kind": "receiving", "absent_s": absent_s}],
        readers=[
            {
                "kind": "llrp",
                "id": "door-3-portal",
                "host": "127.0.0.1",
                "port": reader_port,
                "station": "door-3",
                "profile": "test-portal",
                "zones": {"outside": [1, 2], "inside": [3, 4]},
            },
        ],
        extra=f'[profiles]\ndir = "{profiles}"\n',
    )
