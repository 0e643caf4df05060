"""What the daemon benches share: a real buffer with a backlog, a daemon subprocess, /proc figures.

Everything measured here is measured from outside the daemon: its SQLite file read through a
read-only connection, its CPU and memory from /proc, its messages at the broker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from cpu_profile import profiled_pid, record_command  # noqa: E402

from gateway.buffer.store import Buffer  # noqa: E402
from gateway.domain.movements import Evidence, Item, Movement  # noqa: E402
from gateway.domain.wire import render_movement_json  # noqa: E402

SITE, GATEWAY = "milan-returns", "dock-3"
MOVEMENTS_TOPIC = f"returns/{SITE}/{GATEWAY}/movements"
BUFFER_FILE = "buffer.sqlite3"
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_FILL_BATCH = 5000


def movement(seq: int) -> Movement:
    """A realistic receipt (about 450 bytes as JSON), the same for a given `seq` every time."""
    at_s = 1_795_000_000.0 + seq
    return Movement(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench-{seq}")),
        type="receipt",
        occurred_at_s=at_s,
        station="door-3",
        direction="in",
        item=Item(
            epc=f"urn:epc:id:sgtin:0614141.812345.{seq}", gtin="80614141123458", serial=str(seq)
        ),
        evidence=Evidence(
            source="rfid",
            reader="door-3-portal",
            first_seen_s=at_s - 2.1,
            last_seen_s=at_s,
            reads=17,
            antennas=(1, 3),
            peak_rssi_dbm=-48.5,
        ),
        rma="RMA-000123",
        expected=True,
    )


def payload(movement_: Movement, seq: int) -> bytes:
    """The message the daemon publishes for a movement (its own renderer)."""
    return render_movement_json(movement_, seq, SITE, GATEWAY)


async def fill_backlog(path: Path, rows: int) -> None:
    """A real buffer file holding `rows` undelivered movements (the broker was away)."""
    buffer = await Buffer.open(path, max_bytes=8 * 1024**3, synchronous="NORMAL")
    try:
        done = (await buffer.stats()).last_seq
        while done < rows:
            batch = [movement(done + k + 1) for k in range(min(_FILL_BATCH, rows - done))]
            seqs = await buffer.commit_pipeline(batch, cursor=0, state=b"{}", render=payload)
            done = seqs[-1]
    finally:
        await buffer.close()


def write_config(
    workdir: Path, broker_port: int, *, window: int = 100, delivery: str = "broker"
) -> Path:
    """A daemon config with one receiving station, no readers, its state in `workdir/state`."""
    path = workdir / "gateway.toml"
    path.write_text(
        "\n".join(
            [
                "[gateway]",
                f'id = "{GATEWAY}"',
                f'site = "{SITE}"',
                f'state_dir = "{workdir / "state"}"',
                "[health]",
                "enabled = false",
                "[mqtt]",
                'host = "127.0.0.1"',
                f"port = {broker_port}",
                f"max_inflight = {window}",
                f'delivery = "{delivery}"',
                "[buffer]",
                "max_bytes = 8000000000",
                "[[stations]]",
                'id = "door-3"',
                'kind = "receiving"',
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    return path


class ChildProcess:
    """A measured subprocess: its output to a log file, SIGTERM (then SIGKILL) on exit."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.command = command
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_mono = 0.0

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Self:
        """Start the process (timing starts here)."""
        with self.log.open("ab") as log:
            self.started_mono = time.monotonic()
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=log, cwd=ROOT)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """SIGTERM and wait; SIGKILL if it does not stop in 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        """Whether the process runs."""
        return self.proc is not None and self.proc.poll() is None


class DaemonProcess(ChildProcess):
    """`gateway run --config FILE` as a subprocess, INFO logs as JSON lines to a file.

    With `profile`, run under py-spy (raw folded stacks to that file); `pid` is then the
    daemon's, and stopping it stops py-spy, which writes the file.
    """

    def __init__(self, config: Path, log: Path, profile: Path | None = None) -> None:
        command = [sys.executable, "-m", "gateway", "run", "--config", str(config)]
        command += ["--log-format", "json", "--log-level", "INFO"]
        super().__init__(record_command(profile, command) if profile else command, log)
        self.config = config
        self.profile = profile
        self._daemon_pid: int | None = None

    @property
    def pid(self) -> int:
        """The daemon's process id (py-spy's child when profiled)."""
        if self._daemon_pid is None:
            assert self.proc is not None
            self._daemon_pid = profiled_pid(self.proc) if self.profile else self.proc.pid
        return self._daemon_pid

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the daemon; when profiled, py-spy then writes its file and exits."""
        if self.profile and self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, RuntimeError):
                os.kill(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)  # py-spy writes its file once the daemon is gone
        super().__exit__(exc_type, exc, tb)


def pending(state_dir: Path) -> int | None:
    """Undelivered movements in the daemon's buffer (its counters row), or None if unreadable."""
    path = state_dir / BUFFER_FILE
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return None
    try:
        return int(conn.execute("SELECT pending FROM counters").fetchone()[0])
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid`, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of process `pid` in KiB: resident now, and the peak so far."""
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm


def median(values: list[float]) -> float:
    """The median (of alternated rounds)."""
    return float(statistics.median(values))
