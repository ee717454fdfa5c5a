"""The import graph of Guardsite's packages, read from the source with ``ast``.

Every ``import`` counts: at module level, inside functions, inside ``try`` or
``if`` blocks (a function-level import that hides a circle is still a circle).
Only ``if TYPE_CHECKING:`` blocks are left out, as they never run (``--type-checking`` counts them too).

    python scripts/import_graph.py                 # every circle (strongly connected component) of more than one module
    python scripts/import_graph.py moderation      # only the circles inside one package
    python scripts/import_graph.py --type-checking # annotation-only imports count too

``tests/foundation/test_import_graph.py`` asserts on the same graph.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("guardsite", "guard", "policies", "moderation", "trainer", "evaluation", "ops")


def module_files(root: Path = REPO, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, migrations left out (Django loads them, nothing imports them)."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root).with_suffix("")
            if "migrations" in relative.parts:
                continue
            parts = list(relative.parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(tree: ast.AST, module: str, is_package: bool, type_checking: bool) -> Iterable[str]:
    """Every dotted name an import statement of the tree may load (``from a import b`` yields ``a.b`` and ``a``)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if not type_checking and isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            yield prefix
            for alias in node.names:
                yield f"{prefix}.{alias.name}"
        stack.extend(ast.iter_child_nodes(node))


def build_graph(root: Path = REPO, packages: Iterable[str] = PACKAGES, type_checking: bool = False) -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in its body; ``type_checking`` adds the annotation-only ones)."""
    files = module_files(root, packages)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets: set[str] = set()
        for name in _imported_names(tree, module, path.name == "__init__.py", type_checking):
            # ``from moderation import conf`` names the module moderation.conf; ``from x import func`` names x.
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def circles(graph: dict[str, set[str]], within: str | None = None) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), optionally among ``within``'s modules."""

    def keep(module: str) -> bool:
        return within is None or module == within or module.startswith(within + ".")

    nodes = [m for m in graph if keep(m)]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:  # iterative, so deep graphs don't hit the recursion limit
        nonlocal counter
        work = [(start, iter(sorted(t for t in graph[start] if keep(t) and t in graph)))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(t for t in graph[child] if keep(t) and t in graph))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return sorted(found)


def upward_imports(graph: dict[str, set[str]], package: str, above: Iterable[str]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a module of ``package`` imports one of the packages ``above`` it."""
    above = tuple(above)
    return sorted(
        (module, target)
        for module, targets in graph.items()
        if module == package or module.startswith(package + ".")
        for target in targets
        if any(target == app or target.startswith(app + ".") for app in above)
    )


def main(argv: list[str]) -> int:
    flags = {a for a in argv[1:] if a.startswith("--")}
    positional = [a for a in argv[1:] if not a.startswith("--")]
    graph = build_graph(type_checking="--type-checking" in flags)
    within = positional[0] if positional else None
    found = circles(graph, within)
    for component in found:
        inner = {m: sorted(t for t in graph[m] if t in component) for m in component}
        print(f"circle of {len(component)}: " + ", ".join(component))
        for module, targets in inner.items():
            print(f"    {module} -> {', '.join(targets)}")
    print(f"{len(found)} circle(s)" + (f" in {within}" if within else ""))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
