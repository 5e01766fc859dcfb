"""The tree is the architecture: each layer imports only the layers below it, and no module
imports itself back through others (every import counts, those for type checking too).

    app.cli                      the processes
    app.http | workers           the edges (siblings: neither imports the other)
    app.turns                    the domain
    app.store | app.upstream     Redis, OpenRouter (siblings)
    app.ops                      logging, metrics
    app.settings, .tokens, .schemas, .errors, .ids, .clock, app    shared by all
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Layer of each package (the longest matching prefix wins), from the bottom up.
LAYERS: dict[str, int] = {
    "app": 0,
    "app.ops": 1,
    "app.store": 2,
    "app.upstream": 2,
    "app.turns": 3,
    "app.http": 4,
    "workers": 4,
    "app.cli": 5,
}
# Modules of the bottom layer: every other module directly in `app` is a package of a layer.
SHARED = {
    "app",
    "app.settings",
    "app.tokens",
    "app.schemas",
    "app.errors",
    "app.ids",
    "app.clock",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    paths = [*ROOT.joinpath("app").rglob("*.py"), *ROOT.joinpath("workers").rglob("*.py")]
    return {module_name(path): path for path in sorted(paths)}


MODULES = all_modules()


def imported(name: str, path: Path) -> set[str]:
    """The modules of ours that `name` imports, at run time or for type checking."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from app.store import keys` imports the module app.store.keys.
            targets = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t if t in MODULES else base for t in targets]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def package_of(name: str) -> str:
    if name in SHARED:
        return "app"
    return max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len)


def test_every_module_belongs_to_a_layer() -> None:
    stray = [name for name in MODULES if package_of(name) == "app" and name not in SHARED]
    assert not stray, f"modules directly in app/ that are no shared module: {stray}"


def wrong_imports(name: str, targets: set[str]) -> list[str]:
    """The imports of `name` that reach its own layer's siblings or a layer above it."""
    home = package_of(name)
    return sorted(
        target
        for target in targets
        if package_of(target) != home and LAYERS[package_of(target)] >= LAYERS[home]
    )


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_down_the_layers(name: str) -> None:
    wrong = wrong_imports(name, GRAPH[name])
    assert not wrong, f"{name} ({package_of(name)}) imports a layer at or above its own: {wrong}"


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                found.append([*trail[trail.index(target) :], target])
            elif target not in state:
                visit(target, [*trail, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return found


def test_no_module_imports_itself_back() -> None:
    found = circles(GRAPH)
    assert not found, "import circles: " + "; ".join(" -> ".join(c) for c in found)


# Frameworks of the edges: nothing below them may know of one.
EDGE_LIBRARIES = {"litestar": {"app.http"}, "uvicorn": {"app.cli"}, "arq": {"workers", "app.cli"}}


def libraries(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.partition(".")[0])
    return names


@pytest.mark.parametrize("library", sorted(EDGE_LIBRARIES))
def test_edge_frameworks_stay_at_their_edge(library: str) -> None:
    users = sorted(
        name
        for name, path in MODULES.items()
        if library in libraries(path) and package_of(name) not in EDGE_LIBRARIES[library]
    )
    assert not users, f"{library} imported outside {sorted(EDGE_LIBRARIES[library])}: {users}"


def test_the_checks_catch_what_they_guard_against() -> None:
    """The checks themselves, on imports that must fail them."""
    assert wrong_imports("app.store.sessions", {"app.turns.service"}) == ["app.turns.service"]
    assert wrong_imports("app.store.sessions", {"app.upstream.client"}) == ["app.upstream.client"]
    assert wrong_imports("app.ops.logs", {"app.http.context"}) == ["app.http.context"]
    assert wrong_imports("app.errors", {"app.ops.prometheus"}) == ["app.ops.prometheus"]
    assert wrong_imports("app.http.asgi", {"app.turns.service", "app.errors"}) == []
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert circles({"a": {"b"}, "b": set()}) == []
    assert "app.settings" in GRAPH["app.store.sessions"] | GRAPH["app.http.services"]
