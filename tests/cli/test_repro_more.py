"""More `repro` behaviour: run cache after a lost lock, whitespace in cmd, overlap
under -j 2, --downstream, persist outs, directory deps, and the shipped examples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cli.conftest import run
from tests.cli.test_repro import TWO_STAGES, lock, ran

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def pipe(tmp_path: Path) -> Path:
    (tmp_path / "pivot.toml").write_text(TWO_STAGES)
    (tmp_path / "raw.txt").write_text("hello\n")
    return tmp_path


def test_deleted_lock_comes_back_from_the_run_cache_identical(pipe):
    assert run(["repro"], pipe).code == 0
    before = (pipe / ".pivotbuild" / "locks" / "train.json").read_bytes()
    (pipe / ".pivotbuild" / "locks" / "train.json").unlink()
    doc = json.loads(run(["repro", "--json"], pipe).out)
    assert [s["action"] for s in doc["stages"]] == ["skip", "run-cache"]
    assert ran(pipe) == ["prepare", "train"]
    assert (pipe / ".pivotbuild" / "locks" / "train.json").read_bytes() == before
    # A non-cached output was never stored: once it is gone, the stage must run.
    (pipe / ".pivotbuild" / "locks" / "train.json").unlink()
    (pipe / "metrics.json").unlink()
    doc = json.loads(run(["repro", "--json"], pipe).out)
    assert [s["action"] for s in doc["stages"]] == ["skip", "run"]


def test_second_repro_leaves_every_lock_byte_identical_and_untouched(pipe):
    run(["repro"], pipe)
    locks = sorted((pipe / ".pivotbuild" / "locks").iterdir())
    before = [(p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in locks]
    run(["repro"], pipe)
    assert [(p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in locks] == before


def test_whitespace_only_cmd_edit_is_a_change(pipe):
    run(["repro"], pipe)
    (pipe / "pivot.toml").write_text(TWO_STAGES.replace("tr a-z A-Z", "tr  a-z A-Z"))
    reasons = json.loads(run(["status", "--json"], pipe).out)["stages"][0]["reasons"]
    assert reasons == [{"kind": "cmd-changed"}]
    run(["repro"], pipe)
    assert ran(pipe) == ["prepare", "train", "prepare"]  # same output: train skipped


def test_dep_change_reruns_exactly_that_stage_and_its_downstream_in_order(tmp_path):
    (tmp_path / "pivot.toml").write_text(
        "".join(
            f'[stages.{name}]\ncmd = "echo {name} >> runs.log; cat {dep} > {name}.out; '
            f'echo {name} >> {name}.out"\ndeps = ["{dep}"]\nouts = ["{name}.out"]\n'
            for name, dep in [("a", "a.in"), ("b", "a.out"), ("c", "b.out"), ("d", "d.in")]
        )
    )
    (tmp_path / "a.in").write_text("1")
    (tmp_path / "d.in").write_text("1")
    run(["repro"], tmp_path)
    assert sorted(ran(tmp_path)) == ["a", "b", "c", "d"]
    (tmp_path / "a.in").write_text("2")
    run(["repro", "-j", "3"], tmp_path)
    assert ran(tmp_path)[4:] == ["a", "b", "c"]


def test_two_independent_stages_overlap_under_j2(tmp_path):
    stage = ('[stages.{n}]\ncmd = "date +%s.%N > {n}.start; sleep 1; date +%s.%N > {n}.end"\n'
             'outs = ["{n}.start", "{n}.end"]\n')
    (tmp_path / "pivot.toml").write_text(stage.format(n="a") + stage.format(n="b"))
    assert run(["repro", "-j", "2"], tmp_path).code == 0
    a = [float((tmp_path / f"a.{k}").read_text()) for k in ("start", "end")]
    b = [float((tmp_path / f"b.{k}").read_text()) for k in ("start", "end")]
    assert a[0] < b[1] and b[0] < a[1]  # the run intervals overlap


def test_downstream_selects_the_targets_and_what_depends_on_them(pipe):
    run(["repro"], pipe)
    run(["repro", "-f", "--downstream", "train"], pipe)
    assert ran(pipe) == ["prepare", "train", "train"]
    run(["repro", "-f", "--downstream", "prepare"], pipe)
    assert ran(pipe) == ["prepare", "train", "train", "prepare", "train"]


def test_output_path_targets_select_their_stage(pipe):
    result = run(["repro", "clean.txt"], pipe)
    assert result.code == 0
    assert ran(pipe) == ["prepare"]


def test_persist_outputs_are_kept_and_restored_as_writable_copies(tmp_path):
    (tmp_path / "pivot.toml").write_text(
        '[stages.acc]\ncmd = "echo run >> runs.log; cat in >> history.txt"\n'
        'deps = ["in"]\nouts = [{path = "history.txt", persist = true}]\n'
    )
    (tmp_path / "in").write_text("one\n")
    run(["repro"], tmp_path)
    (tmp_path / "in").write_text("two\n")
    run(["repro"], tmp_path)
    assert (tmp_path / "history.txt").read_text() == "one\ntwo\n"
    (tmp_path / "history.txt").unlink()
    (tmp_path / "in").write_text("three\n")
    run(["repro"], tmp_path)
    assert (tmp_path / "history.txt").read_text() == "one\ntwo\nthree\n"
    assert ran(tmp_path) == ["run", "run", "run"]


def test_directory_deps_and_outs(tmp_path):
    (tmp_path / "pivot.toml").write_text(
        '[stages.split]\ncmd = "echo split >> runs.log; mkdir -p parts; '
        'for f in src/*; do cp $f parts/$(basename $f).part; done"\n'
        'deps = ["src"]\nouts = ["parts"]\n'
        '[stages.join]\ncmd = "echo join >> runs.log; cat parts/* > joined"\n'
        'deps = ["parts/"]\nouts = ["joined"]\n'
    )
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_text("A")
    (tmp_path / "src" / "b").write_text("B")
    assert run(["repro"], tmp_path).code == 0
    assert (tmp_path / "joined").read_text() == "AB"
    (tmp_path / "src" / "c").write_text("C")  # a new file in a directory dep
    run(["repro"], tmp_path)
    assert (tmp_path / "joined").read_text() == "ABC"
    assert ran(tmp_path) == ["split", "join", "split", "join"]
    assert lock(tmp_path, "split")["deps"][0]["nfiles"] == 3


@pytest.mark.parametrize("name", ["datapipe", "cbuild"])
def test_examples_reproduce_then_are_up_to_date(tmp_path, name):
    if name == "cbuild" and shutil.which("cc") is None:
        pytest.fail("the C example needs a C compiler (cc)")
    project = tmp_path / name
    shutil.copytree(EXAMPLES / name, project,
                    ignore=shutil.ignore_patterns(".pivotbuild", "data", "build", "bin"))
    first = run(["repro", "-j", "2", "--json"], project)
    assert first.code == 0, first.err
    assert all(s["action"] == "run" for s in json.loads(first.out)["stages"])
    second = json.loads(run(["repro", "--json"], project).out)
    assert all(s["action"] == "skip" for s in second["stages"])
    if name == "cbuild":
        assert len(json.loads(first.out)["stages"]) == 6  # 4 compile@… + link + selftest
        assert "passed: 0 failure(s)" in (project / "test-report.txt").read_text()
    else:
        assert (project / "report.md").read_text().startswith("# Report")
