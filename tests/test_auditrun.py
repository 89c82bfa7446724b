"""auditrun.py in memory: which traced reads a stage's audit names, from hand-written traces
(the tracer itself is tests/test_audit.py's; whole commands are tests/cli/test_audit_cli.py's)."""

from __future__ import annotations

from pathlib import Path

from pivotbuild import audit
from pivotbuild.auditrun import Audit, trace_name
from pivotbuild.config import Out, Stage


def make(root: Path, *files: str) -> None:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)


def audited(root: Path, lines: list[str], stage: Stage, discovered: tuple[str, ...] = (),
            params_file: str = "params.toml") -> tuple[list[str], list[str]]:
    """(what undeclared() names, the notices said) for a trace of ``lines`` ("K relpath")."""
    said: list[str] = []
    run = Audit(root, root / ".pivotbuild", said.append, params_file=params_file)
    tracer = run.tracer(stage.name, stage.wdir)
    tracer.trace_file.write_text("".join(f"{line[0]} {root}/{line[2:]}\n" for line in lines))
    run.traced(stage.name, tracer)
    assert not tracer.trace_file.exists()
    return run.undeclared(stage, discovered), said


def test_what_is_named_and_what_is_not(tmp_path: Path) -> None:
    make(tmp_path, "data/extra.csv", "lib/a.py", "lib/sub/b.py", "out/model.bin", "out.txt",
         "disc.py", "params.toml", "other.yaml", ".git/HEAD", "__pycache__/m.cpython-311.pyc",
         "venv/pyvenv.cfg", "venv/lib/x.py", "vendor/site-packages/y.py", "tmp.txt",
         "read_then_written.txt", "script.py")
    stage = Stage(name="s", cmd=["true"], deps=["lib", "script.py"],
                  outs=[Out(path="out"), Out(path="out.txt")],
                  params=["train.lr", "other.yaml:x.y"])
    lines = ["r data/extra.csv", "r lib/sub/b.py", "s lib/a.py", "r out/model.bin", "r out.txt",
             "r disc.py", "r params.toml", "r other.yaml", "r .git/HEAD",
             "r __pycache__/m.cpython-311.pyc", "r venv/lib/x.py",
             "r vendor/site-packages/y.py", "s data", "w tmp.txt", "r tmp.txt",
             "r read_then_written.txt", "w read_then_written.txt", "x script.py",
             "r vanished.txt"]
    named, said = audited(tmp_path, lines, stage, discovered=("disc.py",))
    assert named == ["data/extra.csv", "read_then_written.txt"]
    assert said == []


def test_a_stage_with_nothing_traced_names_nothing(tmp_path: Path) -> None:
    stage = Stage(name="s", cmd=["true"])
    run = Audit(tmp_path, tmp_path / ".pivotbuild", lambda line: None)
    assert run.undeclared(stage) == []


def test_notices_are_said_once_per_repro(tmp_path: Path) -> None:
    said: list[str] = []
    run = Audit(tmp_path, tmp_path / ".pivotbuild", said.append)
    for name in ("a", "b"):
        tracer = run.tracer(name, ".")
        tracer.trace_file.write_text(f"U /bin/static-tool\nr {tmp_path}/f\n")
        run.traced(name, tracer)
    assert len(said) == 1 and "/bin/static-tool" in said[0] and "incomplete" in said[0]


def test_trace_names_are_one_per_stage_and_safe(tmp_path: Path) -> None:
    names = ["cc@net.io", "cc@net/io", "a b", "x" * 300, "cc@net_io"]
    files = [trace_name(n) for n in names]
    assert len(set(files)) == len(names)
    assert all("/" not in f and " " not in f and len(f) < 120 for f in files)
    assert audit.tracer(tmp_path, tmp_path / files[0], cwd=tmp_path).trace_file.name == files[0]
