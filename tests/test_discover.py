"""discover = ["python"]: the import recorder (pivotbuild/discover/) in real Python processes,
and the reader (pivotbuild/discovered.py) that turns its records into discovered deps."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pivotbuild import discovered
from pivotbuild.errors import OperationError

HOOK = discovered.HOOK_DIR
PYENV = Path(os.path.expanduser("~/.pyenv/versions"))


def _interpreters() -> list[str]:
    """The test run's own Python, the system's (Debian's has a sitecustomize of its own), and
    the oldest and newest supported ones where pyenv has them."""
    found = [sys.executable]
    for candidate in ["/usr/bin/python3", *sorted(str(p) for p in PYENV.glob("3.8*/bin/python")),
                      *sorted(str(p) for p in PYENV.glob("3.13*/bin/python"))]:
        if os.access(candidate, os.X_OK) and candidate not in found:
            found.append(candidate)
    return found


INTERPRETERS = _interpreters()


def write(root: Path, rel: str, text: str = "") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def run(root: Path, command: str, record: Path, *, cwd: Path | None = None,
        env: dict[str, str] | None = None, discover: bool = True
        ) -> subprocess.CompletedProcess[str]:
    """``command`` under /bin/sh -c, as a stage runs it, with the recorder on."""
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    base.update(env or {})
    full = {**base, **discovered.environ(record, root, base)} if discover else base
    return subprocess.run(["/bin/sh", "-c", command], cwd=cwd or root, env=full,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """main.py imports pkg/helpers.py and runs other.py; unrelated.py is imported by nobody."""
    root = tmp_path / "proj"
    write(root, "main.py", """\
        import subprocess
        import sys
        import json  # the standard library: never recorded
        import pkg.helpers

        subprocess.run([sys.executable, "other.py"], check=True)
        print("main", pkg.helpers.VALUE)
        """)
    write(root, "pkg/__init__.py")
    write(root, "pkg/helpers.py", "VALUE = 41\n")
    write(root, "other.py", "import pkg.helpers\nprint('other')\n")
    write(root, "unrelated.py", "X = 1\n")
    return root


def test_the_recorder_file_parses_as_python_3_8_and_the_shim_as_2_7() -> None:
    ast.parse((HOOK / "_pivotbuild_discover.py").read_text(), feature_version=(3, 8))
    ast.parse((HOOK / "sitecustomize.py").read_text(), feature_version=(3, 4))
    assert sorted(p.name for p in HOOK.glob("*.py")) == ["_pivotbuild_discover.py",
                                                          "sitecustomize.py"]


@pytest.mark.parametrize("python", INTERPRETERS)
def test_script_its_imports_and_a_subprocess_script_are_recorded(
        project: Path, tmp_path: Path, python: str) -> None:
    record = tmp_path / "rec"
    proc = run(project, f"{python} main.py", record)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "other\nmain 41\n"
    assert proc.stderr == ""
    assert discovered.read([record], project) == [
        "main.py", "other.py", "pkg/__init__.py", "pkg/helpers.py"]
    # every recorded line is an absolute path inside the project: no stdlib, no site-packages
    lines = record.read_bytes().decode().splitlines()
    assert lines and all(line[2:].startswith(str(project.resolve()) + "/") for line in lines)


def test_python_dash_m_records_the_module_and_its_package(project: Path, tmp_path: Path) -> None:
    write(project, "pkg/runme.py", "import pkg.helpers\n")
    record = tmp_path / "rec"
    assert run(project, f"{sys.executable} -m pkg.runme", record).returncode == 0
    assert discovered.read([record], project) == ["pkg/__init__.py", "pkg/helpers.py",
                                                  "pkg/runme.py"]


def test_a_script_in_a_subdirectory_run_from_there(project: Path, tmp_path: Path) -> None:
    write(project, "tools/run.py", "import sys\nsys.path.insert(0, '..')\nimport pkg.helpers\n")
    record = tmp_path / "rec"
    proc = run(project, f"{sys.executable} run.py", record, cwd=project / "tools")
    assert proc.returncode == 0, proc.stderr
    assert discovered.read([record], project) == ["pkg/__init__.py", "pkg/helpers.py",
                                                  "tools/run.py"]


def test_nothing_outside_the_project_is_recorded(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    sibling = tmp_path / "proj2"  # shares the root's name as a prefix
    write(sibling, "extmod.py", "Y = 2\n")
    write(tmp_path / "elsewhere", "target.py", "Z = 3\n")
    write(root, "lib/site-packages/vendored.py", "V = 4\n")
    write(root, "mine.py", "M = 5\n")
    (root / "link.py").symlink_to(tmp_path / "elsewhere" / "target.py")
    write(root, "main.py", """\
        import sys
        sys.path[:0] = ["lib/site-packages"]
        import json, email.mime.text, extmod, vendored, link, mine
        """)
    record = tmp_path / "rec"
    env = {"PYTHONPATH": str(sibling)}
    proc = run(root, f"{sys.executable} main.py", record, env=env)
    assert proc.returncode == 0, proc.stderr
    assert discovered.read([record], root) == ["main.py", "mine.py"]
    text = record.read_text()
    for outside in ("proj2", "elsewhere", "site-packages", "/json/", "email"):
        assert outside not in text


def test_a_venv_inside_the_project_is_not_recorded(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    write(root, "main.py", "import installed\nimport mine\n")
    write(root, "mine.py")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")],
                   check=True, timeout=120)
    site = next((root / "venv").glob("lib/python3*/site-packages"))
    write(site, "installed.py", "I = 1\n")
    record = tmp_path / "rec"
    proc = run(root, "venv/bin/python main.py", record)
    assert proc.returncode == 0, proc.stderr
    assert discovered.read([record], root) == ["main.py", "mine.py"]


def test_forks_and_multiprocessing_children_are_recorded(project: Path, tmp_path: Path) -> None:
    for name in ("spawned", "forked", "served", "osfork"):
        write(project, f"pkg/{name}.py", "VALUE = 1\n")
    write(project, "par.py", """\
        import multiprocessing as mp
        import os
        import sys

        def spawned(_):
            import pkg.spawned
            return 1

        def forked(_):
            import pkg.forked
            return 1

        def served(_):
            import pkg.served
            return 1

        if __name__ == "__main__":
            with mp.get_context("spawn").Pool(1) as pool:
                assert pool.map(spawned, [0]) == [1]
            for how, target in (("fork", forked), ("forkserver", served)):
                p = mp.get_context(how).Process(target=target, args=(0,))
                p.start(); p.join()
                assert p.exitcode == 0
            pid = os.fork()
            if pid == 0:
                import pkg.osfork
                os._exit(0)
            assert os.waitpid(pid, 0)[1] == 0
            sys.exit(0)
        """)
    record = tmp_path / "rec"
    proc = run(project, f"{sys.executable} par.py", record)
    assert proc.returncode == 0, proc.stderr
    assert discovered.read([record], project) == [
        "par.py", "pkg/__init__.py", "pkg/forked.py", "pkg/osfork.py", "pkg/served.py",
        "pkg/spawned.py"]


def test_os_exec_records_what_was_imported_before(project: Path, tmp_path: Path) -> None:
    write(project, "first.py", """\
        import os, sys
        import pkg.helpers
        os.execv(sys.executable, [sys.executable, "other.py"])
        """)
    record = tmp_path / "rec"
    proc = run(project, f"{sys.executable} first.py", record)
    assert (proc.returncode, proc.stdout) == (0, "other\n")
    assert discovered.read([record], project) == [
        "first.py", "other.py", "pkg/__init__.py", "pkg/helpers.py"]


@pytest.mark.parametrize("body, code", [
    ("print('out'); import sys; sys.stderr.write('err\\n'); sys.exit(7)", 7),
    ("import pkg.helpers\nraise ValueError('boom')", 1),
    ("import os, pkg.helpers\nprint('x', flush=True)\nos._exit(9)", 9),
    ("import signal, os, pkg.helpers\nos.kill(os.getpid(), signal.SIGKILL)", -9),
])
def test_exit_code_and_output_are_the_program_s_own(project: Path, tmp_path: Path,
                                                      body: str, code: int) -> None:
    write(project, "prog.py", body + "\n")
    command = f"{sys.executable} prog.py; echo rc=$?"
    plain = run(project, command, tmp_path / "none", discover=False)
    hooked = run(project, command, tmp_path / "rec")
    want = code if code >= 0 else 128 - code
    assert plain.stdout.endswith(f"rc={want}\n")
    assert (hooked.stdout, hooked.stderr) == (plain.stdout, plain.stderr)
    if "pkg.helpers" in body:
        assert discovered.read([tmp_path / "rec"], project) == [
            "pkg/__init__.py", "pkg/helpers.py", "prog.py"]


@pytest.mark.parametrize("python", INTERPRETERS)
def test_the_environment_s_own_sitecustomize_still_runs(tmp_path: Path, python: str) -> None:
    root = tmp_path / "proj"
    write(root, "main.py", "import sitecustomize, sys\nprint(sitecustomize.__file__)\n"
                           "print(sys.path[1:])\n")
    user = tmp_path / "user site"
    write(user, "sitecustomize.py", "import os\nopen(os.environ['MARK'], 'a').write('ran\\n')\n")
    mark = tmp_path / "mark"
    env = {"PYTHONPATH": str(user), "MARK": str(mark)}
    plain = run(root, f"{python} main.py", tmp_path / "none", env=env, discover=False)
    hooked = run(root, f"{python} main.py", tmp_path / "rec", env=env)
    assert hooked.returncode == plain.returncode == 0, hooked.stderr
    assert hooked.stdout == plain.stdout  # the same sitecustomize, the same sys.path
    assert hooked.stdout.splitlines()[0] == str(user / "sitecustomize.py")
    assert hooked.stderr == plain.stderr == ""
    assert mark.read_text() == "ran\nran\n"
    assert discovered.read([tmp_path / "rec"], root) == ["main.py"]


@pytest.mark.parametrize("python", INTERPRETERS)
def test_the_interpreter_s_own_sitecustomize_is_the_one_loaded(tmp_path: Path,
                                                                python: str) -> None:
    """Debian's python3 has /usr/lib/python3.X/sitecustomize.py; others have none."""
    root = tmp_path / "proj"
    write(root, "main.py", "import sys\nm = sys.modules.get('sitecustomize')\n"
                           "print(getattr(m, '__file__', None))\n")
    plain = run(root, f"{python} main.py", tmp_path / "none", discover=False)
    hooked = run(root, f"{python} main.py", tmp_path / "rec")
    assert (hooked.returncode, hooked.stdout, hooked.stderr) == (
        plain.returncode, plain.stdout, plain.stderr)


def test_a_failing_user_sitecustomize_is_reported_as_without_the_recorder(tmp_path: Path
                                                                         ) -> None:
    root = tmp_path / "proj"
    write(root, "main.py", "print('main ran')\n")
    user = tmp_path / "user"
    write(user, "sitecustomize.py", "import no_such_module_here\n")
    env = {"PYTHONPATH": str(user)}
    plain = run(root, f"{sys.executable} main.py", tmp_path / "none", env=env, discover=False)
    hooked = run(root, f"{sys.executable} main.py", tmp_path / "rec", env=env)
    assert "Error in sitecustomize" in plain.stderr
    assert (hooked.returncode, hooked.stdout, hooked.stderr) == (
        plain.returncode, plain.stdout, plain.stderr)
    assert discovered.read([tmp_path / "rec"], root) == ["main.py"]


def test_python_2_only_chains_and_stays_silent(tmp_path: Path) -> None:
    python2 = next(iter(sorted(PYENV.glob("2.7*/bin/python"))), None)
    if python2 is None:
        pytest.skip("no Python 2.7 on this machine (pyenv)")
    root = tmp_path / "proj"
    write(root, "main.py", "import sitecustomize\nprint(sitecustomize.__file__)\n")
    user = tmp_path / "user"
    write(user, "sitecustomize.py", "X = 1\n")
    proc = run(root, f"{python2} main.py", tmp_path / "rec", env={"PYTHONPATH": str(user)})
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.strip().rstrip("c") == str(user / "sitecustomize.py")
    assert not (tmp_path / "rec").exists()


def test_replacing_pythonpath_turns_discovery_off_for_that_process(project: Path,
                                                                   tmp_path: Path) -> None:
    """The documented limit: PYTHONPATH=... replaces the recorder's directory."""
    record = tmp_path / "rec"
    assert run(project, f"PYTHONPATH=. {sys.executable} other.py", record).returncode == 0
    assert discovered.read([record], project) == []
    run(project, f"PYTHONPATH=.:$PYTHONPATH {sys.executable} other.py", record)
    assert discovered.read([record], project) == ["other.py", "pkg/__init__.py",
                                                  "pkg/helpers.py"]


def test_concurrent_processes_never_mix_their_lines(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    for i in range(150):
        write(root, f"mods/m{i:03d}_{'x' * 200}.py", f"V = {i}\n")
    write(root, "mods/__init__.py")
    write(root, "imp.py", "import importlib, os\nfor n in sorted(os.listdir('mods')):\n"
                          "    n.endswith('.py') and importlib.import_module('mods.' + n[:-3])\n")
    command = " & ".join([f"{sys.executable} imp.py"] * 8) + " & wait"
    record = tmp_path / "rec"
    assert run(root, command, record).returncode == 0
    lines = record.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert len(lines) - 1 == 8 * 152  # 150 modules, the package, the script; whole lines
    inside = b"m " + os.fsencode(root.resolve()) + b"/"
    assert all(line.startswith((inside, b"x ")) for line in lines[:-1])
    assert len(discovered.read([record], root)) == 152


def test_odd_file_names_survive_the_record(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    weird = write(root, "dir\\with\\backslash/new\nline script.py", "import pkg_ok\n")
    write(root, "pkg_ok.py")
    record = tmp_path / "rec"
    proc = subprocess.run([sys.executable, str(weird)], cwd=root, capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(root),
                               **discovered.environ(record, root, {"PYTHONPATH": str(root)})},
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert discovered.read([record], root) == ["dir\\with\\backslash/new\nline script.py",
                                               "pkg_ok.py"]


def test_a_module_imported_from_a_zip_stands_for_the_archive(tmp_path: Path) -> None:
    import zipfile

    root = tmp_path / "proj"
    root.mkdir()
    with zipfile.ZipFile(root / "lib.zip", "w") as archive:
        archive.writestr("zipped.py", "Q = 1\n")
    write(root, "main.py", "import sys\nsys.path.insert(0, 'lib.zip')\nimport zipped\n")
    record = tmp_path / "rec"
    assert run(root, f"{sys.executable} main.py", record).returncode == 0
    assert discovered.read([record], root) == ["lib.zip", "main.py"]


def test_the_project_reached_through_a_symlink(project: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(project)
    record = tmp_path / "rec"
    proc = run(alias, f"{sys.executable} main.py", record, cwd=alias)
    assert proc.returncode == 0, proc.stderr
    assert discovered.read([record], alias) == discovered.read([record], project) == [
        "main.py", "other.py", "pkg/__init__.py", "pkg/helpers.py"]


# ---- the reader alone ----

def test_reader_rules(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    write(root, "a.py")
    write(root, ".pivotbuild/tmp/x.py")
    write(root, "sub/b.py")
    (root / "adir").mkdir()
    r = str(root)
    data = (f"m {r}/a.py\nm {r}/sub/../a.py\nx {r}/.pivotbuild/tmp/x.py\nm {r}/gone.py\n"
            f"m {r}/adir\nm {tmp_path}/outside.py\nm {r}\nq {r}/sub/b.py\n"
            f"m {r}/sub/b.py\nm {r}/sub/b.p").encode()
    record = tmp_path / "rec"
    record.write_bytes(data)
    # a missing record file holds nothing; unknown kinds and the unfinished last line are skipped
    assert discovered.read([record, tmp_path / "missing"], root) == ["a.py", "sub/b.py"]
    assert list(discovered.parse(b"m /a\\\\b\\nc\nx /d\\q\n")) == [("m", "/a\\b\nc"),
                                                                  ("x", "/d\\q")]
    assert discovered.project_paths([f"{r}/adir", f"{r}/gone"], root, files_only=False) == [
        "adir"]


def test_declared_deps_are_not_discovered_again(project: Path, tmp_path: Path) -> None:
    record = tmp_path / "rec"
    assert run(project, f"{sys.executable} main.py", record).returncode == 0
    assert discovered.read([record], project, declared=["main.py", "pkg/"]) == ["other.py"]
    assert discovered.read([record], project, declared=["./pkg/helpers.py"]) == [
        "main.py", "other.py", "pkg/__init__.py"]
    assert discovered.read([record], project, declared=["."]) == []


def test_an_unreadable_record_file_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "rec").mkdir()
    with pytest.raises(OperationError, match=r"rec: cannot read the record file"):
        discovered.read([tmp_path / "rec"], tmp_path)


def test_environ_puts_the_recorder_first_and_keeps_pythonpath(tmp_path: Path) -> None:
    env = discovered.environ(tmp_path / "rec", tmp_path, {"PYTHONPATH": "/x:/y"})
    assert env == {"PYTHONPATH": f"{HOOK}:/x:/y", discovered.FILE_VAR: str(tmp_path / "rec"),
                   discovered.ROOT_VAR: str(tmp_path)}
    assert discovered.environ("rec", ".", {})["PYTHONPATH"] == str(HOOK)


def test_the_recorder_is_silent_without_its_variables(project: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(HOOK)}
    proc = subprocess.run([sys.executable, "main.py"], cwd=project, env=env,
                          capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "other\nmain 41\n", "")
