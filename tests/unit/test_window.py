"""The go-back-N window as a pure state machine: table tests, no broker, no clock."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from gateway.sync.outbox import OutboxRowLike
from gateway.sync.window import FETCH_ROWS, Window


@dataclass(frozen=True, slots=True)
class Row:
    """An outbox row as the window sees it."""

    seq: int
    id: str
    payload: bytes


def _rows(first: int, last: int) -> list[Row]:
    return [Row(seq, f"id-{seq}", f"p{seq}".encode()) for seq in range(first, last + 1)]


class Broker:
    """Hands out packet ids and remembers which payload went out under each."""

    def __init__(self) -> None:
        self._mids = itertools.count(1)
        self.sent: dict[int, bytes] = {}

    def publish(self, payload: bytes) -> int:
        mid = next(self._mids)
        self.sent[mid] = payload
        return mid

    def mid_of(self, payload: bytes) -> int:
        return next(mid for mid, sent in self.sent.items() if sent == payload)


def _started(max_inflight: int, rows: list[Row], receive_maximum: int = 65535) -> Window:
    window = Window(max_inflight)
    window.start(receive_maximum, now_s=0.0)
    _, generation = window.read_from()
    window.fetched(rows, generation)
    return window


@pytest.mark.parametrize(
    ("max_inflight", "receive_maximum", "size"),
    [
        (100, 65535, 100),  # the configured window
        (100, 20, 20),  # the broker's Receive Maximum caps it
        (1, 65535, 1),
        (5, 0, 1),  # never below one
    ],
)
def test_a_fresh_link_opens_the_full_window(
    max_inflight: int, receive_maximum: int, size: int
) -> None:
    window = Window(max_inflight)
    window.start(receive_maximum, now_s=0.0)
    assert window.size == size
    assert window.in_flight == 0
    assert window.read_from() == (0, 0)


@pytest.mark.parametrize(
    ("size", "queued", "limit", "skip_upto", "sent_seqs"),
    [
        (3, 5, 100, -1, [1, 2, 3]),  # the window is the limit
        (10, 5, 100, -1, [1, 2, 3, 4, 5]),  # the queue runs dry first
        (10, 5, 2, -1, [1, 2]),  # the caller's limit (rows waiting for WMS acks)
        (3, 5, 100, 2, [3, 4, 5]),  # rows already acked are skipped, not counted
        (3, 5, 0, -1, []),
        (3, 5, -4, -1, []),  # a negative limit sends nothing
    ],
)
def test_send_rows_fills_the_window_in_seq_order(
    size: int, queued: int, limit: int, skip_upto: int, sent_seqs: list[int]
) -> None:
    window = _started(size, _rows(1, queued))
    broker = Broker()
    assert window.send_rows(broker.publish, limit, skip_upto) == len(sent_seqs)
    assert list(broker.sent.values()) == [f"p{s}".encode() for s in sent_seqs]
    assert window.rows_in_flight == len(sent_seqs)
    assert window.has_room() is (len(sent_seqs) < size)


def test_others_share_the_window_with_rows() -> None:
    window = _started(3, _rows(1, 5))
    window.sent_other(900, "returns/s/g/status")
    broker = Broker()
    assert window.send_rows(broker.publish, 100, -1) == 2
    assert window.in_flight == 3
    assert not window.has_room()
    assert window.answered(900, now_s=1.0) == "returns/s/g/status"
    assert window.has_room()
    assert not window.is_in_flight(900)


def test_answered_gives_the_row_and_whether_it_was_a_resend() -> None:
    window = _started(10, _rows(1, 2))
    broker = Broker()
    window.send_rows(broker.publish, 1, -1)
    again = Row(7, "id-7", b"p7")
    assert window.send_again(broker.publish, iter([again, None]).__next__) == 1
    assert [r.seq for r in window.first_sends()] == [1]
    assert window.answered(broker.mid_of(b"p7"), now_s=2.0) == (again, True)
    first = window.answered(broker.mid_of(b"p1"), now_s=3.0)
    assert first is not None
    assert not isinstance(first, str)
    assert (first[0].seq, first[1]) == (1, False)
    assert window.answered(12345, now_s=4.0) is None  # unknown mid: only progress is noted
    assert window.last_progress_s == 4.0


def test_send_again_stops_when_the_window_is_full() -> None:
    window = _started(2, [])
    broker = Broker()
    queue = _rows(1, 5)
    assert window.send_again(broker.publish, lambda: queue.pop(0) if queue else None) == 2
    assert len(queue) == 3


# -- probing: one row at a time after a link died with rows unanswered ---------------------------


@pytest.mark.parametrize(
    ("answered_before_loss", "size_on_next_link"),
    [
        (False, 1),  # nothing answered: the broker may have refused the first row and dropped us
        (True, 10),  # something answered: an ordinary loss, the full window again
    ],
)
def test_a_link_lost_with_rows_unanswered_probes_with_one_row(
    answered_before_loss: bool, size_on_next_link: int
) -> None:
    window = _started(10, _rows(1, 5))
    broker = Broker()
    window.send_rows(broker.publish, 100, -1)
    if answered_before_loss:
        window.answered(broker.mid_of(b"p1"), now_s=1.0)
    window.end()
    assert window.in_flight == 0
    window.start(65535, now_s=2.0)
    assert window.size == size_on_next_link


def test_a_probe_ends_when_the_broker_takes_a_row() -> None:
    window = _started(10, _rows(1, 5))
    broker = Broker()
    window.send_rows(broker.publish, 100, -1)
    window.end()
    window.start(65535, now_s=1.0)
    _, generation = window.read_from()
    window.fetched(_rows(1, 5), generation)
    assert window.size == 1
    window.send_rows(broker.publish, 100, -1)
    window.answered(broker.mid_of(b"p1"), now_s=2.0)
    window.accepted(receive_maximum=8)
    assert window.size == 8  # full again, within the broker's Receive Maximum
    window.accepted(receive_maximum=65535)
    assert window.size == 8  # not probing any more: unchanged


def test_a_link_lost_with_nothing_in_flight_does_not_probe() -> None:
    window = _started(10, [])
    window.end()
    window.start(65535, now_s=1.0)
    assert window.size == 10


# -- a refusal: pause, then go back to the oldest undelivered row --------------------------------


@pytest.mark.parametrize(
    ("now_s", "rows_in_flight", "due"),
    [
        (10.0, 0, False),  # still paused
        (14.9, 0, False),
        (15.0, 0, True),  # the pause is over and the window drained
        (20.0, 1, False),  # a row still in flight: wait for its answer
    ],
)
def test_a_refusal_goes_back_after_the_pause(now_s: float, rows_in_flight: int, due: bool) -> None:
    window = _started(10, _rows(1, 5))
    broker = Broker()
    window.send_rows(broker.publish, 2, -1)
    window.answered(broker.mid_of(b"p1"), now_s=10.0)
    window.refused(now_s=10.0, pause_s=5.0)
    if rows_in_flight == 0:
        window.answered(broker.mid_of(b"p2"), now_s=10.0)
    assert window.going_back
    assert window.needs_rows(stopping=False) is False  # no new rows while going back
    assert window.go_back_due(now_s) is due


def test_going_back_starts_again_at_the_oldest_row() -> None:
    window = _started(10, _rows(1, 5))
    broker = Broker()
    window.send_rows(broker.publish, 1, -1)
    window.answered(broker.mid_of(b"p1"), now_s=1.0)
    window.refused(now_s=1.0, pause_s=2.0)
    window.go_back()
    assert not window.going_back
    assert window.read_from()[0] == 0
    assert window.needs_rows(stopping=False)
    assert window.send_rows(broker.publish, 100, -1) == 0  # the old queue is dropped


def test_a_second_refusal_while_going_back_keeps_the_first_pause() -> None:
    window = _started(10, _rows(1, 5))
    window.refused(now_s=1.0, pause_s=5.0)
    window.refused(now_s=3.0, pause_s=100.0)
    assert window.go_back_due(6.0)


@pytest.mark.parametrize(
    ("restart_at_s", "going_back"),
    [
        (3.0, True),  # the pause outlives the link (mosquitto drops it after a refusal)
        (6.0, False),  # a link made after the pause starts normally
    ],
)
def test_a_refusal_pause_outlives_the_link(restart_at_s: float, going_back: bool) -> None:
    window = _started(10, _rows(1, 5))
    window.refused(now_s=1.0, pause_s=5.0)
    window.end()
    window.start(65535, now_s=restart_at_s)
    assert window.going_back is going_back
    assert window.size == 1  # a refusal always leads to a probe


# -- reading the outbox -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("read", "notified_during_read", "caught_up"),
    [
        (FETCH_ROWS, False, False),  # a full read: there may be more
        (FETCH_ROWS - 1, False, True),  # a short read: everything is read
        (0, False, True),
        (FETCH_ROWS - 1, True, False),  # rows committed while reading: read again
    ],
)
def test_a_short_read_means_caught_up(
    read: int, notified_during_read: bool, caught_up: bool
) -> None:
    window = Window(FETCH_ROWS * 2)
    window.start(65535, now_s=0.0)
    after_seq, generation = window.read_from()
    assert after_seq == 0
    if notified_during_read:
        window.notify()
    window.fetched(_rows(1, read), generation)
    if read:
        assert window.read_from()[0] == read
    broker = Broker()
    window.send_rows(broker.publish, FETCH_ROWS * 2, -1)  # empty the queue
    assert window.needs_rows(stopping=False) is not caught_up


@pytest.mark.parametrize(
    ("queued", "stopping", "needs"),
    [
        (0, False, True),
        (FETCH_ROWS // 2 - 1, False, True),
        (FETCH_ROWS // 2, False, False),  # enough queued
        (0, True, False),  # stopping: read nothing more
    ],
)
def test_rows_are_read_ahead_while_half_a_read_is_left(
    queued: int, stopping: bool, needs: bool
) -> None:
    window = Window(10)
    window.start(65535, now_s=0.0)
    window.notify()
    window.fetched(_rows(1, queued), generation=0)  # a stale generation: not caught up
    assert window.needs_rows(stopping) is needs


def test_fetched_keeps_only_what_the_filter_keeps() -> None:
    window = Window(10)
    window.start(65535, now_s=0.0)
    _, generation = window.read_from()

    def keep(row: OutboxRowLike) -> bool:
        return row.seq % 2 == 0

    window.fetched(_rows(1, 6), generation, keep)
    broker = Broker()
    assert window.send_rows(broker.publish, 100, -1) == 3
    assert list(broker.sent.values()) == [b"p2", b"p4", b"p6"]
    assert window.read_from()[0] == 6  # the next read starts after what was read, kept or not


# -- time ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("in_flight", "now_s", "stalled"),
    [
        (False, 100.0, False),  # nothing in flight never stalls
        (True, 10.0 + 4.9, False),
        (True, 10.0 + 5.0, True),
    ],
)
def test_stalled_when_nothing_is_answered_in_time(
    in_flight: bool, now_s: float, stalled: bool
) -> None:
    window = Window(10)
    window.start(65535, now_s=10.0)
    if in_flight:
        window.sent_other(1, "t")
    assert window.stalled(now_s, stall_timeout_s=5.0) is stalled


def test_deadlines_name_the_stall_and_the_end_of_a_pause() -> None:
    window = Window(10)
    window.start(65535, now_s=10.0)
    assert window.deadlines_s(stall_timeout_s=5.0) == []
    window.sent_other(1, "t")
    assert window.deadlines_s(stall_timeout_s=5.0) == [15.0]
    window.answered(1, now_s=12.0)
    window.refused(now_s=12.0, pause_s=30.0)
    assert window.deadlines_s(stall_timeout_s=5.0) == [42.0]
