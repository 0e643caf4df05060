"""A private mosquitto on a free loopback port, which the demo and the tests stop and start again.

Its config, persistence and log live in one folder of its own. Started as root, mosquitto drops
to its own user unless told `user root`, and then could not write a folder only root may write:
the folder is opened to all and the config keeps it root. Queues are unbounded
(`max_queued_messages 0`) so a backlog drained through it after an outage is never cut.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Self

from gateway.runtime.loopback import LOOPBACK, free_port, wait_for_port
from gateway.runtime.processes import end_process

__all__ = ["Mosquitto", "find_mosquitto"]

_DEBIAN_PATH = Path("/usr/sbin/mosquitto")


def find_mosquitto() -> str | None:
    """The mosquitto binary on PATH or where Debian installs it, else None."""
    found = shutil.which("mosquitto")
    if found is not None:
        return found
    return str(_DEBIAN_PATH) if _DEBIAN_PATH.exists() else None


class Mosquitto:
    """A private mosquitto with persistence in its own folder, so a restart keeps what it acked."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        extra_conf: str = "",
        binary: str | None = None,
    ) -> None:
        found = binary or find_mosquitto()
        if found is None:
            raise FileNotFoundError("mosquitto")
        self.binary = found
        self.host = LOOPBACK
        self.port = port or free_port()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        # mosquitto started as root drops to its own user and then cannot write a root-only folder.
        self.workdir.chmod(0o777)
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            "max_queued_messages 0",
            "max_inflight_messages 0",
            "log_type error",
            "log_type warning",
            f"log_dest file {self.log}",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n" + extra_conf, encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the broker and wait until it accepts connections (TimeoutError if it does not)."""
        if self.running:
            return
        self.proc = subprocess.Popen(  # noqa: S603 - our own binary and config, no shell
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, timeout_s=timeout_s, host=self.host)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the broker (SIGTERM saves its persistence; `kill` loses what it had not saved)."""
        if self.proc is not None:
            end_process(self.proc, kill=kill)
        self.proc = None

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Self:
        """Start the broker."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the broker."""
        self.stop()
