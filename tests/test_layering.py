"""The package's architecture: imports flow cli -> count/style -> runs -> data, with no cycle.

``instlib.config`` (every stage's settings), ``instlib.errors`` and the package root (its version) are leaves
every layer may import.
Every import counts, also those inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
# What each layer may import besides itself.
ALLOWED = {
    "cli": {"count", "style", "runs", "data", "leaf"},
    "count": {"runs", "data", "leaf"},
    "style": {"runs", "data", "leaf"},
    "runs": {"data", "leaf"},
    "data": {"leaf"},
    "leaf": {"leaf"},
}


def _module(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    part = module.split(".")[1] if "." in module else "root"
    return {"config": "leaf", "errors": "leaf", "root": "leaf"}.get(part, part)


def _imports(path: Path) -> set[str]:
    """The instlib modules ``path`` imports (``from instlib.x import y`` counts as instlib.x, or instlib.x.y
    when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("instlib")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("instlib"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


FILES = {_module(p): p for p in sorted(SRC.rglob("*.py"))}
MODULES = set(FILES)
GRAPH = {m: _imports(p) - {m} for m, p in FILES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layers(module):
    against = sorted(t for t in GRAPH[module]
                     if _layer(t) != _layer(module) and _layer(t) not in ALLOWED[_layer(module)])
    assert not against, f"{module} ({_layer(module)}) imports {against}: against cli -> count/style -> runs -> data"


def test_no_import_cycles():
    # Packages import their own modules (their __init__ re-exports); a module importing its package's
    # __init__ back is the only way a package forms a cycle, and it is caught here like any other.
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(GRAPH.get(m, ())):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, [*stack, t])
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_graph_is_real():
    """The checks above would pass on an empty graph: make sure they see the known edges."""
    assert "instlib.count.train" in GRAPH["instlib.cli"] or "instlib.count" in GRAPH["instlib.cli"]
    assert "instlib.config.count" in GRAPH["instlib.count.train"]
    assert "instlib.data.shard" in GRAPH["instlib.data.synth"]


def test_registries_and_the_names_settings_accept_agree():
    """Settings check names when they are made; the stages look them up in their registries."""
    from instlib.config import count, style
    from instlib.count.mix import MIXES
    from instlib.count.model import HEADS
    from instlib.count.schedules import KEEP, SCHEDULES
    from instlib.count.spec import NORMS
    from instlib.style.samplers import SAMPLERS
    from instlib.style.tiling import TILINGS
    from instlib.style.train import GEOMETRIES

    assert set(count.HEADS) == set(HEADS) and set(count.MIXES) == set(MIXES)
    assert set(count.NORMS) == {"data", *NORMS}
    assert set(count.SCHEDULES) == set(SCHEDULES) and set(count.KEEP) == set(KEEP)
    assert set(style.TILINGS) == set(TILINGS) and set(style.GEOMETRIES) == set(GEOMETRIES)
    assert set(style.SAMPLERS) == set(SAMPLERS)
