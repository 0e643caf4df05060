"""The daemon under py-spy: its command, its pid, its CPU shares grouped by what the code does."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

# Shares of the profile: a frame belongs to the first group whose marker it contains, leaf first.
_PROFILE_GROUPS = (
    ("sllurp (socket loop, messages other than tag reports)", ("sllurp/",)),
    (
        "LLRP framing, lean tag-report decode, mapping",
        ("llrp/tag_reports", "llrp/client", "llrp/driver", "llrp/mapping"),
    ),
    ("SQLite (journal, outbox, checkpoint)", ("sqlite3", "aiosqlite", "gateway/buffer/")),
    ("MQTT (paho, forwarder)", ("paho/", "gateway/sync/")),
    ("pipeline (smoothing, direction, EPC, rules, render)", ("gateway/domain/",)),
    (
        "asyncio loop, queues, wiring",
        ("asyncio/", "gateway/app.py", "gateway/runtime/", "gateway/daemon/"),
    ),
    ("console's tags-in-view table", ("gateway/console/",)),
)
_IMPORTING = "importlib._bootstrap"
# Where a frame's file lives, cut to what names it: the package path or the stdlib module.
_PATH_PREFIX = re.compile(r"^.*?(?:site-packages/|/python3\.\d+/|/wt-[^/]+/|/work/[^/]+/)")


def py_spy() -> str | None:
    """py-spy installed beside this interpreter (the `bench` extra), or None."""
    return shutil.which("py-spy", path=str(Path(sys.executable).parent))


def record_command(output: Path, command: list[str]) -> list[str]:
    """`command` run under py-spy: raw folded stacks of every thread, GIL holder only, 200 Hz."""
    return [
        py_spy() or "py-spy", "record", "--format", "raw", "--rate", "200", "--threads",
        "--nonblocking", "--gil", "--output", str(output), "--", *command,
    ]  # fmt: skip


def profiled_pid(proc: subprocess.Popen[bytes]) -> int:
    """The pid of the process py-spy (`proc`) started: the one to measure and to stop."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        with contextlib.suppress(OSError):
            pids = children.read_text().split()
            if pids:
                return int(pids[0])
        time.sleep(0.05)
    raise RuntimeError("py-spy started no process")


def profile_shares(path: Path, *, without_startup: bool = False) -> dict[str, float]:
    """CPU shares by group from py-spy's raw (folded) output; idle stacks left out.

    With `without_startup`, the start-up imports are left out too (not their own line).
    """
    totals: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        if _idle(frames) or (without_startup and any(_IMPORTING in f for f in frames)):
            continue
        totals[_group(frames)] += int(count_text)
    busy = sum(totals.values()) or 1
    return {name: round(100 * n / busy, 1) for name, n in totals.most_common()}


def top_functions(path: Path, count: int = 12) -> dict[str, float]:
    """The leaf functions holding the GIL most often, as % of busy samples (idle left out)."""
    leaves: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        if _idle(frames) or len(frames) < 2 or any(_IMPORTING in f for f in frames):
            continue
        leaves[_short(frames[-1])] += int(count_text)
    busy = sum(leaves.values()) or 1
    return {name: round(100 * n / busy, 1) for name, n in leaves.most_common(count)}


def thread_names(path: Path) -> dict[int, str]:
    """Thread id -> name, from py-spy's raw output ("thread (TID): NAME;frame;...")."""
    names: dict[int, str] = {}
    for line in path.read_text().splitlines():
        head = line.split(";", 1)[0]
        if head.startswith("thread (") and "): " in head:
            tid_text, name = head[len("thread (") :].split("): ", 1)
            if tid_text.isdigit():
                names[int(tid_text)] = name.split(" ")[0]
    return names


def _short(frame: str) -> str:
    """ "func (path/to/site-packages/pkg/mod.py:12)" -> "func (pkg/mod.py)"."""
    name, _, where = frame.partition(" (")
    where = _PATH_PREFIX.sub("", where.rstrip(")").rsplit(":", 1)[0])
    if where == "<string>":
        return f"{name} (generated code: a NamedTuple's or dataclass's __new__/__init__)"
    return f"{name} ({where})" if where else name


def _idle(frames: list[str]) -> bool:
    leaf = frames[-1]
    return any(
        marker in leaf
        for marker in (
            "select (selectors",
            "poll (selectors",
            "wait (threading",
            "_wait_for_tstate",
        )
    ) or ("(select" in leaf and "sllurp" not in leaf)


def _group(frames: list[str]) -> str:
    if any(_IMPORTING in frame for frame in frames):
        return "start-up imports (before inventory, outside the reads/CPU-s figure)"
    if len(frames) == 1:  # "thread (TID)" alone: C code holding the GIL, no Python frame
        return "no Python frame (C code holding the GIL)"
    for frame in reversed(frames):
        for name, markers in _PROFILE_GROUPS:
            if any(m in frame for m in markers):
                return name
    return "other"
