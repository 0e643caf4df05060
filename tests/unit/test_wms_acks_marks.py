"""WMS-ack bookkeeping and mark batching, the forwarder's pure pieces: table tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gateway.sync.marks import MARK_BATCH, MARK_DELAY_S, MarkBatch
from gateway.sync.wms_acks import MAX_UNACKED, WmsAcks


@dataclass(frozen=True, slots=True)
class Row:
    """An outbox row as the forwarder sees it."""

    seq: int
    id: str
    payload: bytes


def _row(seq: int) -> Row:
    return Row(seq, f"id-{seq}", b"{}")


def _waiting(*seqs: int) -> WmsAcks:
    acks = WmsAcks()
    for seq in seqs:
        acks.published(_row(seq), now_s=float(seq))
    return acks


def _resends(acks: WmsAcks) -> list[int]:
    seqs = []
    while (row := acks.next_resend()) is not None:
        seqs.append(row.seq)
    return seqs


# -- WMS acks -----------------------------------------------------------------------------------


def test_rows_read_again_skip_what_waits_or_is_acked() -> None:
    acks = _waiting(5)
    acks.acked_upto_seq(3, in_flight=[])
    assert [s for s in range(1, 8) if acks.still_unacked(_row(s))] == [4, 6, 7]


def test_the_first_waiting_row_asks_for_the_ack_timer() -> None:
    acks = WmsAcks()
    assert acks.published(_row(1), now_s=0.0) is True
    assert acks.published(_row(2), now_s=0.0) is False
    assert len(acks) == 2


@pytest.mark.parametrize(
    ("ack_ids", "ack_upto", "left"),
    [
        (("id-2",), None, [1, 3]),
        (("id-1", "id-3", "id-404"), None, [2]),  # an unknown id is harmless
        ((), 2, [3]),
        ((), 0, [1, 2, 3]),
        ((), 99, []),
    ],
)
def test_acks_release_waiting_rows(
    ack_ids: tuple[str, ...], ack_upto: int | None, left: list[int]
) -> None:
    acks = _waiting(1, 2, 3)
    if ack_upto is None:
        acks.acked_ids(ack_ids, in_flight=[])
    else:
        acks.acked_upto_seq(ack_upto, in_flight=[])
    assert len(acks) == len(left)
    acks.expire(1000.0, ack_timeout_s=30.0)
    assert _resends(acks) == left


def test_an_ack_that_overtakes_its_puback_is_remembered() -> None:
    acks = WmsAcks()
    acks.acked_ids(("id-5",), in_flight=[_row(5)])
    assert acks.published(_row(5), now_s=0.0) is False  # acked already: it does not wait
    assert len(acks) == 0
    assert acks.published(_row(5), now_s=0.0) is True  # remembered once only


def test_a_fresh_link_forgets_acks_for_rows_in_flight() -> None:
    acks = WmsAcks()
    acks.acked_upto_seq(5, in_flight=[_row(5)])
    acks.link_started()
    assert acks.published(_row(5), now_s=0.0) is True


@pytest.mark.parametrize(
    ("now_s", "resent"),
    [
        (30.9, []),
        (31.0, [1]),  # row 1 was PUBACKed at 1.0
        (32.5, [1, 2]),
    ],
)
def test_rows_not_acked_in_time_are_sent_again(now_s: float, resent: list[int]) -> None:
    acks = _waiting(1, 2, 3)
    acks.expire(now_s, ack_timeout_s=30.0)
    assert _resends(acks) == resent
    assert len(acks) == 3  # sent again, still waiting


def test_a_resend_acked_meanwhile_is_not_sent() -> None:
    acks = _waiting(1, 2)
    acks.expire(100.0, ack_timeout_s=30.0)
    acks.acked_ids(("id-1",), in_flight=[])
    assert acks.next_resend() == _row(2)
    assert acks.next_resend() is None


def test_the_ack_deadline_follows_the_oldest_send() -> None:
    acks = _waiting(1, 2)
    assert acks.deadline_s(30.0) == 31.0
    acks.expire(31.5, ack_timeout_s=30.0)  # row 1 sent again at 31.5: row 2 is the oldest now
    assert acks.deadline_s(30.0) == 32.0
    assert WmsAcks().deadline_s(30.0) is None


@pytest.mark.parametrize(
    ("wms", "waiting", "in_flight", "acked_upto", "limits"),
    [
        (False, 0, 0, 7, None),  # broker mode: no limit, nothing skipped
        (True, 0, 0, 0, (MAX_UNACKED, 0)),
        (True, 3, 10, 2, (MAX_UNACKED - 13, 2)),
    ],
)
def test_limits_on_new_rows(
    wms: bool, waiting: int, in_flight: int, acked_upto: int, limits: tuple[int, int] | None
) -> None:
    acks = WmsAcks()
    acks.acked_upto_seq(acked_upto, in_flight=[])
    for seq in range(acked_upto + 1, acked_upto + 1 + waiting):
        acks.published(_row(seq), now_s=0.0)
    limit, skip_upto = acks.limits(in_flight, wms=wms)
    if limits is None:
        assert skip_upto == -1
        assert limit > MAX_UNACKED
    else:
        assert (limit, skip_upto) == limits


# -- mark batching ------------------------------------------------------------------------------


def test_the_first_mark_and_a_full_batch_wake_the_writer() -> None:
    marks = MarkBatch()
    wakes = [marks.add_seq(seq, now_s=0.0) for seq in range(1, MARK_BATCH + 1)]
    assert wakes[0] is True
    assert not any(wakes[1:-1])
    assert wakes[-1] is True


@pytest.mark.parametrize(
    ("seqs", "now_s", "stopping", "due"),
    [
        (0, 10.0, False, False),  # nothing to write
        (1, 0.0, False, False),  # the first mark waits a few ms for others
        (1, MARK_DELAY_S, False, True),
        (1, 0.0, True, True),  # stopping: write now
        (MARK_BATCH, 0.0, False, True),  # a full batch: write now
    ],
)
def test_marks_are_due(seqs: int, now_s: float, stopping: bool, due: bool) -> None:
    marks = MarkBatch()
    for seq in range(1, seqs + 1):
        marks.add_seq(seq, now_s=0.0)
    assert marks.due(now_s, stopping) is due


def test_an_ack_starts_the_batch_clock_once() -> None:
    marks = MarkBatch()
    assert marks.deadline_s(now_s=1.0) is None
    marks.add_ack(("a",), None, now_s=1.0)
    marks.add_ack((), 7, now_s=2.0)
    assert marks.pending
    assert marks.deadline_s(now_s=3.0) == 1.0 + MARK_DELAY_S
