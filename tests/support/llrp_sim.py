"""The project's LLRP simulator on its own loop in a thread, and an independent SGTIN-96 decoder."""

from __future__ import annotations

from gateway.readers.llrp.scenario import Scenario
from gateway.readers.llrp.simulator import LlrpSimulator
from tests.support.own_loop import ServedInThread

# Independent SGTIN-96 partition table (TDS 1.13 table 14-2): company prefix digits per partition.
_COMPANY_DIGITS = {0: 12, 1: 11, 2: 10, 3: 9, 4: 8, 5: 7, 6: 6}
_COMPANY_BITS = {0: 40, 1: 37, 2: 34, 3: 30, 4: 27, 5: 24, 6: 20}


def sgtin96(epc_hex: str) -> tuple[str, str]:
    """(GTIN-14, serial) of an SGTIN-96, decoded here without the product's decoder."""
    bits = int(epc_hex, 16)
    assert bits >> 88 == 0x30
    partition = (bits >> 82) & 0b111
    company_bits = _COMPANY_BITS[partition]
    company = (bits >> (82 - company_bits)) & ((1 << company_bits) - 1)
    item_bits = 44 - company_bits
    item = (bits >> 38) & ((1 << item_bits) - 1)
    serial = bits & ((1 << 38) - 1)
    company_s = str(company).zfill(_COMPANY_DIGITS[partition])
    item_s = str(item).zfill(13 - _COMPANY_DIGITS[partition])
    body = item_s[0] + company_s + item_s[1:]
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10), str(serial)


class SimulatorThread(ServedInThread[LlrpSimulator]):
    """The LLRP simulator on its own event loop in a thread, so the test can read its record."""

    def __init__(self, scenario: Scenario, speed: float = 1.0) -> None:
        super().__init__(LlrpSimulator(scenario, port=0, speed=speed), name="llrp-simulator")
