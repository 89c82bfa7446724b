"""The fork server (forkserver.py) that runs whole-command tests: a command run through it
gives what ``python -m pivotbuild`` gives (exit code, stdout, stderr, files), in the given
cwd and environment, and run() falls back to a real process when the server cannot serve."""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import conftest
from tests.cli.conftest import Result, lock, ran, run
from tests.cli.forkserver import NOT_PRELOADED, ForkServer, Unavailable

STAGES = """\
[stages.gen]
cmd = "echo gen >> runs.log; cat src.txt src.txt > data.txt"
deps = ["src.txt"]
outs = ["data.txt"]

[stages.count]
cmd = "echo count >> runs.log; wc -c < data.txt > count.txt"
deps = ["data.txt"]
outs = ["count.txt"]
"""


@pytest.fixture
def server() -> Iterator[ForkServer]:
    """A server of the test's own (the one run() uses is left alone)."""
    own = ForkServer()
    yield own
    own.close()


def through(server: ForkServer, args: list[str], cwd: Path,
            env: dict[str, str] | None = None, **kw: object) -> Result:
    code, out, err = server.run(args, cwd, {**os.environ, **(env or {})}, **kw)  # type: ignore[arg-type]
    return Result(code, conftest._text(out), conftest._text(err))


def real(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Result:
    proc = subprocess.run([sys.executable, "-m", "pivotbuild", *args], cwd=cwd,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300, check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def staged(project: Path) -> Path:
    (project / "pivot.toml").write_text(STAGES)
    (project / "src.txt").write_text("hello\n")
    return project


def test_exit_codes_and_output_are_the_commands(server: ForkServer, staged: Path) -> None:
    done = through(server, ["repro"], staged)
    assert done.code == 0 and ran(staged) == ["gen", "count"]
    assert "2 ran, 0 failed" in done.err and done.out == ""
    assert (staged / "count.txt").read_text().strip() == "12"
    assert lock(staged, "count")["outs"][0]["path"] == "count.txt"
    listed = through(server, ["list"], staged)
    assert (listed.code, listed.out, listed.err) == (0, "gen\ncount\n", "")

    (staged / "pivot.toml").write_text(STAGES.replace("cat src.txt", "exit 3; cat src.txt"))
    failed = through(server, ["repro"], staged)
    assert failed.code == 1 and "gen" in failed.err and "Traceback" not in failed.err

    (staged / "pivot.toml").write_text("[stages.x]\ncmd = 1\n")
    bad = through(server, ["status"], staged)
    assert bad.code == 2 and "pivot.toml" in bad.err and bad.out == ""
    usage = through(server, ["no-such-command"], staged)
    assert usage.code == 2 and "No such command 'no-such-command'" in usage.err


def test_the_environment_is_the_commands(server: ForkServer, staged: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Variables added, changed and removed reach pivotbuild and the commands it starts."""
    monkeypatch.setenv("FORKSERVER_GONE", "server's")
    server.start()  # with FORKSERVER_GONE in its own environment
    monkeypatch.delenv("FORKSERVER_GONE")
    (staged / "pivot.toml").write_text(
        '[stages.env]\ncmd = "echo $${FORKSERVER_SET-unset} $${FORKSERVER_GONE-unset} > env.txt"'
        '\nouts = ["env.txt"]\nalways_changed = true\n')
    shared = staged.parent / "shared-cache"
    result = through(server, ["repro"], staged,
                     {"FORKSERVER_SET": "given", "PIVOTBUILD_CACHE_DIR": str(shared)})
    assert result.code == 0, result.err
    assert (staged / "env.txt").read_text() == "given unset\n"
    assert list((shared / "files").glob("*/*")), "the cache went where the environment said"
    assert not (staged / ".pivotbuild" / "cache" / "files").exists()
    traced = through(server, ["status"], staged, {"PIVOTBUILD_FASTPATH_TRACE": "1"})
    assert "pivotbuild: fast path" in traced.err
    assert "fast path" not in through(server, ["status"], staged).err


def test_the_cwd_is_the_commands(server: ForkServer, staged: Path) -> None:
    (staged / "sub").mkdir()
    (staged / "sub" / "f.txt").write_text("x\n")
    inside = through(server, ["hash", "f.txt"], staged / "sub")
    assert inside.code == 0 and inside.out.endswith("  f.txt\n")
    assert through(server, ["hash", "f.txt"], staged).code == 1  # no such file there
    elsewhere = staged.parent / "other"
    elsewhere.mkdir()
    (elsewhere / "pivot.toml").write_text('[stages.o]\ncmd = "pwd > where.txt"\n'
                                          'outs = ["where.txt"]\n')
    assert through(server, ["repro"], elsewhere).code == 0
    assert (elsewhere / "where.txt").read_text().strip() == str(elsewhere)


def test_a_command_killed_by_a_signal_says_so(server: ForkServer, project: Path) -> None:
    (project / "pivot.toml").write_text('[stages.k]\ncmd = "kill -KILL $PPID; sleep 5"\n'
                                        'outs = ["k.txt"]\n')
    assert through(server, ["repro"], project).code == -signal.SIGKILL
    assert real(["repro"], project).code == -signal.SIGKILL


def test_sigterm_is_handled_as_in_a_fresh_process(server: ForkServer, project: Path) -> None:
    """The child has a fresh interpreter's signal dispositions: pivotbuild's SIGTERM handler
    is installed, the command stops as on Ctrl-C and exits 143."""
    (project / "pivot.toml").write_text('[stages.t]\ncmd = "kill -TERM $PPID; sleep 5"\n'
                                        'outs = ["t.txt"]\n')
    result = through(server, ["repro"], project)
    assert result.code == 143, result.err
    assert "interrupted" in result.err and "Traceback" not in result.err
    assert not (project / ".pivotbuild" / "locks" / "t.json").exists()


def test_concurrent_commands_run_at_the_same_time(server: ForkServer, tmp_path: Path) -> None:
    """Two threads' commands run side by side: each stage waits for the other's to start."""
    roots = [tmp_path / "a", tmp_path / "b"]
    for me, other in (roots, roots[::-1]):
        me.mkdir()
        (me / "pivot.toml").write_text(
            f'[stages.w]\ncmd = "touch {me}/started; i=0; while [ ! -e {other}/started ]; '
            f'do i=$((i+1)); [ $i -gt 600 ] && exit 9; sleep 0.05; done; echo ok > w.txt"\n'
            'outs = ["w.txt"]\n')
    results: dict[Path, Result] = {}
    threads = [threading.Thread(target=lambda r=r: results.__setitem__(r, through(
        server, ["repro"], r))) for r in roots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[r].code for r in roots] == [0, 0], [results[r].err for r in roots]
    assert all((r / "w.txt").read_text() == "ok\n" for r in roots)


def test_a_timeout_kills_the_command_and_the_server_serves_on(server: ForkServer,
                                                             project: Path) -> None:
    (project / "pivot.toml").write_text('[stages.slow]\ncmd = "echo $PPID > pid; sleep 30"\n'
                                        'outs = ["out.txt"]\n')
    with pytest.raises(subprocess.TimeoutExpired):
        server.run(["repro"], project, dict(os.environ), timeout=6)
    pid = int((project / "pid").read_text())
    assert not Path(f"/proc/{pid}").exists(), "the timed-out command was killed and reaped"
    assert through(server, ["list"], project).out == "slow\n"


def test_a_start_up_variable_sends_the_command_to_a_real_process(tmp_path: Path,
                                                                 project: Path) -> None:
    """PYTHONPATH is read as the interpreter starts: run() starts a real one for it."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text("import sys\nsys.stderr.write('fresh start\\n')\n")
    assert run(["list"], project, {"PYTHONPATH": str(hook)}).err == "fresh start\n"
    assert run(["list"], project).err == ""


def test_run_falls_back_to_a_real_process_when_the_server_dies(
        staged: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dying = ForkServer()
    try:
        dying.start()
        assert dying.pid is not None
        os.kill(dying.pid, signal.SIGKILL)
        time.sleep(0.1)
        with pytest.raises(Unavailable):
            dying.run(["list"], staged, dict(os.environ))
        assert dying.dead is not None
        monkeypatch.setattr(conftest, "_SERVER", dying)
        monkeypatch.setattr(conftest, "_WARNED", set())
        with pytest.warns(UserWarning, match="fork server"):
            result = run(["repro"], staged)
        assert result.code == 0 and ran(staged) == ["gen", "count"]
        assert run(["list"], staged).out == "gen\ncount\n"  # and on, without a new warning
    finally:
        dying.close()


def test_a_server_that_cannot_start_is_unavailable(tmp_path: Path) -> None:
    never = ForkServer(start_timeout=0.001)
    with pytest.raises(Unavailable, match="did not start"):
        never.start()
    with pytest.raises(Unavailable):
        never.run(["list"], tmp_path, dict(os.environ))
    never.close()


def _comparable(result: Result, root: Path) -> tuple[int, str, str]:
    """The result with wall times and the project's own directory name taken out."""
    def clean(text: str) -> str:
        text = re.sub(r" in \d+(\.\d+)?s\b", " in Ts", text)
        text = re.sub(r'("(started_at|duration_s)": )[0-9.e-]+', r"\1T", text)
        return text.replace(str(root), "ROOT")
    return result.code, clean(result.out), clean(result.err)


COMMAND_LINES = [
    ["--version"], ["--help"], ["list"], ["status"], ["status", "--json"], ["repro"],
    ["repro", "--json"], ["status"], ["dag", "--json"], ["verify"], ["history", "--json"],
    ["hash", "src.txt", "data.txt"], ["commit"], ["gc", "--dry-run"], ["repro", "nope"],
    ["status", "-x"], ["checkout"], ["clean", "--dry-run"],
]


def test_the_same_commands_give_the_same_results_both_ways(server: ForkServer,
                                                           staged: Path) -> None:
    """The same command lines, in order, on two copies of one project: through the server
    and as real processes; same exit codes, same output, same files."""
    twin = staged.parent / "twin"
    shutil.copytree(staged, twin)
    (staged / "unreadable").write_text("secret\n")
    (twin / "unreadable").write_text("secret\n")
    for root in (staged, twin):
        (root / "unreadable").chmod(0)
    for args in COMMAND_LINES:
        forked = _comparable(through(server, args, staged), staged)
        fresh = _comparable(real(args, twin), twin)
        assert forked == fresh, args
    for args in (["hash", "--no-state", "unreadable"], ["repro"]):
        forked = _comparable(through(server, args, staged, obey_permissions=True), staged)
        preexec = (conftest._drop_dac_capabilities if os.geteuid() == 0 else None)
        proc = subprocess.run([sys.executable, "-m", "pivotbuild", *args], cwd=twin,
                              capture_output=True, text=True, preexec_fn=preexec,
                              stdin=subprocess.DEVNULL, check=False)
        assert forked == _comparable(Result(proc.returncode, proc.stdout, proc.stderr), twin)
    assert forked[0] == 0
    assert ran(staged) == ran(twin) and ran(staged)
    assert _files(staged) == _files(twin)


def _files(root: Path) -> list[str]:
    """The project's files (the state database aside), with the names of the cached expanded
    projects (named after the project's path) made alike."""
    names = (p.relative_to(root).as_posix() for p in root.rglob("*") if "state.db" not in p.name)
    return sorted(re.sub(r"cache/projects/\w+", "cache/projects/P", name) for name in names)


# ---- the preloaded modules take nothing at import that a fresh start takes afresh ---------

# Module-level calls of these (and reads of os.environ, sys.argv) that would freeze, in the server, what a
# command's own start would see: the environment, the cwd, argv, the terminal, the clock,
# the process, the file system, randomness, threads, the hashing backend.
AT_IMPORT = frozenset((
    "environ", "getenv", "getcwd", "getcwdb", "cwd", "argv", "isatty", "get_terminal_size",
    "time", "time_ns", "monotonic", "perf_counter", "process_time", "now", "today", "utcnow",
    "cpu_count", "sched_getaffinity", "getpid", "getppid", "home", "expanduser", "expandvars",
    "gettempdir", "mkdtemp", "mkstemp", "TemporaryFile", "NamedTemporaryFile", "umask",
    "getuid", "geteuid", "getgid", "getlogin", "getuser", "gethostname", "uname", "node",
    "random", "randint", "getrandbits", "urandom", "token_hex", "token_bytes", "uuid1",
    "uuid4", "getlocale", "setlocale", "getpreferredencoding", "which", "stat", "lstat",
    "exists", "isdir", "isfile", "listdir", "scandir", "open", "read_text", "read_bytes",
    "getrlimit", "sysconf", "Thread", "Timer", "ThreadPoolExecutor", "ProcessPoolExecutor",
    "start", "CDLL", "dlopen", "get_backend", "register_at_fork", "signal", "stdout",
    "stderr", "stdin",
))


def _run_at_import(tree: ast.Module) -> Iterator[ast.AST]:
    """The expressions a module evaluates when it is imported (function bodies left out)."""
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            pending += node.decorator_list
            pending += [d for d in (*node.args.defaults, *node.args.kw_defaults) if d]
        elif isinstance(node, ast.Lambda):
            continue
        elif isinstance(node, ast.stmt):
            pending += ast.iter_child_nodes(node)
        else:
            yield node
            pending += ast.iter_child_nodes(node)


def _import_time_reads(path: Path) -> list[str]:
    found = []
    for node in _run_at_import(ast.parse(path.read_text(), str(path))):
        name = None
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            name = name if name in AT_IMPORT else None
        elif isinstance(node, ast.Attribute) and node.attr in ("environ", "argv"):
            name = node.attr  # read, not called: os.environ["X"], sys.argv[1:]
        if name is not None:
            found.append(f"{path}:{node.lineno}: {name}")
    return found


PACKAGE = Path(__file__).resolve().parents[2] / "pivotbuild"


def test_preloaded_modules_read_nothing_at_import_that_a_start_reads_afresh() -> None:
    """What the fork server imports once must not hold what each command's own start would
    read: a module that reads the environment, the cwd, the clock... at import goes in
    forkserver.NOT_PRELOADED, or better, reads it when called."""
    left_out = {name.removeprefix("pivotbuild.").replace(".", "/") + ".py"
                for name in NOT_PRELOADED}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in left_out or relative.startswith("discover/") or relative == "_core_build.py":
            continue  # discover/ runs in a stage's Python; _core_build.py only at install
        found += _import_time_reads(path)
    assert found == []


def test_the_audit_sees_a_read_at_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os, time\n"
                      "HOME = os.environ.get('HOME')\n"
                      "class C:\n    started = time.monotonic()\n"
                      "def f(x=os.getcwd()):\n    return os.environ['X'], time.time()\n")
    found = _import_time_reads(module)
    assert sorted(line.removeprefix(f"{module}:") for line in found) == [
        "2: environ", "4: monotonic", "5: getcwd"]
