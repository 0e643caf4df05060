"""What every part of the running daemon shares: config, clocks, reader slots, profiles, tallies."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.buffer.store import BufferStats
from gateway.config import Config
from gateway.console.activity import RecentActivity
from gateway.console.tags import TagsInView
from gateway.profiles import Profile
from gateway.runtime.supervisor import ReaderSlot
from gateway.sync.topics import Topics

# Operators' log filters and the tests select the daemon's events by this component name.
LOG_COMPONENT = "app"


@dataclass(slots=True)
class Tallies:
    """What the daemon has counted and last measured: every part adds to it, the views read it."""

    counters: Counter[str] = field(default_factory=Counter)
    movements_by_type: Counter[str] = field(default_factory=Counter)
    stats: BufferStats | None = None
    kpi_snapshot: dict[str, object] | None = None
    broker_down_since: float | None = None
    reader_down_since: dict[str, float] = field(default_factory=dict)
    # (monotonic time, events so far) per reader over the rollback watch: the read rate.
    read_counts: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)
    # What the technicians' console shows: tags read lately, visits and movements made lately.
    tags_in_view: TagsInView = field(default_factory=TagsInView)
    activity: RecentActivity = field(default_factory=RecentActivity)


@dataclass(frozen=True, slots=True)
class Shared:
    """The daemon's fixed surroundings, made before `run()`; `profiles` changes on a switch."""

    config: Config
    slots: list[ReaderSlot]
    profiles: dict[str, Profile]
    topics: Topics
    tallies: Tallies
    clock: Callable[[], float]
    monotonic: Callable[[], float]
