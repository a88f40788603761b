"""The top-level packages depend one way (docs/architecture.md):

    models  <-  core  <-  app, workers  <-  cli          research -> models

Every import counts, function-level ones included, so that no room reaches back into one that
depends on it and the HTTP API never loads the worker (or torch)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "cli", "core", "models", "research", "workers")
# Package -> the project packages it may import.
ALLOWED = {
    "models": set(),
    "core": {"models"},
    "app": {"core", "models"},
    "workers": {"core", "models"},
    "cli": {"app", "core", "models", "workers"},
    "research": {"models"},
}


def _imports(path: Path, package: str) -> set[tuple[str, int]]:
    """(imported top-level name, line) for every import statement in a file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: within the file's own package
                found.add((package, node.lineno))
            elif node.module:
                found.add((node.module.split(".")[0], node.lineno))
    return found


def _edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for name, line in _imports(path, package):
                if name in PACKAGES and name != package:
                    where = f"{path.relative_to(REPO)}:{line}"
                    edges.setdefault((package, name), []).append(where)
    return edges


def test_every_import_between_packages_goes_the_allowed_way() -> None:
    wrong = {
        f"{a} -> {b}: {', '.join(where)}"
        for (a, b), where in _edges().items()
        if b not in ALLOWED[a]
    }
    assert not wrong, "\n".join(sorted(wrong))


def test_the_packages_have_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for a, b in _edges():
        graph[a].add(b)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start]
        )

    cyclic = [p for p in PACKAGES if reaches(p, p, {p})]
    assert not cyclic, f"import cycles through {cyclic}: {graph}"


def test_the_rules_are_themselves_one_way() -> None:
    # The allowed graph must be acyclic too, or the first test would permit a cycle.
    order = ["models", "core", "research", "app", "workers", "cli"]
    for package, allowed in ALLOWED.items():
        assert all(order.index(dep) < order.index(package) for dep in allowed), package
