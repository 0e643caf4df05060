"""The domain's promise, read from its source: only the standard library, itself and the errors."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

DOMAIN = Path(__file__).resolve().parents[2] / "gateway" / "domain"
ALLOWED_OWN = ("gateway.domain", "gateway.errors")


def _foreign_imports(source: str) -> list[str]:
    """The modules `source` imports from outside the stdlib, gateway.domain and gateway.errors."""
    foreign: list[str] = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1:
                continue  # `from . import x` inside gateway/domain stays in the domain
            names = ["." * node.level + (node.module or "")]
        for name in names:
            top = name.split(".")[0]
            own = any(name == allowed or name.startswith(allowed + ".") for allowed in ALLOWED_OWN)
            if not own and top not in sys.stdlib_module_names:
                foreign.append(name)
    return foreign


def test_domain_modules_import_only_the_stdlib_the_domain_and_the_errors() -> None:
    sources = sorted(DOMAIN.glob("*.py"))
    assert len(sources) > 10, f"no domain modules found under {DOMAIN}"
    found = {
        source.name: foreign
        for source in sources
        if (foreign := _foreign_imports(source.read_text(encoding="utf-8")))
    }
    assert found == {}, f"domain modules reach outside: {found}"


def test_the_check_sees_adapters_gateway_modules_and_relative_escapes() -> None:
    source = (
        "import json\n"
        "import biip.gs1_element_strings\n"
        "from gateway.config import Config\n"
        "from gateway.domainx import y\n"
        "from .. import app\n"
        "from . import epc\n"
        "from gateway.domain.epc import decode_epc\n"
        "from gateway.errors import ParseError\n"
        "def f() -> None:\n"
        "    import sllurp\n"
    )
    assert _foreign_imports(source) == [
        "biip.gs1_element_strings",
        "gateway.config",
        "gateway.domainx",
        "..",
        "sllurp",
    ]
