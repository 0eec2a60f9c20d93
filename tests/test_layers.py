"""The package's imports point one way, down the data flow (see DESIGN.md).

Every module of ``src/imgclf`` is parsed (nothing is imported): a module may import from its
own layer or a lower one, never from a higher one; the import graph has no cycles; no module
imports from the package inside a function (the way a cycle is usually hidden); no private
name is imported from another module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "imgclf"

# top to bottom: a module imports from its own layer or the layers below it
LAYERS = [
    ("cli",),
    ("report",),
    ("inference", "evaluation", "audit", "explain", "tuning", "overview", "augment_preview"),
    ("training", "calibration", "tracking"),
    ("models", "data"),
    ("run", "config", "io", "errors", "metrics", "figures", "progress", "version", "backend"),
]
ROOT = {"imgclf", "imgclf.__main__"}  # the composition root: it wires the layers together


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _target(module: str, node: ast.ImportFrom) -> str | None:
    """The imgclf module an import statement reads from (``None``: not the package)."""
    if node.level == 0:
        return node.module if node.module and node.module.split(".")[0] == "imgclf" else None
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str):
    """(line, target module, names, inside a function) for each intra-package import."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    inside = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(n) for n in ast.walk(fn) if n is not fn)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _target(module, node)
            if target is not None:
                names = [a.name for a in node.names]
                # "from . import figures" reads the module imgclf.figures
                for name in names:
                    if f"{target}.{name}" in MODULES:
                        yield node.lineno, f"{target}.{name}", [], id(node) in inside
                        names = [n for n in names if n != name]
                if names or node.module:
                    yield node.lineno, target, names, id(node) in inside
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "imgclf":
                    yield node.lineno, alias.name, [], id(node) in inside


def layer_of(module: str) -> int | None:
    if module in ROOT:
        return None
    top = module.split(".")[1]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to DESIGN.md)")


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for module in MODULES:
        mine = layer_of(module)
        if mine is None:
            continue
        for line, target, _, _ in _imports(module):
            theirs = layer_of(target)
            if theirs is not None and theirs < mine:
                upward.append(f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} imports {target} "
                              f"(layer {LAYERS[theirs]} is above {LAYERS[mine]})")
    assert not upward, "\n".join(upward)


def test_no_import_inside_a_function():
    hidden = [f"{MODULES[m].relative_to(PACKAGE.parent)}:{line} imports {target} inside a function"
              for m in MODULES for line, target, _, inside in _imports(m) if inside]
    assert not hidden, "\n".join(hidden)


def test_no_private_name_crosses_modules():
    private = [f"{MODULES[m].relative_to(PACKAGE.parent)}:{line} imports {name} from {target}"
               for m in MODULES for line, target, names, _ in _imports(m)
               for name in names if name.startswith("_") and name != "__version__"]
    assert not private, "\n".join(private)


def _graph() -> dict[str, set[str]]:
    graph = {m: set() for m in MODULES}
    for module in MODULES:
        for _, target, _, _ in _imports(module):
            while target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in MODULES and target != module:
                graph[module].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt in ROOT or (nxt == "imgclf" and node != "imgclf"):
                continue  # a package's __init__ importing its own modules is not a cycle
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    # a package that re-exports its modules is read through them: drop package -> own-module edges
    for module in list(graph):
        if _is_package(module):
            graph[module] = {t for t in graph[module] if not t.startswith(module + ".")}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module, target, expected", [
    ("imgclf.training.trainer", ast.ImportFrom(module="evaluation", level=2, names=[]), "imgclf.evaluation"),
    ("imgclf.data", ast.ImportFrom(module="dataset", level=1, names=[]), "imgclf.data.dataset"),
    ("imgclf.run", ast.ImportFrom(module=None, level=1, names=[]), "imgclf"),
])
def test_relative_imports_are_read_as_python_reads_them(module, target, expected):
    assert _target(module, target) == expected


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The test above is not vacuous: a data module importing training is reported."""
    fake = tmp_path / "imgclf" / "data"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "bad.py").write_text("def f():\n    from ..training import train\n")
    monkeypatch.setitem(MODULES, "imgclf.data.bad", fake / "bad.py")
    found = list(_imports("imgclf.data.bad"))
    assert found == [(2, "imgclf.training", ["train"], True)]
    assert layer_of(found[0][1]) < layer_of("imgclf.data.bad")
