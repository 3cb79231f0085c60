"""storage/ is synchronous and pure of the server: it never imports trio or broker, and
takes time only from an injected clock."""

from __future__ import annotations

import ast
from pathlib import Path

import storage

FORBIDDEN_ROOTS = {"trio", "broker", "time", "asyncio"}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


def test_storage_imports_neither_trio_nor_broker_nor_a_clock() -> None:
    files = sorted(Path(storage.__file__).parent.glob("*.py"))
    assert len(files) > 5
    for path in files:
        assert not imported_roots(path) & FORBIDDEN_ROOTS, path.name
