"""Imports flow one way: guard/ at the bottom imports no app above it, and no module of the guard or the
trainer imports itself back through another (every import statement counts: lazy ones inside functions and
``TYPE_CHECKING`` ones too, since each is a dependency a reader must follow)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
APPS = ("guard", "trainer", "moderation", "policies", "evaluation", "ops", "guardsite")


def module_graph() -> dict[str, set[str]]:
    """{module: the project modules it imports}, migrations left out."""
    modules: dict[str, Path] = {}
    for app in APPS:
        for path in (REPO / app).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            if "migrations" in parts:
                continue
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def circles(graph: dict[str, set[str]], within: tuple[str, ...]) -> list[list[str]]:
    """Strongly connected groups of more than one module among the modules of the ``within`` apps (Tarjan)."""
    nodes = [n for n in graph if n.split(".")[0] in within]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target.split(".")[0] not in within:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in nodes:
        if node not in index:
            visit(node)
    return found


def test_the_guard_imports_no_app_above_it():
    above = sorted((module, target) for module, targets in module_graph().items() if module.split(".")[0] == "guard"
                   for target in targets if target.split(".")[0] != "guard")
    assert above == []


def test_neither_the_guard_nor_the_trainer_has_an_import_circle():
    assert circles(module_graph(), ("guard", "trainer")) == []
