"""The house rules of docs/architecture.md, read from the code itself: imports flow one way between rooms, no
import circle (function-level imports and package `__init__` edges count), `ui/` imports no TensorFlow, pages stay
thin, and no private internal of Streamlit or Keras is reached for."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Each room may import the rooms below it in this order (docs/architecture.md); never one above.
ROOM_ORDER = ["ui", "poc.cli", "poc.launch", "poc.train", "poc.analysis", "poc.inference", "poc.runs", "poc.config",
              "poc.models", "poc.explain", "poc.data", "poc.device", "poc.errors"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    files = [*REPO.glob("poc/**/*.py"), *REPO.glob("ui/**/*.py")]
    return {_module_name(p): p for p in files}


def _targets(node: ast.AST, module: str, path: Path, modules: dict[str, Path]) -> list[str]:
    """The project module each name of an import statement names: `from p.q import r` is p.q.r when r is a
    module, else p.q (a package's __init__ when p.q is a package: an edge like any other)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            package = package[:len(package) - (node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    return sorted({n for n in names if n in modules and n != module})


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):  # every level: function bodies too
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[module] |= set(_targets(node, module, path, modules))
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), or a module importing itself."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def room_of(module: str) -> str:
    for room in sorted(ROOM_ORDER, key=len, reverse=True):
        if module == room or module.startswith(room + "."):
            return room
    return module  # poc itself, poc.__main__


def test_the_cycle_finder_finds_a_circle_through_a_function_level_import_and_a_package_init():
    graph = {"p": {"p.a"}, "p.a": {"p.b"}, "p.b": {"p"}, "q": set()}  # p/__init__ -> a -> b -> p/__init__
    assert circles(graph) == [["p", "p.a", "p.b"]]
    source = "def f():\n    from poc.runs import store\n    from poc.models import build\n"
    nodes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)]
    modules = dict.fromkeys(["poc", "poc.runs", "poc.runs.store", "poc.models", "poc.models.builders", "poc.cli"])
    found = [_targets(n, "poc.cli", REPO / "poc" / "cli.py", modules) for n in nodes]
    assert found == [["poc.runs.store"], ["poc.models"]]  # a module, and a package's __init__


def test_poc_and_ui_have_no_import_circle():
    assert circles(import_graph()) == []


def test_rooms_import_only_rooms_below_them():
    upward = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                    if room_of(a) in ROOM_ORDER and room_of(b) in ROOM_ORDER
                    and ROOM_ORDER.index(room_of(b)) < ROOM_ORDER.index(room_of(a)))
    assert upward == []


def test_every_module_lives_in_a_named_room():
    assert sorted(m for m in import_graph() if room_of(m) not in ROOM_ORDER) == ["poc", "poc.__main__"]


def test_package_inits_only_re_export_and_submodules_import_siblings_not_their_package():
    for path in [*REPO.glob("poc/**/__init__.py"), *REPO.glob("ui/**/__init__.py")]:
        tree = ast.parse(path.read_text())
        for stmt in tree.body:
            docstring = isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            exports = isinstance(stmt, ast.Assign) and [t.id for t in stmt.targets] in (["__all__"], ["__version__"])
            assert docstring or exports or isinstance(stmt, (ast.Import, ast.ImportFrom)), (path, stmt.lineno)
    graph = import_graph()
    for module, targets in graph.items():
        package = module.rsplit(".", 1)[0]
        if package != module and package in graph and _modules()[module].name != "__init__.py":
            own = {t for t in targets if t == package}
            assert not own, f"{module} imports its own package's __init__ ({package}); import the sibling module"


def test_at_most_twelve_modules_lie_directly_under_poc():
    assert len(list((REPO / "poc").glob("*.py"))) <= 12


def test_every_page_file_is_at_most_sixty_lines():
    long = {p.name: n for p in (REPO / "pages").glob("*.py") if (n := len(p.read_text().splitlines())) > 60}
    assert long == {}


PRIVATE = re.compile(r"\brunpy\b|sys\._getframe|inspect\.currentframe|f_globals|streamlit\.runtime|"
                     r"_clean_problem_modules|_flatten_layers|clear_session\s*=[^=]|"
                     r"\bkeras\.src\b|\bstreamlit\.(web|elements)\b")  # keras.src: Keras's private modules


def test_no_private_internals_of_streamlit_or_keras_are_reached_for():
    files = [REPO / "dashboard.py", *REPO.glob("pages/*.py"), *REPO.glob("ui/**/*.py"), *REPO.glob("poc/**/*.py")]
    hits = [f"{p.relative_to(REPO)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
            if PRIVATE.search(line)]
    assert hits == []


def test_importing_every_ui_module_loads_no_tensorflow_or_keras():
    names = sorted(_module_name(p) for p in REPO.glob("ui/*.py"))
    script = ("import importlib, sys\n"
              f"for name in {names!r}:\n    importlib.import_module(name)\n"
              "print(sorted(m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("path", [REPO / "dashboard.py", *sorted((REPO / "pages").glob("*.py"))], ids=lambda p: p.name)
def test_pages_and_the_entry_point_import_only_ui(path):
    tree = ast.parse(path.read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in imported if m == "poc" or m.startswith("poc.")}
