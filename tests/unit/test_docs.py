"""The README keeps what others rely on: the two commands first, a current config reference."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_config_reference_matches_the_models() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = readme.split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands[-2:] == ["scripts/demo", "scripts/test"] or commands[:3] == [
        "sh",
        "scripts/demo",
        "scripts/test",
    ], commands
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "scripts/test" in ci


def _module_map() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Architecture", 1)[1]
    return section.split("```", 2)[1]


def test_readme_module_map_names_every_package_and_module_of_the_tree() -> None:
    words = set(re.findall(r"[A-Za-z_][\w.]*", _module_map()))
    package = ROOT / "gateway"
    missing = sorted(
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if path.stem not in {"__init__", "__main__"}
        and path.stem not in words
        and path.name not in words
    )
    assert missing == []


def test_readme_module_map_names_no_module_that_is_gone() -> None:
    named = set(re.findall(r"\b([a-z_]+\.py)\b", _module_map()))
    existing = {path.name for path in (ROOT / "gateway").rglob("*.py")}
    assert named - existing == set()
