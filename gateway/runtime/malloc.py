"""One malloc arena for the daemon: glibc gives every thread that allocates an arena of its own.

The daemon's threads (the event loop, SQLite's, the executor's) each kept a glibc arena with a few
MB of freed memory touched; on a 1-2 GB dock computer that is RSS for nothing. Python's small
objects come from its own allocator, so one arena costs little contention. `MALLOC_ARENA_MAX` in
the environment, if set, wins (glibc reads it at start; this only runs when it is absent).
"""

from __future__ import annotations

import ctypes
import os

_M_ARENA_MAX = -8  # glibc's mallopt parameter number for M_ARENA_MAX


def limit_malloc_arenas(arenas: int = 1) -> bool:
    """Cap glibc's malloc arenas before threads start; False where that is not glibc."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        # The process's own symbols, libc's among them: find_library would run ldconfig at start.
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
