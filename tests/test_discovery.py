"""discovery.py: one stage run's discovered deps from its depfile and its Python imports, and
what `commit` records without a run (real files in tmp_path; no pivotbuild process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pivotbuild.discovery import RECORD_DIR, Discovery, discovers, recorded
from pivotbuild.errors import OperationError
from pivotbuild.lock import Lock, LockedDep
from tests.fakes import stage

H = "0123456789abcdef0123456789abcdef"


def files(root: Path, texts: dict[str, str]) -> None:
    for rel, text in texts.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_which_stages_discover():
    assert not discovers(stage("a", "a"))
    assert discovers(stage("a", "a", depfile="a.d"))
    assert discovers(stage("a", "a", discover=["python"]))


def test_a_depfile_is_read_relative_to_wdir_and_deleted(tmp_path):
    files(tmp_path, {"src/a.c": "", "include/a.h": "", "include/b.h": "", "src/local.h": ""})
    cc = stage("cc", "cc", deps=["src/a.c"], outs=["build/a.o"], depfile="build/a.d",
               wdir="src")
    run = Discovery(cc, tmp_path, {})
    assert run.env == {} and run.record is None  # nothing to set for a depfile
    (tmp_path / "build" / "a.d").write_text(  # what the compiler writes (in src/)
        f"build/a.o: a.c ../include/a.h {tmp_path}/include/b.h local.h /usr/include/stdio.h \\\n"
        " ../build/a.o.h\n../include/a.h:\n")
    # outside the project and declared paths dropped; the stage's own out too
    assert run.collect() == ["build/a.o.h", "include/a.h", "include/b.h", "src/local.h"]
    assert not (tmp_path / "build" / "a.d").exists()


def test_a_depfile_that_is_a_declared_out_is_kept(tmp_path):
    files(tmp_path, {"a.h": "", "a.d": "a.o: a.c a.h\n"})
    cc = stage("cc", "cc", deps=["a.c"], outs=["a.o", "a.d"], depfile="a.d")
    assert Discovery(cc, tmp_path, {}).collect() == ["a.h"]
    assert (tmp_path / "a.d").exists()


@pytest.mark.parametrize(("text", "problem"), [
    (None, "depfile 'a.d' was not written by the stage's commands"),
    ("a.o: a.c \\", "depfile 'a.d': line 1: the file ends in a line continuation"),
    ("a.o: $(X)\n", "depfile 'a.d': line 1: a single '$'"),
])
def test_a_missing_or_malformed_depfile_is_one_line_naming_it(tmp_path, text, problem):
    cc = stage("cc", "cc", deps=["a.c"], outs=["a.o"], depfile="a.d")
    run = Discovery(cc, tmp_path, {})
    if text is not None:
        (tmp_path / "a.d").write_text(text)
    with pytest.raises(OperationError) as caught:
        run.collect()
    assert str(caught.value).startswith(problem) and "\n" not in str(caught.value)


def test_python_imports_are_recorded_through_the_environment_and_the_record_removed(tmp_path):
    files(tmp_path, {"main.py": "import helper\n", "helper.py": "", "lib/dep.py": ""})
    py = stage("py", "python3 main.py", outs=["o"], discover=["python"])
    run = Discovery(py, tmp_path, {"PYTHONPATH": str(tmp_path / "lib")})
    assert run.record is not None and run.record.parent == tmp_path / RECORD_DIR
    assert run.env["PYTHONPATH"].endswith(os.pathsep + str(tmp_path / "lib"))
    env = {**os.environ, **run.env}
    subprocess.run([sys.executable, "main.py"], cwd=tmp_path, env=env, check=True)
    subprocess.run([sys.executable, "-c", "import dep"], cwd=tmp_path, env=env, check=True)
    assert run.collect() == ["helper.py", "lib/dep.py", "main.py"]
    run.discard()
    assert list((tmp_path / RECORD_DIR).iterdir()) == []


def test_both_sources_are_united(tmp_path):
    files(tmp_path, {"gen.py": "import helper\n", "helper.py": "", "x.h": ""})
    both = stage("b", "python3 gen.py", deps=["gen.py"], outs=["out"], depfile="out.d",
                 discover=["python"])
    run = Discovery(both, tmp_path, {})
    (tmp_path / "out.d").write_text("out: x.h\n")
    subprocess.run([sys.executable, "gen.py"], cwd=tmp_path, env={**os.environ, **run.env},
                   check=True)
    assert run.collect() == ["helper.py", "x.h"]  # gen.py is declared
    run.discard()


def test_commit_takes_the_locks_list_and_a_depfile_on_disk_leaving_it(tmp_path):
    files(tmp_path, {"a.d": "a.o: a.c new.h\n"})
    cc = stage("cc", "cc", deps=["a.c", "now_declared.h"], outs=["a.o"], depfile="a.d")
    lock = Lock("cc", ["cc"], [], [], {}, H,
                discovered=[LockedDep("old.h", H, 1), LockedDep("now_declared.h", H, 1)])
    assert recorded(cc, lock, tmp_path) == ["new.h", "old.h"]
    assert (tmp_path / "a.d").exists()
    (tmp_path / "a.d").unlink()
    assert recorded(cc, None, tmp_path) == []


def test_before_a_run_a_stale_depfile_is_removed_and_its_directory_made(tmp_path):
    files(tmp_path, {"deps/a.d": "a.o: a.c old.h\n"})
    cc = stage("cc", "cc", deps=["a.c"], outs=["a.o"], depfile="deps/a.d")
    run = Discovery(cc, tmp_path, {})
    assert not (tmp_path / "deps" / "a.d").exists()  # a run that writes none fails
    with pytest.raises(OperationError, match="was not written"):
        run.collect()
    fresh = stage("cc", "cc", deps=["a.c"], outs=["a.o"], depfile="new/dir/a.d")
    Discovery(fresh, tmp_path, {})
    assert (tmp_path / "new" / "dir").is_dir()


def test_a_depfile_whose_directory_leads_outside_is_refused(tmp_path):
    outside = tmp_path / "outside"
    (outside).mkdir()
    (outside / "a.d").write_text("a.o: a.c\n")
    root = tmp_path / "proj"
    root.mkdir()
    (root / "link").symlink_to(outside)
    cc = stage("cc", "cc", deps=["a.c"], outs=["a.o"], depfile="link/a.d")
    with pytest.raises(OperationError, match="link/a.d"):
        Discovery(cc, root, {})
    assert (outside / "a.d").exists()  # nothing outside touched
