"""The daemon caps glibc's malloc arenas, unless the environment already says how many."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return out.stdout.strip()


def test_the_cap_is_taken_by_glibc_and_the_environment_wins() -> None:
    code = "from gateway.runtime.malloc import limit_malloc_arenas; print(limit_malloc_arenas())"
    base = {"PATH": "/usr/bin:/bin"}
    assert _run(code, base) == "True"
    assert _run(code, base | {"MALLOC_ARENA_MAX": "4"}) == "False"
