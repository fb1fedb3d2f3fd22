"""Dependencies point one way: no import cycle between modules or packages, and the
platforms (pure) depend on nothing above them."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

from authproxy.demo import demo_platforms
from authproxy.platforms import REGISTRY
from authproxy.settings import PLATFORMS

PACKAGE = Path(__file__).resolve().parents[2] / "authproxy"
#: what a platform module may import from authproxy (design §9)
PLATFORM_MAY_IMPORT = {"authproxy.models", "authproxy.errors", "authproxy.query", "authproxy.settings"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The authproxy modules `path` imports anywhere in it (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from authproxy.x import y`: y may be a module
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return {name for name in found if name in modules}


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: imports_of(path, modules) - {name} for name, path in paths.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle in the graph, if there is one (depth-first search)."""
    state: dict[str, int] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        trail.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*trail[trail.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        trail.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def package_of(module: str) -> str:
    """authproxy.tokens.provider -> authproxy.tokens; a top-level module is its own unit."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_import_cycle_between_modules():
    assert cycle(graph()) is None


def test_no_import_cycle_between_packages():
    packages: dict[str, set[str]] = {}
    for module, targets in graph().items():
        unit = package_of(module)
        packages.setdefault(unit, set()).update(package_of(t) for t in targets if package_of(t) != unit)
    assert cycle(packages) is None


def test_platforms_import_only_the_layers_below_them():
    for module, targets in graph().items():
        if module.startswith("authproxy.platforms"):
            outside = {t for t in targets if not t.startswith("authproxy.platforms")}
            assert outside <= PLATFORM_MAY_IMPORT, f"{module} imports {outside - PLATFORM_MAY_IMPORT}"


def test_the_cycle_finder_finds_cycles():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_each_platform_is_named_once_and_everywhere():
    assert set(REGISTRY) == set(PLATFORMS)  # the registry and the config models agree
    for name, factory in REGISTRY.items():
        assert getattr(factory, "name", None) == name
    demo = {p.config("http://x")["platform"] for p in demo_platforms()}
    assert demo == set(PLATFORMS)  # the demo shows every platform


def test_the_layer_graph_is_not_empty():
    edges = graph()
    assert "authproxy.tokens.provider" in edges
    assert "authproxy.platforms.base" in edges["authproxy.platforms.shopee"]
    assert len(list(itertools.chain.from_iterable(edges.values()))) > 50
