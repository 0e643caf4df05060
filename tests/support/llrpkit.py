"""llrpkit's LLRP emulator (written by others), mended where llrpkit 0.3.0 departs from LLRP."""

from __future__ import annotations

from typing import Any

from llrpkit.emulator.core import LLRPEmulator
from llrpkit.protocol import enums, messages


class CountingEmulator(LLRPEmulator):
    """llrpkit's emulator, counting the tag reads it sends.

    Three departures of llrpkit 0.3.0 from LLRP 1.0.1 that stop sllurp are mended here, as a
    reader behaves: ENABLE_EVENTS_AND_REPORTS has no response (llrpkit answers an ERROR_MESSAGE,
    which sllurp takes for the answer to its SET_READER_CONFIG); DELETE_ROSPEC with ROSpecID 0
    deletes every ROSpec (llrpkit refuses "no ROSpec 0"); and a ROSpec whose start trigger is
    Immediate becomes active once enabled (llrpkit waits for a START_ROSPEC sllurp never sends).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reads_sent = 0

    async def _handle_message(self, msg: Any) -> None:
        if isinstance(msg, messages.ENABLE_EVENTS_AND_REPORTS):
            return
        if isinstance(msg, messages.DELETE_ROSPEC) and msg.ro_spec_id == 0:
            self._rospecs.clear()
            self._sync_reporting()
            ok = messages.DELETE_ROSPEC_RESPONSE(llrp_status=self._status_ok())
            await self._send(ok, message_id=msg.message_id)
            return
        await super()._handle_message(msg)
        if isinstance(msg, messages.ENABLE_ROSPEC):
            entry = self._rospecs.get(msg.ro_spec_id)
            if entry is not None and entry[1] == "Enabled":
                trigger = entry[0].ro_boundary_spec.ro_spec_start_trigger
                if trigger.ro_spec_start_trigger_type == enums.ROSpecStartTriggerType.Immediate:
                    self._rospecs[msg.ro_spec_id] = (entry[0], "Active")
                    self._sync_reporting()

    async def _send(self, msg: Any, *, message_id: int = 0) -> None:
        await super()._send(msg, message_id=message_id)
        if isinstance(msg, messages.RO_ACCESS_REPORT):
            self.reads_sent += len(msg.tag_report_datas)
