"""A small fleet: 5 gateway daemons on one mosquitto, three shared MQTT 5 consumers, one store.

The full size (20 gateways x 5,000 scans) is `bench/bench_fleet.py`; this proves the same claims
in CI: nothing lost, nothing stored twice, every gateway's seq complete, every outbox empty.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fleet import run_fleet

pytestmark = pytest.mark.slow


async def test_five_gateways_three_shared_consumers_lose_and_double_nothing(
    tmp_path: Path,
) -> None:
    result = await run_fleet(tmp_path, gateways=5, scans_each=1_000, consumers=3, timeout_s=240)
    assert result.stored == result.expected == 5_000
    assert result.stored_twice == 0
    assert result.seq_gaps == {f"gw-{i:02d}": 0 for i in range(5)}
    assert result.pending_left == 0
    assert all(result.per_consumer), f"each consumer takes a share: {result.per_consumer}"
