"""The RFID baseline: bare sllurp, the fastest way its library allows, reading one LLRP reader.

`python bench/sllurp_client.py HOST PORT COUNT_FILE [--report-every-n N]` connects sllurp's own
LLRPReaderClient, starts inventory on antennas 1-4 with every tag content field asked for, and
sums the reads (TagSeenCount) its tag report callback is given. Nothing else: no journal, no
smoothing, no movements. A timer thread writes the running total to COUNT_FILE five times a
second, so the bench can see when it has caught up. SIGTERM ends it.

sllurp's `report_every_n_tags` also adds an AISpec stop trigger (its issue #218); the simulator
plays its scenario by time and ignores stop triggers, so both sides are sent the same reads.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path
from typing import Any

from sllurp.llrp import LLRPReaderClient, LLRPReaderConfig

# The same fields the daemon asks for. Only this dict comes from the gateway: the import is
# done before the timing starts, and nothing of the gateway runs while reads are counted.
from gateway.readers.llrp.client import ALL_TAG_CONTENT


def main() -> int:
    """Read until SIGTERM; the running total of reads goes to COUNT_FILE."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("count_file", type=Path)
    parser.add_argument("--report-every-n", type=int, default=64)
    args = parser.parse_args()
    config = LLRPReaderConfig(
        {
            "antennas": [1, 2, 3, 4],
            "tx_power": 0,
            "session": 2,
            "tag_population": 256,
            "mode_identifier": 0,
            "report_every_n_tags": args.report_every_n,
            "tag_content_selector": dict(ALL_TAG_CONTENT),
            "keepalive_interval": 2000,
            "reconnect": False,
            "start_inventory": True,
            "reset_on_connect": True,
        }
    )
    total = [0]

    def on_tags(_reader: object, tags: list[dict[str, Any]]) -> None:
        total[0] += sum(tag.get("TagSeenCount", 1) for tag in tags)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    client = LLRPReaderClient(args.host, args.port, config, timeout=5.0)
    client.add_tag_report_callback(on_tags)
    client.connect()
    tmp = args.count_file.with_suffix(".tmp")
    while True:
        stop = done.wait(0.2)
        tmp.write_text(str(total[0]))
        tmp.replace(args.count_file)
        if stop:
            break
    # sllurp's disconnect() can hang; the count is written and there is nothing else to keep.
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
