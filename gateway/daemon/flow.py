"""The data path: journal raw events, feed them through the pipeline, commit movements."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from gateway.buffer import inbound
from gateway.buffer.store import Buffer, Gap
from gateway.daemon.expected import ExpectedLink
from gateway.daemon.feedback import DockFeedback
from gateway.daemon.kpis import KpiTracker
from gateway.daemon.recent import RecentJournal
from gateway.daemon.shared import LOG_COMPONENT, Shared
from gateway.domain.events import InputHeard, RawEvent, TagRead
from gateway.domain.movements import Evidence, Item, Movement, movement_id
from gateway.domain.pipeline import Pipeline, PipelinePlan
from gateway.errors import OutboxFull
from gateway.logs import get_logger
from gateway.readers.base import Ack, Receipt

_log = get_logger(LOG_COMPONENT)

INGEST_QUEUE_MAX = 50_000
# Visits close at the first tick after absent_s: the tick bounds read-to-publish latency.
PIPELINE_TICK_S = 0.025
JOURNAL_READ_EVERY_S = 1.0
PIPELINE_READ_ROWS = 2000
# Journaled events kept for the pipeline to take without reading them back (about 2 MB at most).
RECENT_EVENTS_MAX = 10_000
CHECKPOINT_EVERY_S = 1.0
# A reader whose input has not been heard for this long (a stuck thread) no longer holds visits
# open: they close as if it had been heard, late but never not at all.
HEARD_HOLD_MAX_S = 60.0

_Queued = tuple[RawEvent | InputHeard, Ack | None, Receipt | None]


async def restore_pipeline(buffer: Buffer, plan: PipelinePlan) -> tuple[Pipeline, int]:
    """The pipeline as the last checkpoint left it, and the journal cursor it had reached."""
    cursor, state = await buffer.load_checkpoint()
    snapshot = None
    if state is not None:
        try:
            snapshot = json.loads(state)
        except ValueError:
            _log.error("pipeline_state_unreadable_starting_empty")
    # The registry lives in the buffer: the pipeline works on a slice the link keeps loaded.
    return Pipeline(plan, snapshot, ExpectedLink.new_slice()), cursor


class PipelineFlow:
    """Raw events in through a queue and the journal; movements out into the outbox, in order."""

    def __init__(
        self,
        shared: Shared,
        buffer: Buffer,
        pipeline: Pipeline,
        *,
        cursor: int,
        journaled_id: int,
        render: Callable[[Movement, int], bytes],
        kpis: KpiTracker,
        on_committed: Callable[[], None],
        expected: ExpectedLink,
        feedback: DockFeedback | None = None,
    ) -> None:
        self.pipeline = pipeline
        self._feedback = feedback
        self.expected = expected
        self._shared = shared
        self._buffer = buffer
        self._render = render
        self._kpis = kpis
        self._on_committed = on_committed
        self._queue: asyncio.Queue[_Queued] = asyncio.Queue(maxsize=INGEST_QUEUE_MAX)
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        expected.attach(pipeline, self._lock)
        self._cursor = cursor
        # The last journal row written; the cursor never passes it.
        self._journaled_id = max(cursor, journaled_id)
        self._recent = RecentJournal(RECENT_EVENTS_MAX)
        self._checkpointed_cursor = cursor
        self._last_checkpoint_mono = 0.0
        self._checkpointed_state: bytes | None = None
        self._behind_checkpoint = False  # movements committed since the state was last saved
        self._state_dirty = False
        self._gaps_pending = True
        # Heard marks waiting for the pipeline to reach the journal id they follow, and the
        # latest mark the pipeline reached per reader: visits close only on time heard.
        self._heard_pending: deque[tuple[int, InputHeard]] = deque()
        self._heard: dict[str, float] = {}
        self.log_notices()

    @property
    def cursor(self) -> int:
        """The id of the last journal row the pipeline has taken."""
        return self._cursor

    def lag(self) -> dict[str, int]:
        """How far the pipeline is behind its input, now (not as of the last checkpoint).

        `queued_events`: read by a reader, not journaled yet; `rows_behind`: journaled, not yet
        through the pipeline. Both stay near zero on a gateway that keeps up.
        """
        return {
            "queued_events": self._queue.qsize(),
            "journaled_id": self._journaled_id,
            "cursor": self._cursor,
            "rows_behind": self._journaled_id - self._cursor,
        }

    async def ingest(
        self, event: RawEvent | InputHeard, ack: Ack | None = None, receipt: Receipt | None = None
    ) -> None:
        """Queue one item from a reader for the journal (waits while the queue is full).

        `ack` is called once the journal has committed the event (or refused it into a gap).
        `receipt` is recorded with it; a redelivery (`dup`) already recorded is only acked.
        """
        if isinstance(event, TagRead):
            # The console's live view: a few counters, no clock, no decoding.
            self._shared.tallies.tags_in_view.observe(event)
        await self._queue.put((event, ack, receipt))

    def heard_mono_s(self, mono_s: float) -> float | None:
        """Monotonic time up to which every reader sending heard marks is heard; None if none is.

        A reader not heard for HEARD_HOLD_MAX_S holds nothing back beyond that.
        """
        if not self._heard:
            return None
        return max(min(self._heard.values()), mono_s - HEARD_HOLD_MAX_S)

    async def journal_loop(self) -> None:
        """Append queued events to the journal in small batches, forever."""
        batch_s = self._shared.config.buffer.journal_batch_ms / 1000
        batch_max = self._shared.config.buffer.journal_batch_max
        while True:
            batch = [await self._queue.get()]
            if not self._queue.empty():
                # Busy: let a few milliseconds of reads gather into one transaction.
                await asyncio.sleep(batch_s)
            while len(batch) < batch_max:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            await self._append(batch)
            for _ in batch:
                self._queue.task_done()

    async def pipeline_loop(self) -> None:
        """Run the pipeline when new rows are journaled, and on every tick to close visits."""
        monotonic = self._shared.monotonic
        self._wakeup.set()  # a restart may have journaled rows past the checkpoint
        last_read = monotonic()
        while True:
            woken = True
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=PIPELINE_TICK_S)
            except TimeoutError:
                woken = False
            self._wakeup.clear()
            # A tick with no new events only closes visits: no need to ask SQLite.
            read_journal = woken or monotonic() - last_read >= JOURNAL_READ_EVERY_S
            if read_journal:
                last_read = monotonic()
            await self.step(read_journal=read_journal)

    async def step(self, *, read_journal: bool = True) -> None:
        """One pass: new journal rows through the pipeline, then checkpoint if anything changed."""
        async with self._lock:
            await self._step_locked(read_journal=read_journal)

    async def settle(self) -> None:
        """Wait until every queued event is journaled, then turn it into movements."""
        await self._queue.join()
        await self.step()

    async def drain(self) -> None:
        """At shutdown: journal what is still queued, run the pipeline once more, checkpoint."""
        leftovers: list[_Queued] = []
        while not self._queue.empty():
            leftovers.append(self._queue.get_nowait())
        if leftovers:
            await self._append(leftovers)
        await self.step()
        await self._checkpoint([])

    async def apply_expected_returns(self, body: dict[str, Any]) -> dict[str, Any]:
        """Change the expected-returns registry; durable before this returns."""
        # Each chunk is its own transaction in the buffer, taken between pipeline steps.
        return await self.expected.announce(body)

    def log_notices(self) -> list[str]:
        """Count and log what the pipeline noticed since the last call; stations it reversed at."""
        reversed_at: list[str] = []
        for notice in self.pipeline.take_notices():
            if notice.event == "passage_reversed":
                reversed_at.append(notice.station)
            self._shared.tallies.counters[f"notice_{notice.event}"] += 1
            fields = dict(notice.fields)
            self._shared.tallies.activity.add_notice(
                notice.event, notice.station, fields, self._shared.clock()
            )
            _log.info(notice.event, station=notice.station, **fields)
        return reversed_at

    async def _append(self, batch: list[_Queued]) -> None:
        counters = self._shared.tallies.counters
        batch = await self._drop_redelivered(batch)
        events = [item for item, _, _ in batch if not isinstance(item, InputHeard)]
        seen = [(r.mid, r.digest) for item, _, r in batch if r is not None]
        before = self._journaled_id
        if events:
            try:
                last_id = await self._buffer.append_raw(events, seen)
                self._journaled_id = last_id
                before = last_id - len(events)
                counters["raw_events_journaled"] += len(events)
                self._recent.add(before + 1, events)
            except OutboxFull as exc:
                counters["raw_events_refused"] += len(events)
                self._gaps_pending = True
                _log.warning(
                    "input_refused_buffer_full",
                    events=len(events),
                    needed_bytes=exc.needed_bytes,
                    budget_bytes=exc.budget_bytes,
                )
                before = self._journaled_id
                events = []
        # A mark follows the events queued before it: it counts once the pipeline took those.
        taken = 0
        for item, ack, _ in batch:
            if isinstance(item, InputHeard):
                self._heard_pending.append((min(before + taken, self._journaled_id), item))
            else:
                taken += 1 if events else 0
            if ack is not None:
                ack()  # journaled, or refused and recorded as a gap: the source may let go
        if any(not isinstance(item, InputHeard) for item, _, _ in batch):
            # Marks alone wait for the next tick (25 ms at most): an idle reader's marks must
            # not make the pipeline read the journal ten times a second.
            self._wakeup.set()

    async def _drop_redelivered(self, batch: list[_Queued]) -> list[_Queued]:
        """The batch without the redeliveries already journaled; those are acknowledged again."""
        dups = {r.mid for _, _, r in batch if r is not None and r.dup}
        if not dups:
            return batch
        recorded = await inbound.recorded(self._buffer, sorted(dups))
        kept: list[_Queued] = []
        for queued in batch:
            _, ack, receipt = queued
            if receipt is not None:
                if receipt.dup and recorded.get(receipt.mid) == receipt.digest:
                    self._shared.tallies.counters["inbound_redelivered_skipped"] += 1
                    _log.info("redelivery_skipped", mid=receipt.mid, reader=queued[0].reader)
                    if ack is not None:
                        ack()
                    continue
                # An earlier copy in this batch: the transaction records it before this one.
                recorded[receipt.mid] = receipt.digest
            kept.append(queued)
        return kept

    def _reach_heard(self) -> None:
        """Apply the heard marks whose preceding events the pipeline has now taken."""
        pending = self._heard_pending
        while pending and pending[0][0] <= self._cursor:
            mark = pending.popleft()[1]
            if mark.mono_s is None:
                self._heard.pop(mark.reader, None)
            else:
                self._heard[mark.reader] = mark.mono_s

    async def _step_locked(self, *, read_journal: bool) -> None:
        monotonic = self._shared.monotonic
        movements: list[Movement] = []
        while read_journal:
            rows, complete = self._recent.take(self._cursor, PIPELINE_READ_ROWS)
            if not rows:  # not journaled by this process lately: ask SQLite
                rows = await self._buffer.read_raw(self._cursor, PIPELINE_READ_ROWS)
                complete = len(rows) < PIPELINE_READ_ROWS
            await self.expected.prefetch([event for _, event in rows])
            for journal_id, event in rows:
                movements.extend(self.pipeline.feed(event, monotonic()))
                self._cursor = journal_id
            if complete or len(movements) >= PIPELINE_READ_ROWS:
                break
        if not read_journal:
            await self.expected.prefetch([])  # visits closing now may need what was dropped
        self._reach_heard()
        mono_s = monotonic()
        heard_s = self.heard_mono_s(mono_s)
        movements.extend(self.pipeline.tick(mono_s, self._shared.clock(), heard_s))
        gaps: list[Gap] = []
        if self._gaps_pending:
            gaps = await self._buffer.unreported_gaps()
            self._gaps_pending = False
            movements.extend(_gap_movement(self._shared.config.gateway.id, gap) for gap in gaps)
        reversed_at = self.log_notices()
        now = monotonic()
        due = (
            self._cursor != self._checkpointed_cursor or self._behind_checkpoint
        ) and now - self._last_checkpoint_mono >= CHECKPOINT_EVERY_S
        if movements or due or self._state_dirty:
            await self._checkpoint(movements, gaps, advance=bool(due or self._state_dirty or gaps))
        if self._feedback is not None and (movements or reversed_at):
            # Decided on what is committed: a light never says more than the outbox holds.
            await self._feedback.committed(movements, reversed_at)

    async def _checkpoint(
        self, movements: list[Movement], gaps: Sequence[Gap] = (), *, advance: bool = True
    ) -> None:
        """Commit movements; move the cursor and the pipeline state on when due or asked to.

        Serialising the state of every open visit is the costliest part of a busy portal's
        pipeline, so between checkpoints (at most CHECKPOINT_EVERY_S apart) movements are
        committed at once with the last checkpoint unchanged. A crash in between re-derives
        them from that checkpoint with the same ids, and the outbox keeps one copy of each.
        Receipts that consumed expected-returns lines always move the checkpoint on: the lines
        are written with them, and a re-derivation against consumed lines could consume more.
        """
        # Receipts and their RMA lines: one transaction, so a crash keeps both or neither.
        also = self.expected.updates_writer()
        saved = self._checkpointed_state
        if advance or saved is None or also is not None:
            advance = True
            state = json.dumps(self.pipeline.snapshot(), separators=(",", ":")).encode()
            cursor = self._cursor
        else:
            state, cursor = saved, self._checkpointed_cursor
        seqs = await self._buffer.commit_pipeline(
            movements,
            cursor=cursor,
            state=state,
            render=self._render,
            gaps_reported=[gap.gap_id for gap in gaps],
            also=also,
        )
        if advance:
            self._last_checkpoint_mono = self._shared.monotonic()
            self._checkpointed_cursor = cursor
            self._checkpointed_state = state
            self._state_dirty = False
            self._behind_checkpoint = False
        else:
            self._behind_checkpoint = True
        if seqs:
            tallies = self._shared.tallies
            tallies.activity.add_movements(movements, seqs)
            for movement in movements:
                tallies.movements_by_type[movement.type] += 1
            self._kpis.add_committed(movements, seqs, self._shared.clock())
            tallies.counters["movements"] += len(seqs)
            self._on_committed()


def _gap_movement(gateway_id: str, gap: Gap) -> Movement:
    return Movement(
        id=movement_id(gateway_id, f"gap:{gap.gap_id}", "", "gap", gap.first_at_s),
        type="gap",
        occurred_at_s=gap.last_at_s,
        station="",
        item=Item(code=f"gap-{gap.gap_id}"),
        evidence=Evidence(
            source="system",
            reader="buffer",
            first_seen_s=gap.first_at_s,
            last_seen_s=gap.last_at_s,
        ),
        detail=(
            ("refused_events", str(gap.refused_events)),
            ("reason", gap.reason),
        ),
    )
