"""Ending a child process we started (a private broker): politely first, for sure in the end."""

from __future__ import annotations

import subprocess

END_TIMEOUT_S = 10.0


def end_process(
    proc: subprocess.Popen[bytes], *, kill: bool = False, timeout_s: float = END_TIMEOUT_S
) -> None:
    """SIGTERM (or SIGKILL when `kill`) and wait; SIGKILL if it outlives `timeout_s`."""
    if proc.poll() is not None:
        return
    if kill:
        proc.kill()
    else:
        proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)
