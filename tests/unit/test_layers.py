"""The layers of the design, as an allowlist (Kafka's import-control): each package says what
it may import, and anything else fails. Relative imports are resolved and checked like the
absolute ones. The pure cores additionally import neither trio, nor time, nor os, nor
socket, nor any broker module that is not itself pure.

    tidelog.client.protocol   stdlib + its codecs
    tidelog.storage           stdlib + protocol (+ its checksums)
    tidelog.client            protocol + trio (+ murmur2)
    tidelog.broker            everything of tidelog's and the runtime dependencies
    bench                     the client and storage, never the broker's modules
"""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Folder -> the module name it is installed as.
PACKAGES = {"client": "tidelog.client", "storage": "tidelog.storage", "broker": "tidelog.broker"}
SCANNED = {**PACKAGES, "bench": "bench"}

RUNTIME_DEPENDENCIES = (
    "trio", "zstandard", "xxhash", "mmh3", "prometheus_client", "crc32c", "cramjam",
)  # fmt: skip
# Standard-library modules that bring the world in (clocks, processes, sockets, threads):
# a layer that must stay deterministic names them here.
WORLD = ("trio", "time", "os", "socket", "asyncio", "threading", "subprocess", "selectors")


@dataclass(frozen=True)
class Rule:
    """What modules under `prefix` may import: standard-library modules except `stdlib_denied`,
    the third-party roots in `third_party`, and tidelog modules under one of `project`."""

    prefix: str
    project: tuple[str, ...]
    third_party: tuple[str, ...] = ()
    stdlib_denied: tuple[str, ...] = ()
    any_third_party: bool = False


RULES = (
    Rule(
        "tidelog.client.protocol",
        project=("tidelog.client.protocol",),
        third_party=("cramjam", "crc32c", "zstandard"),
        stdlib_denied=WORLD,
    ),
    Rule(
        "tidelog.storage",
        project=("tidelog.client.protocol", "tidelog.storage"),
        third_party=("crc32c", "xxhash"),
        stdlib_denied=("trio", "time", "socket", "asyncio", "subprocess", "selectors"),
    ),
    Rule("tidelog.client", project=("tidelog.client",), third_party=("trio", "mmh3")),
    Rule("tidelog.broker", project=("tidelog",), third_party=RUNTIME_DEPENDENCIES),
    Rule("tidelog", project=("tidelog.client",)),
    Rule(
        "bench",
        project=(
            "bench",
            "tidelog.client",
            "tidelog.storage",
            "tidelog.broker.metadata",
            "tidelog.broker.controller",
            "tidelog.broker.config",
        ),
        any_third_party=True,
    ),
)

# Sans-IO cores: inputs in, outputs out, no world. Prefixes of module names.
PURE_CORES = (
    "tidelog.broker.groups.config",
    "tidelog.broker.groups.coordinator",
    "tidelog.broker.groups.effects",
    "tidelog.broker.groups.group",
    "tidelog.broker.groups.join",
    "tidelog.broker.groups.offsets",
    "tidelog.broker.groups.rebalance",
    "tidelog.broker.groups.records",
    "tidelog.broker.groups.responses",
    "tidelog.broker.groups.timers",
    "tidelog.broker.producer_state",
    "tidelog.broker.metadata",
    "tidelog.broker.partition",
    "tidelog.broker.controller.partitions",
    "tidelog.broker.controller.topics",
    "tidelog.broker.controller.raft.core",
    "tidelog.broker.controller.raft.log",
    "tidelog.broker.controller.raft.messages",
    "tidelog.broker.controller.raft.records",
    "tidelog.broker.controller.raft.replication",
    "tidelog.broker.controller.raft.state",
    "tidelog.broker.controller.raft.types",
    "tidelog.broker.controller.raft.wire",
)
# Plain values and validation that the pure cores share with the drivers.
PURE_VALUES = ("tidelog.broker.config", "tidelog.broker.topic_config", "tidelog.storage.config")
PURE_MAY_IMPORT = ("tidelog.client.protocol", *PURE_VALUES, *PURE_CORES)


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
    if not parts:
        return "tidelog"
    if parts[0] in PACKAGES:
        parts[0] = PACKAGES[parts[0]]
    return ".".join(parts)


def imports(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, absolute name) of every import in `path`, relative ones resolved; `from m import
    n` gives `m.n`."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                assert node.module is not None
                target = node.module
            else:
                base = module.split(".")
                drop = node.level - 1 if is_package else node.level
                anchor = base[: len(base) - drop] if drop else base
                target = ".".join([*anchor, node.module] if node.module else anchor)
            # `from package import name`: the name may be a module, so it is checked as one.
            for alias in node.names:
                yield node.lineno, target if alias.name == "*" else f"{target}.{alias.name}"


def _rule_for(module: str) -> Rule | None:
    matching = [rule for rule in RULES if _under(module, rule.prefix)]
    return max(matching, key=lambda rule: len(rule.prefix)) if matching else None


def _allowed(rule: Rule, imported: str) -> bool:
    root = imported.split(".")[0]
    if root in ("tidelog", "bench"):
        return any(_under(imported, allowed) for allowed in rule.project)
    if root in sys.stdlib_module_names or root == "__future__":
        return root not in rule.stdlib_denied
    return rule.any_third_party or root in rule.third_party


def _pure_allowed(imported: str) -> bool:
    root = imported.split(".")[0]
    if root == "tidelog":
        return any(_under(imported, allowed) for allowed in PURE_MAY_IMPORT)
    return root not in WORLD


def violations(root: Path) -> list[str]:
    problems = []
    paths = [root / "__init__.py"] if (root / "__init__.py").exists() else []
    for folder in SCANNED:
        paths.extend(sorted((root / folder).rglob("*.py")))
    for path in paths:
        module = module_name(path, root)
        rule = _rule_for(module)
        assert rule is not None, module
        pure = any(_under(module, core) for core in PURE_CORES)
        for lineno, imported in imports(path, module):
            where = f"{path.relative_to(root)}:{lineno}"
            if not _allowed(rule, imported):
                problems.append(f"{where} imports {imported} ({rule.prefix} may not)")
            elif pure and not _pure_allowed(imported):
                problems.append(f"{where} imports {imported} (a pure core may not)")
    return sorted(problems)


def test_every_package_imports_only_what_its_layer_allows() -> None:
    assert violations(ROOT) == []


def test_the_checker_reports_each_kind_of_violation(tmp_path: Path) -> None:
    files = {
        "__init__.py": "from tidelog.broker import server\n",
        "client/protocol/codec.py": "import trio\nimport zstandard\nfrom . import schema\n",
        "client/protocol/schema.py": "from ..producer import Producer\n",
        "client/producer.py": "import trio\nfrom tidelog.storage import log\n",
        "storage/log.py": "import os\nfrom tidelog.client.protocol import records\nimport trio\n",
        "broker/partition/state.py": "import time\nfrom ..server import Broker\n",
        "broker/server.py": "import trio\nimport requests\nfrom .partition import state\n",
        "bench/run.py": "import matplotlib\nfrom tidelog.broker import server\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert violations(tmp_path) == [
        "__init__.py:1 imports tidelog.broker.server (tidelog may not)",
        "bench/run.py:2 imports tidelog.broker.server (bench may not)",
        "broker/partition/state.py:1 imports time (a pure core may not)",
        "broker/partition/state.py:2 imports tidelog.broker.server.Broker (a pure core may not)",
        "broker/server.py:2 imports requests (tidelog.broker may not)",
        "client/producer.py:2 imports tidelog.storage.log (tidelog.client may not)",
        "client/protocol/codec.py:1 imports trio (tidelog.client.protocol may not)",
        "client/protocol/schema.py:1 imports tidelog.client.producer.Producer"
        " (tidelog.client.protocol may not)",
        "storage/log.py:3 imports trio (tidelog.storage may not)",
    ]


def test_relative_imports_resolve_against_the_installed_name(tmp_path: Path) -> None:
    path = tmp_path / "broker" / "groups" / "__init__.py"
    path.parent.mkdir(parents=True)
    path.write_text("from . import coordinator\nfrom ..partition import state\n")
    module = module_name(path, tmp_path)
    assert module == "tidelog.broker.groups"
    assert list(imports(path, module)) == [
        (1, "tidelog.broker.groups.coordinator"),
        (2, "tidelog.broker.partition.state"),
    ]


def test_pyproject_installs_every_package_folder() -> None:
    """The package list is explicit (the repository root is `tidelog`): a new subpackage must
    be named in pyproject.toml or the installed tree would lack it."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"tidelog"} | {
        module_name(init.parent / "__init__.py", ROOT)
        for folder in PACKAGES
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert set(declared["packages"]) == folders
    assert declared["package-dir"] == {"tidelog": "."}


def import_cycles(root: Path) -> list[list[str]]:
    """Groups of tidelog modules that import each other, directly or through others;
    imports inside `if TYPE_CHECKING:` count (a type-only cycle is still a tangle)."""
    paths = {
        module_name(path, root): path
        for folder in PACKAGES
        for path in sorted((root / folder).rglob("*.py"))
    }
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        targets = set()
        for _, imported in imports(path, module):
            while imported and imported not in paths:  # `from m import name` names m
                imported = imported.rpartition(".")[0]
            if imported and imported != module:
                targets.add(imported)
        graph[module] = targets
    return _strongly_connected(graph)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; only groups of two or more, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
            elif target not in index:
                index[target] = low[target] = len(index)
                stack.append(target)
                on_stack.add(target)
                work.append((target, iter(sorted(graph[target]))))
            elif target in on_stack:
                low[node] = min(low[node], index[target])
    return sorted(groups)


def test_no_import_cycles() -> None:
    assert import_cycles(ROOT) == []


def test_import_cycles_are_found_type_only_ones_too(tmp_path: Path) -> None:
    files = {
        "broker/cli.py": "from .serve import run\n",
        "broker/serve.py": "from tidelog.broker.cli import EXIT_OK\n",
        "broker/server.py": "from .handlers import routes\n",
        "broker/handlers/routes.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from tidelog.broker.server import Broker\n"
        ),
        "broker/handlers/__init__.py": "",
        "broker/leaf.py": "from .cli import main\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert import_cycles(tmp_path) == [
        ["tidelog.broker.cli", "tidelog.broker.serve"],
        ["tidelog.broker.handlers.routes", "tidelog.broker.server"],
    ]
