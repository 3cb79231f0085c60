"""Dependencies point one way (DESIGN.md): broker -> storage -> client.protocol, and
client -> client.protocol. Nothing imports broker; client.protocol and storage never import
trio. Checked on the source's import statements, like Kafka's import-control."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# package prefix -> module prefixes it must not import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "client.protocol": ("trio", "broker", "storage", "client.cli", "client.connection"),
    "storage": ("trio", "broker", "client.producer", "client.consumer", "client.admin"),
    "client": ("broker", "storage"),
    "bench": ("broker.",),
}


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _violations(root: Path) -> list[str]:
    problems = []
    for package in ("client", "storage", "broker", "bench"):
        for path in sorted((root / package).rglob("*.py")):
            module = _module_name(path, root)
            rules = [
                banned
                for prefix, banned in FORBIDDEN.items()
                if module == prefix or module.startswith(prefix + ".")
            ]
            for lineno, imported in _imports(path):
                for banned in rules:
                    for ban in banned:
                        hit = (
                            imported.startswith(ban)
                            if ban.endswith(".")
                            else (imported == ban or imported.startswith(ban + "."))
                        )
                        if hit:
                            problems.append(f"{path.relative_to(root)}:{lineno} imports {imported}")
    return problems


def test_dependencies_point_one_way() -> None:
    assert _violations(ROOT) == []


def test_checker_reports_forbidden_imports(tmp_path: Path) -> None:
    (tmp_path / "client" / "protocol").mkdir(parents=True)
    (tmp_path / "storage").mkdir()
    (tmp_path / "client" / "protocol" / "codec.py").write_text("import trio\n")
    (tmp_path / "storage" / "log.py").write_text(
        "from client.protocol import records\nfrom broker.server import Broker\n"
    )
    assert _violations(tmp_path) == [
        "client/protocol/codec.py:1 imports trio",
        "storage/log.py:2 imports broker.server",
    ]
