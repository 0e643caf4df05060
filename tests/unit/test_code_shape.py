"""The shape rules of issue 10, read from the source: small modules, few methods, inward imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "gateway"
MAX_MODULE_LINES = 600
MAX_CLASS_METHODS = 25
# Tables transcribed from a standard (EPC TDS, GS1 General Specifications) are long by nature.
TRANSCRIBED_TABLES = {"domain/epc.py", "domain/gs1_rules.py"}
TESTS = PACKAGE.parent / "tests"
# Async tests run on pytest-asyncio; this module is the one place a test starts a loop by hand.
OWN_LOOP = "support/own_loop.py"
_LOOP_STARTERS = {"run", "Runner", "new_event_loop"}


def _modules() -> list[tuple[str, Path]]:
    return sorted((p.relative_to(PACKAGE).as_posix(), p) for p in PACKAGE.rglob("*.py"))


def _class_methods(tree: ast.Module) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            counts[node.name] = sum(
                isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) for child in node.body
            )
    return counts


def _imported(tree: ast.Module) -> set[str]:
    """Every imported module, with each dotted prefix ("gateway.daemon.x" adds "gateway.daemon")."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            full = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            full = [node.module]
        else:
            continue
        for module in full:
            parts = module.split(".")
            names.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return names


def _loops_started_by_hand(tree: ast.Module) -> list[int]:
    """Lines that start an event loop (asyncio.run, Runner, new_event_loop, run_until_complete)."""
    lines: list[int] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        func = node.func
        by_asyncio = isinstance(func.value, ast.Name) and func.value.id == "asyncio"
        if (by_asyncio and func.attr in _LOOP_STARTERS) or func.attr == "run_until_complete":
            lines.append(node.lineno)
    return sorted(lines)


def test_the_walk_sees_the_package() -> None:
    names = {name for name, _ in _modules()}
    assert {"daemon/lifecycle.py", "domain/epc.py", "buffer/store.py"} <= names


def test_no_module_over_the_line_limit() -> None:
    exempt = TRANSCRIBED_TABLES
    too_long = {
        name: lines
        for name, path in _modules()
        if name not in exempt
        and (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}


def test_no_class_over_the_method_limit() -> None:
    too_big = {
        f"{name}:{cls}": count
        for name, path in _modules()
        for cls, count in _class_methods(ast.parse(path.read_text(encoding="utf-8"))).items()
        if count > MAX_CLASS_METHODS
    }
    assert too_big == {}


def test_only_the_entry_points_import_the_daemon() -> None:
    # The daemon wires everything; nothing it wires may reach back for it.
    entry_points = {"cli.py"}
    importers = {
        name
        for name, path in _modules()
        if not name.startswith(("daemon/", "demo/"))
        and name not in entry_points
        and "gateway.daemon" in _imported(ast.parse(path.read_text(encoding="utf-8")))
    }
    assert importers == set()


def test_the_import_walk_sees_lazy_imports() -> None:
    tree = ast.parse("def f():\n    from gateway.daemon.views import view\nimport gateway.daemon\n")
    assert _imported(tree) == {"gateway", "gateway.daemon", "gateway.daemon.views"}


def test_the_method_count_sees_methods_of_every_kind() -> None:
    tree = ast.parse(
        "class A:\n    def a(self): ...\n    async def b(self): ...\n"
        "    @property\n    def c(self): ...\n    x = 1\n"
    )
    assert _class_methods(tree) == {"A": 3}


def test_tests_start_no_event_loop_outside_the_one_helper() -> None:
    files = sorted(TESTS.rglob("*.py"))
    assert len(files) > 20, "the walk found too few test files to trust"
    found = {
        path.relative_to(TESTS).as_posix(): lines
        for path in files
        if path.relative_to(TESTS).as_posix() != OWN_LOOP
        and (lines := _loops_started_by_hand(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert found == {}, f"use an async test (or {OWN_LOOP}) instead: {found}"
    assert _loops_started_by_hand(ast.parse((TESTS / OWN_LOOP).read_text(encoding="utf-8")))


def test_the_loop_walk_sees_every_starter_and_not_strings() -> None:
    tree = ast.parse(
        "import asyncio\nasyncio.run(f())\nwith asyncio.Runner() as r:\n    r.run(g())\n"
        "loop.run_until_complete(h())\nSCRIPT = 'asyncio.run(main())'\n"
    )
    assert _loops_started_by_hand(tree) == [2, 3, 5]
