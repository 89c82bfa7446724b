"""`repro --audit` through the CLI: the project files a stage read without declaring them are
named, per stage and in --json; what is declared, produced or outside the project never is;
what is committed is the same as without --audit.

Every test counts what ran with a marker file the stage's cmd appends to."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pivotbuild import audit
from tests.cli.conftest import run

PY = sys.executable
WARNING = "pivotbuild: warning: stage '{}' read"


def ran(root: Path) -> list[str]:
    log = root / "runs.log"
    return log.read_text().split() if log.exists() else []


def warnings(err: str) -> dict[str, str]:
    """stage name → its undeclared-reads warning line."""
    found = {}
    for line in err.splitlines():
        if line.startswith("pivotbuild: warning: stage '") and " undeclared " in line:
            found[line.split("'")[1]] = line
    return found


def stages(out: str) -> dict[str, dict]:
    return {s["name"]: s for s in json.loads(out)["stages"]}


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "data").mkdir(parents=True)
    (root / "data" / "in.csv").write_text("a\n")
    (root / "data" / "extra.csv").write_text("b\n")
    (tmp_path / "outside.txt").write_text("outside\n")
    return root


def write(root: Path, toml: str) -> None:
    (root / "pivot.toml").write_text(textwrap.dedent(toml))


def test_undeclared_reads_by_cat_and_by_python_are_named(proj: Path) -> None:
    (proj / "read.py").write_text("open('data/extra.csv').read()\nopen('data/in.csv').read()\n")
    write(proj, f"""
        [stages.bycat]
        cmd = "echo bycat >> runs.log; cat data/in.csv data/extra.csv > cat.txt"
        deps = ["data/in.csv"]
        outs = ["cat.txt"]

        [stages.bypython]
        cmd = "echo bypython >> runs.log; {PY} read.py > py.txt"
        deps = ["data/in.csv", "read.py"]
        outs = ["py.txt"]
        """)
    result = run(["repro", "--audit"], proj)
    assert result.code == 0, result.err
    assert sorted(ran(proj)) == ["bycat", "bypython"]
    found = warnings(result.err)
    assert set(found) == {"bycat", "bypython"}
    for name in ("bycat", "bypython"):
        assert found[name] == (WARNING.format(name) + " 1 undeclared file: data/extra.csv "
                               "(declare them in its deps)")
    assert "data/in.csv" not in result.err and "read.py" not in result.err
    # Nothing is left of the traces.
    assert list((proj / ".pivotbuild" / "tmp" / "audit").iterdir()) == []


def test_declared_produced_and_outside_reads_are_not_named(proj: Path, tmp_path: Path) -> None:
    """A file in a declared directory dep, an out read back, an intermediate file the stage
    wrote then read, Python's __pycache__, a params file, a virtual environment kept in the
    project, .git and paths outside the project (absolute, through .., /etc): none is named."""
    (proj / "lib").mkdir()
    (proj / "lib" / "helpers.py").write_text("VALUE = 1\n")
    (proj / "util.py").write_text("WORD = 'x'\n")
    (proj / "main.py").write_text(textwrap.dedent("""\
        import sys
        sys.path.insert(0, 'lib')
        import helpers, util
        open('params.toml').read()
        print(helpers.VALUE, util.WORD)
        """))
    (proj / "params.toml").write_text("[train]\nlr = 0.1\n")
    (proj / "venv" / "lib").mkdir(parents=True)
    (proj / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (proj / "venv" / "lib" / "mod.py").write_text("x = 1\n")
    (proj / ".git").mkdir()
    (proj / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    outside = tmp_path / "outside.txt"
    write(proj, f"""
        [stages.clean]
        cmd = [
          "echo clean >> runs.log",
          "{PY} main.py > out.txt; {PY} main.py > /dev/null",
          "cat out.txt data/in.csv > tmp.txt; cat tmp.txt > /dev/null",
          "cat venv/lib/mod.py .git/HEAD /etc/hostname {outside} ../outside.txt > /dev/null",
          "cat data/../../outside.txt > /dev/null; ls -R lib > /dev/null",
        ]
        deps = ["main.py", "util.py", "lib", "data/in.csv"]
        params = ["train.lr"]
        outs = ["out.txt"]
        """)
    result = run(["repro", "--audit", "--json"], proj, env={"PYTHONDONTWRITEBYTECODE": ""})
    assert result.code == 0, result.err
    assert ran(proj) == ["clean"]
    assert list((proj / "__pycache__").iterdir())  # Python cached util.py, and read it back
    assert stages(result.out)["clean"]["undeclared_reads"] == []
    assert warnings(result.err) == {}
    assert (proj / "tmp.txt").exists()  # the intermediate is still there: it was not named


def test_discovered_reads_are_not_named(proj: Path) -> None:
    """What the stage discovered in this run (Python imports, a depfile's prerequisites) is
    not undeclared; a data file read beside them still is."""
    (proj / "pkg").mkdir()
    (proj / "pkg" / "__init__.py").write_text("")
    (proj / "pkg" / "helpers.py").write_text("def load():\n    return open('data/extra.csv').read()\n")
    (proj / "main.py").write_text("from pkg import helpers\nprint(helpers.load())\n")
    (proj / "inc").mkdir()
    (proj / "inc" / "a.h").write_text("#define A 1\n")
    write(proj, f"""
        [stages.py]
        cmd = "echo py >> runs.log; {PY} main.py > py.txt"
        deps = ["main.py"]
        outs = ["py.txt"]
        discover = ["python"]

        [stages.cc]
        cmd = "echo cc >> runs.log; cat inc/a.h data/extra.csv > cc.o; printf 'cc.o: inc/a.h\\n' > cc.d"
        outs = ["cc.o"]
        depfile = "cc.d"
        """)
    result = run(["repro", "--audit", "--json"], proj, env={"PYTHONDONTWRITEBYTECODE": ""})
    assert result.code == 0, result.err
    assert sorted(ran(proj)) == ["cc", "py"]
    doc = stages(result.out)
    assert doc["py"]["undeclared_reads"] == ["data/extra.csv"]
    assert doc["cc"]["undeclared_reads"] == ["data/extra.csv"]
    locks = {name: json.loads((proj / ".pivotbuild" / "locks" / f"{name}.json").read_text())
             for name in ("py", "cc")}
    assert [d["path"] for d in locks["py"]["discovered"]] == ["pkg/__init__.py",
                                                              "pkg/helpers.py"]
    assert [d["path"] for d in locks["cc"]["discovered"]] == ["inc/a.h"]


def test_audit_runs_commands_here_only(proj: Path) -> None:
    """A project whose stages run on a Dask cluster cannot be audited (nothing connects)."""
    write(proj, """
        [executor]
        kind = "dask"
        address = "tcp://127.0.0.1:9"
        transfer = "shared"

        [stages.s]
        cmd = "echo s >> runs.log; cat data/in.csv > s.txt"
        outs = ["s.txt"]
        """)
    result = run(["repro", "--audit"], proj)
    assert result.code == 2
    assert result.err.strip() == ("pivotbuild: error: --audit traces commands on this machine: "
                                  "it cannot be used with the dask executor (add --executor "
                                  "local)")
    assert ran(proj) == []
    here = run(["repro", "--audit", "--executor", "local", "--json"], proj)
    assert here.code == 0, here.err
    assert stages(here.out)["s"]["undeclared_reads"] == ["data/in.csv"]
    assert ran(proj) == ["s"]


def test_json_shape(proj: Path) -> None:
    """With --audit every stage result has "undeclared_reads": a list for a stage that ran
    and succeeded (traced), null for one skipped, failed or not run; without --audit, no
    key."""
    write(proj, """
        [stages.reads]
        cmd = "echo reads >> runs.log; cat data/extra.csv data/in.csv > r.txt"
        deps = ["data/in.csv"]
        outs = ["r.txt"]

        [stages.quiet]
        cmd = "echo quiet >> runs.log; cat data/in.csv > q.txt"
        deps = ["data/in.csv"]
        outs = ["q.txt"]

        [stages.fails]
        cmd = "echo fails >> runs.log; cat data/extra.csv; exit 3"
        outs = ["f.txt"]

        [stages.after]
        cmd = "echo after >> runs.log; cp f.txt a.txt"
        deps = ["f.txt"]
        outs = ["a.txt"]
        """)
    first = run(["repro", "--audit", "--json", "-k"], proj)
    assert first.code == 1
    doc = stages(first.out)
    assert doc["reads"]["undeclared_reads"] == ["data/extra.csv"]
    assert doc["quiet"]["undeclared_reads"] == []
    assert (doc["fails"]["status"], doc["fails"]["undeclared_reads"]) == ("failed", None)
    assert (doc["after"]["status"], doc["after"]["undeclared_reads"]) == ("not-run", None)
    assert set(warnings(first.err)) == {"reads"}

    second = run(["repro", "--audit", "--json", "reads", "quiet"], proj)
    assert second.code == 0, second.err
    assert {n: (s["action"], s["undeclared_reads"]) for n, s in stages(second.out).items()} == {
        "reads": ("skip", None), "quiet": ("skip", None)}

    plain = run(["repro", "--json", "-f", "reads"], proj)
    assert plain.code == 0, plain.err
    assert "undeclared_reads" not in stages(plain.out)["reads"]
    assert warnings(plain.err) == {}
    assert ran(proj).count("reads") == 2


def test_many_paths_are_cut_short_in_the_warning(proj: Path) -> None:
    for i in range(13):
        (proj / "data" / f"f{i:02d}.csv").write_text(str(i))
    write(proj, """
        [stages.many]
        cmd = "cat data/f*.csv > all.txt"
        outs = ["all.txt"]
        """)
    result = run(["repro", "--audit", "--json"], proj)
    assert result.code == 0, result.err
    names = [f"data/f{i:02d}.csv" for i in range(13)]
    assert stages(result.out)["many"]["undeclared_reads"] == names
    assert warnings(result.err)["many"] == (WARNING.format("many") + " 13 undeclared files: "
                                            + ", ".join(names[:10]) + " and 3 more "
                                            "(declare them in its deps)")


def test_audit_runs_a_stage_the_run_cache_would_restore(proj: Path) -> None:
    """A user asking for an audit gets each stale stage traced: --audit does not restore from
    the run cache (it still writes its entries)."""
    write(proj, """
        [stages.s]
        cmd = "echo s >> runs.log; cat data/in.csv data/extra.csv > s.txt"
        deps = ["data/in.csv"]
        outs = ["s.txt"]
        """)
    assert run(["repro"], proj).code == 0
    (proj / "data" / "in.csv").write_text("changed\n")
    assert run(["repro"], proj).code == 0
    (proj / "data" / "in.csv").write_text("a\n")  # back: the run cache has this input hash
    dry = run(["repro", "--dry-run", "--json"], proj)
    assert stages(dry.out)["s"]["action"] == "run-cache"
    result = run(["repro", "--audit", "--json"], proj)
    assert result.code == 0, result.err
    assert stages(result.out)["s"]["action"] == "run"
    assert stages(result.out)["s"]["undeclared_reads"] == ["data/extra.csv"]
    assert ran(proj) == ["s", "s", "s"]


PIPELINE = """
    [stages.prepare]
    cmd = ["echo prepare >> runs.log; mkdir -p prepared",
           "sort data/in.csv > prepared/sorted.csv; cat data/extra.csv > prepared/extra.csv"]
    deps = ["data/in.csv"]
    outs = ["prepared"]

    [stages.train]
    cmd = ["echo train >> runs.log; cat prepared/sorted.csv data/extra.csv > model.bin",
           "wc -c < model.bin > metrics.json"]
    deps = ["prepared"]
    outs = ["model.bin", {path = "metrics.json", cache = false}]

    [stages.score]
    cmd = "echo score >> runs.log; PY score.py > score.txt"
    deps = ["score.py", "model.bin"]
    outs = ["score.txt"]
    discover = ["python"]
    """


def committed(root: Path) -> dict[str, bytes]:
    """Every lock, cache object and run-cache entry, by path (the cache's project registry,
    which names the project's absolute path, left out)."""
    state = root / ".pivotbuild"
    files = [*state.glob("locks/**/*"), *state.glob("cache/files/**/*"),
             *state.glob("cache/runs/**/*")]
    return {str(p.relative_to(state)): p.read_bytes() for p in sorted(files) if p.is_file()}


def test_audit_commits_exactly_what_a_plain_repro_commits(proj: Path, tmp_path: Path) -> None:
    """Locks (discovered deps included), cache objects and run-cache entries: the same bytes
    after a first run, a changed input, and the input changed back (which a plain repro
    takes from the run cache and --audit runs)."""
    write(proj, PIPELINE.replace("PY", PY))
    (proj / "helpers.py").write_text("def size(b):\n    return len(b)\n")
    (proj / "score.py").write_text("import helpers\n"
                                   "print(helpers.size(open('model.bin', 'rb').read()))\n")
    other = tmp_path / "other"
    shutil.copytree(proj, other)
    steps = [None, "b\n", "a\n"]  # first run; a changed input; the input back (run cache)
    for content in steps:
        for root in (proj, other):
            if content is not None:
                (root / "data" / "in.csv").write_text(content)
        plain = run(["repro"], proj)
        audited = run(["repro", "--audit"], other)
        assert (plain.code, audited.code) == (0, 0), plain.err + audited.err
        assert set(warnings(audited.err)) == {"prepare", "train"}
        assert warnings(plain.err) == {}
        assert committed(proj) == committed(other)
        assert committed(proj)
        for path in ("model.bin", "metrics.json", "prepared/sorted.csv", "score.txt"):
            assert (proj / path).read_bytes() == (other / path).read_bytes()
    score = json.loads((other / ".pivotbuild" / "locks" / "score.json").read_text())
    assert [d["path"] for d in score["discovered"]] == ["helpers.py"]
    assert ran(proj) == ["prepare", "train", "score"] * 2  # the last from the run cache
    assert ran(other) == ["prepare", "train", "score"] * 3  # --audit ran them, traced


READER_C = """\
    #include <fcntl.h>
    #include <unistd.h>
    int main(int argc, char **argv) {
        char buf[256];
        for (int i = 1; i < argc; i++) {
            int fd = open(argv[i], O_RDONLY);
            if (fd < 0) return 2;
            ssize_t n = read(fd, buf, sizeof buf);
            if (n > 0 && write(1, buf, (size_t)n) < 0) return 3;
            close(fd);
        }
        return 0;
    }
"""


@pytest.fixture(scope="module")
def static_reader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A statically linked program: the preload cannot reach it, so it runs under strace."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc (with a static libc) is required by this test")
    where = tmp_path_factory.mktemp("static")
    (where / "sread.c").write_text(textwrap.dedent(READER_C))
    subprocess.run([gcc, "-O1", "-static", "-o", str(where / "sread"), str(where / "sread.c")],
                   check=True, capture_output=True)
    return where / "sread"


def test_a_static_binary_is_traced_with_strace_and_said_once(proj: Path,
                                                             static_reader: Path) -> None:
    assert audit.find_strace() is not None, "strace 5.2 or newer is required by this test"
    write(proj, f"""
        [stages.one]
        cmd = "echo one >> runs.log; {static_reader} data/extra.csv > one.txt"
        outs = ["one.txt"]

        [stages.two]
        cmd = "echo two >> runs.log; {static_reader} data/in.csv data/extra.csv > two.txt"
        deps = ["data/in.csv"]
        outs = ["two.txt"]
        """)
    result = run(["repro", "--audit", "--json", "-j", "1"], proj)
    assert result.code == 0, result.err
    assert sorted(ran(proj)) == ["one", "two"]
    doc = stages(result.out)
    assert doc["one"]["undeclared_reads"] == doc["two"]["undeclared_reads"] == ["data/extra.csv"]
    notice = (f"pivotbuild: warning: audit: {static_reader} cannot load the read tracer (a "
              "static or 32-bit binary); traced it with strace")
    assert result.err.splitlines().count(notice) == 1
    assert (proj / "two.txt").read_text() == "a\nb\n"
