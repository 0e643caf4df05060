"""sync takes plain settings: no module of it imports the pydantic config; paho stays in the link.

Only mqtt.py (the link) and paho_client.py (its paho subclass) import paho.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gateway.sync

SYNC = Path(gateway.sync.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
    return names


def test_sync_does_not_import_the_config() -> None:
    modules = sorted(SYNC.glob("*.py"))
    assert len(modules) > 5  # the folder was found
    offenders = {
        path.name: sorted(n for n in _imports(path) if n in {"gateway.config", "pydantic"})
        for path in modules
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_only_the_link_modules_import_paho() -> None:
    importers = sorted(
        path.name
        for path in SYNC.glob("*.py")
        if any(n == "paho" or n.startswith("paho.") for n in _imports(path))
    )
    assert importers == ["mqtt.py", "paho_client.py"]
