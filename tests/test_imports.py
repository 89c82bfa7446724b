"""The package's shape: no import cycle among module-level imports, one role line per module."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pivotbuild

PACKAGE_DIR = Path(pivotbuild.__file__).parent


def _module_name(path: Path, package_dir: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(current: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute name of a relative import `from <level dots><module> import ...`."""
    if level == 0:
        return module or ""
    base = current.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports run when the module loads: at the top and inside top-level if/try blocks,
    but not inside functions or classes' methods, nor under `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" in ast.unparse(node.test):
                pending.extend(node.orelse)
            else:
                pending.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                pending.extend(handler.body)
    return found


def import_graph(package_dir: Path = PACKAGE_DIR) -> dict[str, set[str]]:
    """Each module of the package → the package's modules it imports when it loads."""
    paths = {_module_name(p, package_dir): p for p in package_dir.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in _top_level_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                base = _resolve(name, is_package, node.level, node.module)
                # `from pkg import mod` imports the submodule pkg.mod when there is one.
                candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for candidate in candidates:
                # Importing a.b.c runs a and a.b first.
                parts = candidate.split(".")
                for end in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:end])
                    if prefix in paths and prefix != name:
                        targets.add(prefix)
        graph[name] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted.

    A package's __init__ importing its own submodules (and those importing a sibling
    through the package) is how packages are built, so edges from a submodule to its
    own parent package are not counted."""
    edges = {
        node: {t for t in targets if not node.startswith(t + ".")}
        for node, targets in graph.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycle() -> None:
    cycles = find_cycles(import_graph())
    assert cycles == [], f"module-level import cycles: {cycles}"


def test_cycle_finder_sees_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("from .sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("import pkg.a\n")
    (pkg / "lazy.py").write_text("def f():\n    from . import a\n")
    (pkg / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
    )
    graph = import_graph(pkg)
    assert graph["pkg.lazy"] == set() and graph["pkg.typed"] == set()
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c"]]


def test_every_module_opens_with_its_role() -> None:
    missing = [
        str(path.relative_to(PACKAGE_DIR.parent))
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        if not (ast.get_docstring(ast.parse(path.read_text())) or "").strip()
    ]
    assert missing == []


_GRAPH_WITHOUT_NETWORKX = """
import sys
from pathlib import Path

import pivotbuild.dag, pivotbuild.execute, pivotbuild.plan
from pivotbuild.config_models import Out, Project, Stage
from pivotbuild.dag import CycleError, build_graph, select

def project(*specs):
    return Project(root=Path("/proj"), stages={
        name: Stage(name=name, cmd=["true"], deps=list(deps), outs=[Out(path=p) for p in outs])
        for name, deps, outs in specs})

graph = build_graph(project(("cc", ["a.c"], ["a.o"]), ("link", ["a.o"], ["app"])))
print(select(graph, ["app"]), graph.has_path("cc", "link"), "networkx" in sys.modules)
try:
    build_graph(project(("a", ["y"], ["x"]), ("b", ["x"], ["y"])))
except CycleError as error:
    print(error, "networkx" in sys.modules)
"""


def test_building_and_walking_a_graph_imports_no_networkx() -> None:
    """networkx costs more to import than a full-path command spends planning: only a cycle,
    to be named in the error, loads it (dag.py's docstring)."""
    proc = subprocess.run([sys.executable, "-c", _GRAPH_WITHOUT_NETWORKX], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "['cc', 'link'] True False",
        "pivot.toml: cycle in the pipeline: a -> b -> a True",
    ]


def test_reading_and_writing_sound_locks_imports_no_pydantic(tmp_path: Path) -> None:
    """A sound lock is read (and written: write_lock validates it) without pydantic; only a
    lock that is not sound loads the schema (lockschema.py) to name its problem."""
    script = f"""
import json, sys
from pathlib import Path
from pivotbuild.lock import Lock, LockedDep, LockedOut, parse_lock, read_lock, write_lock
h = "0123456789abcdef0123456789abcdef"
lock = Lock(stage="train", cmd=["cc"], deps=[LockedDep("a.c", h, 3)],
            outs=[LockedOut("out", h + ".dir", 9, nfiles=2)], params={{"x": 1}}, input_hash=h,
            discovered=[LockedDep("a.h", h, 1), LockedDep("gen.h", "", 0)])
path = Path({str(tmp_path)!r}) / "locks" / "train.json"
write_lock(path, lock)
assert read_lock(path) == lock
assert parse_lock(path.read_bytes(), "train") == lock
assert Lock.from_dict(json.loads(path.read_text()), "train") == lock
loaded = [m for m in ("pydantic", "pivotbuild.lockschema") if m in sys.modules]
path.write_text(path.read_text().replace('"size": 3', '"size": true'))
problem = read_lock(path, shown="train.json")
print(json.dumps([loaded, "pydantic" in sys.modules, str(problem)]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    loaded, later, problem = json.loads(done.stdout)
    assert loaded == []
    assert later is True  # the check above would see it
    assert problem == ("train.json: invalid lock (deps[0].size is not a size); "
                       "the stage is treated as stale")


def test_recording_and_reading_a_run_cache_entry_imports_no_pydantic(tmp_path: Path) -> None:
    """A commit records a run (entry_bytes validates it) and the planner reads one: a sound
    entry is judged without pydantic; only an unsound one loads the model."""
    script = f"""
import json, sys
from pathlib import Path
from pivotbuild.store.runcache import RunCache
h, d = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
runs = RunCache(Path({str(tmp_path)!r}), durable=False)
outs = [{{"path": "a.o", "hash": d, "size": 4, "cache": True}}]
runs.put(h, outs, [{{"path": "a.h", "hash": d, "size": 1}}])
runs.put(h, outs, [{{"path": "a.h", "hash": h, "size": 1}}])
entry = runs.get(h)
loaded = "pydantic" in sys.modules
runs.path(h).write_text(json.dumps({{**entry, "schema": 3}}))
print(json.dumps([len(entry["earlier"]), loaded, runs.get(h), "pydantic" in sys.modules]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [1, False, None, True]


def test_loading_a_valid_project_imports_no_pydantic(tmp_path: Path) -> None:
    """The first command after an edit of pivot.toml (no project cache) loads it through
    config_check's hand-written checks; only a file they refuse loads the pydantic models
    (config_schema.py), which word the problem."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.c").write_text("int a;\n")
    (tmp_path / "pivot.toml").write_text(
        '[project]\njobs = 2\n[remotes.r]\nurl = "s3://b/p"\n[vars]\nn = 1\n[pools]\ngpu = 1\n'
        '[executor]\nenv = ["HOME"]\n'
        '[stages.cc]\nforeach = { glob = "src/*.c" }\ncmd = "cc -c ${item.path}"\n'
        'deps = ["${item.path}"]\nouts = ["${item.stem}.o"]\n'
        '[stages.m]\nmatrix = { v = [1, 2] }\ncmd = ["echo ${item.v} > m${item.v}"]\n'
        'params = ["lr"]\npool = "gpu"\n'
        'outs = [{ path = "m${item.v}", cache = false, metric = true, plot = { x = "a" } }]\n')
    (tmp_path / "params.toml").write_text("lr = 0.1\n")
    (tmp_path / ".pivotbuild").mkdir()
    (tmp_path / ".pivotbuild" / "config.local.toml").write_text(
        '[project]\njobs = 3\n[remotes.r]\nprofile = "dev"\n')
    script = f"""
import json, sys
from pathlib import Path
from pivotbuild.config import load_project
from pivotbuild.errors import ConfigError
root = Path({str(tmp_path)!r})
project = load_project(root)
loaded = [m for m in ("pydantic", "pivotbuild.config_schema") if m in sys.modules]
toml = root / "pivot.toml"
toml.write_text(toml.read_text().replace("jobs = 2", "jobs = true"))
try:
    load_project(root)
except ConfigError as error:
    problem = str(error)
print(json.dumps([sorted(project.stages), project.jobs, loaded, problem,
                  "pydantic" in sys.modules]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False,
                          env={**os.environ, "PIVOTBUILD_CACHE_DIR": ""})
    assert done.returncode == 0, done.stderr
    stages, jobs, loaded, problem, later = json.loads(done.stdout)
    assert stages == ["cc@a", "m@1", "m@2"] and jobs == 3
    assert loaded == []
    assert problem == "pivot.toml: project.jobs: expected an integer, got boolean true"
    assert later is True
