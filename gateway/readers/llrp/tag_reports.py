"""A lean decoder for RO_ACCESS_REPORT tag reports, the one message a busy portal sends a lot of.

sllurp decodes every parameter into nested dicts through several layers of generic code: at a
few thousand reads a second that is a third of the daemon's CPU. This decoder reads the common
shape with `struct` only: TagReportData parameters holding an EPC (EPC-96 or EPCData) and TV
fields. Anything else (an OpSpec result, a custom parameter, RF survey data, an unknown TV type,
a length that does not add up) makes it answer None, and the driver hands that frame to sllurp
as before, so odd and broken frames are judged exactly as they were. The conformance tests
decode every recorded report with both and compare them field by field. No sllurp import here.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

RO_ACCESS_REPORT = 61
P_TAG_REPORT_DATA = 240
P_EPC_DATA = 241
TV_EPC_96 = 13

_PARAM_HEADER = struct.Struct("!HH")
_MSG_HEADER = struct.Struct("!HII")
_HEADER_LEN = 10
# TV parameter type -> value size in bytes (LLRP 1.0.1 section 16.2.7.3; C1G2 TVs of 16.3.1).
_TV_SIZES = {
    1: 2,  # AntennaID
    2: 8,  # FirstSeenTimestampUTC
    3: 8,  # FirstSeenTimestampUptime
    4: 8,  # LastSeenTimestampUTC
    5: 8,  # LastSeenTimestampUptime
    6: 1,  # PeakRSSI (signed)
    7: 2,  # ChannelIndex
    8: 2,  # TagSeenCount
    9: 4,  # ROSpecID
    10: 2,  # InventoryParameterSpecID
    11: 2,  # C1G2CRC
    12: 2,  # C1G2PC
    13: 12,  # EPC-96
    14: 2,  # SpecIndex
    15: 2,  # ClientRequestOpSpecResult
    16: 4,  # AccessSpecID
    17: 2,  # OpSpecID
    18: 4,  # C1G2SingulationDetails
    19: 2,  # C1G2XPCW1
    20: 2,  # C1G2XPCW2
}
_U16 = struct.Struct("!H").unpack_from
_U64 = struct.Struct("!Q").unpack_from
_S8 = struct.Struct("!b").unpack_from


class ReportedTag(NamedTuple):
    """One TagReportData as the reader sent it; a field the reader left out is None."""

    epc_hex: str  # uppercase; "" when EPCData carried no bytes
    antenna: int | None
    peak_rssi_dbm: int | None
    channel: int | None
    first_seen_us: int | None
    last_seen_us: int | None
    seen_count: int | None


def is_ro_access_report(frame: bytes | bytearray) -> bool:
    """Whether a whole LLRP frame is an RO_ACCESS_REPORT (by its header's type field)."""
    return len(frame) >= _HEADER_LEN and (_U16(frame, 0)[0] & 0x3FF) == RO_ACCESS_REPORT


def decode_tag_reports(frame: bytes) -> list[ReportedTag] | None:
    """The tags of a whole RO_ACCESS_REPORT frame, or None if it holds more than tag reports."""
    if len(frame) < _HEADER_LEN:
        return None
    word, length, _msg_id = _MSG_HEADER.unpack_from(frame)
    if (word & 0x3FF) != RO_ACCESS_REPORT or length != len(frame):
        return None
    tags: list[ReportedTag] = []
    pos = _HEADER_LEN
    end = len(frame)
    while pos < end:
        if end - pos < 4 or frame[pos] & 0x80:
            return None
        ptype, plen = _PARAM_HEADER.unpack_from(frame, pos)
        if (ptype & 0x3FF) != P_TAG_REPORT_DATA or plen < 4 or pos + plen > end:
            return None
        tag = _tag_report_data(frame, pos + 4, pos + plen)
        if tag is None:
            return None
        tags.append(tag)
        pos += plen
    return tags


def _tag_report_data(data: bytes, pos: int, end: int) -> ReportedTag | None:  # noqa: C901, PLR0912 - one branch per field kind
    epc96: str | None = None
    epc_data: str | None = None
    antenna = rssi = channel = first = last = count = None
    while pos < end:
        head = data[pos]
        if head & 0x80:
            tv_type = head & 0x7F
            size = _TV_SIZES.get(tv_type)
            if size is None or pos + 1 + size > end:
                return None
            at = pos + 1
            if tv_type == TV_EPC_96:
                epc96 = data[at : at + 12].hex().upper()
            elif tv_type == 1:
                antenna = _U16(data, at)[0]
            elif tv_type == 6:
                rssi = _S8(data, at)[0]
            elif tv_type == 7:
                channel = _U16(data, at)[0]
            elif tv_type == 2:
                first = _U64(data, at)[0]
            elif tv_type == 4:
                last = _U64(data, at)[0]
            elif tv_type == 8:
                count = _U16(data, at)[0]
            pos = at + size
            continue
        if end - pos < 4:
            return None
        ptype, plen = _PARAM_HEADER.unpack_from(data, pos)
        # Only EPCData is ours; OpSpec results and custom parameters go to sllurp.
        if (ptype & 0x3FF) != P_EPC_DATA or plen < 6 or pos + plen > end:
            return None
        epc_data = data[pos + 6 : pos + plen].hex().upper()
        pos += plen
    # sllurp lets EPC-96 win over EPCData when a report carries both; so do we.
    epc = epc96 if epc96 is not None else epc_data
    if epc is None:
        return None  # sllurp's dict has no EPC then; the mapping's rejection lives there
    return ReportedTag(epc, antenna, rssi, channel, first, last, count)
