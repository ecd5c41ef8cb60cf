"""The package's imports run one way: from the command line down to the data, never back up, and no two rooms
import each other (a circle, however long). Read from the source (``ast``), so a lazy import inside a function counts
as much as one at the top, and so does one under ``if TYPE_CHECKING:`` (a type named from a higher room is an
arrow up all the same).

To see the graph this checks: ``python -m tests.test_layers`` prints each room's imports, layer by layer."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mlattack"

#: the rooms of ``mlattack`` (a sub-package or a top-level module), top layer first. A room may import rooms of its
#: own layer or below, never above. ``mlattack`` itself is the package's face (``__version__``).
LAYERS: list[tuple[str, ...]] = [
    ("__main__",),
    ("cli",),  # the `mlattack` command: parsers and the LightningCLI; hands `run` down to the tools
    ("study",),  # a command that runs other commands (through the `run` it is handed)
    ("evaluation",),  # the attack loop, selection, transfer evaluation
    ("report",),  # tables and figures across runs
    ("tracking",),  # MLflow schema and writers, network files and checkpoints
    ("rundir",),  # a run folder on disk: atomic writes, one writer, per-batch records, example chunks
    ("models", "defences"),  # networks, training module, preprocessing defences
    ("attacks",),
    ("data",),
    ("errors", "config_checks", "console", "quick", "resources", "scenarios", "intervals", "mlattack"),
]


def room(module: str) -> str:
    """``mlattack.tracking.store`` -> ``tracking``; ``mlattack`` -> ``mlattack``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: frozenset[str] | set[str] = frozenset()) -> set[str]:
    """The ``mlattack`` modules that ``path`` imports when it runs (relative imports resolved; ``from package import
    module`` is an import of that module, not of the package's face, when ``module`` is among ``modules``)."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {m for m in found if m == "mlattack" or m.startswith("mlattack.")}


def graph() -> dict[str, set[str]]:
    """Module -> the modules it imports."""
    paths = sorted(PACKAGE.rglob("*.py"))
    names = {module_name(p) for p in paths}
    return {module_name(p): imports(p, names) for p in paths}


def layer_of() -> dict[str, int]:
    return {name: i for i, rooms in enumerate(LAYERS) for name in rooms}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The circles of a directed graph (one per strongly connected component of more than one node, or a node that
    reaches itself), each as its sorted members."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1 or v in edges.get(v, ()):
                out.append(sorted(part))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return out


def room_graph(modules: dict[str, set[str]]) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = defaultdict(set)
    for a, targets in modules.items():
        rooms[room(a)].update(room(b) for b in targets if room(b) != room(a))
    return rooms


def test_every_room_has_a_layer():
    assert set(room_graph(graph())) - set(layer_of()) == set()


def test_no_import_runs_up_a_layer():
    layers = layer_of()
    upward = sorted(
        f"{a} -> {b}"
        for a, targets in graph().items()
        for b in targets
        if layers.get(room(b), -1) < layers.get(room(a), -1)
    )
    assert upward == []


def test_no_circle_between_rooms_or_between_modules():
    modules = graph()
    known = {m: {b for b in targets if b in modules} for m, targets in modules.items()}
    assert cycles(room_graph(modules)) == []
    assert cycles(known) == []


def test_the_check_sees_an_upward_import_and_a_circle(tmp_path):
    """The checks themselves: a relative import is resolved, an arrow up is found, and so is a circle."""
    pkg = tmp_path / "mlattack" / "data"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text(
        "from ..tracking import store, NAME\nif TYPE_CHECKING:\n    from mlattack.cli import run\nimport numpy\n"
    )
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "mlattack"
    try:
        found = imports(pkg / "x.py", {"mlattack.tracking.store"})
    finally:
        PACKAGE = saved
    assert found == {"mlattack.tracking.store", "mlattack.tracking", "mlattack.cli"}
    assert layer_of()["data"] > layer_of()["tracking"]  # so that import runs up
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


if __name__ == "__main__":
    rooms = room_graph(graph())
    for depth, names in enumerate(LAYERS):
        for name in names:
            print(f"{depth:2d} {name:12s} -> {', '.join(sorted(rooms.get(name, ())))}")
