"""runners/local.py: a stage's commands as local processes, through the StageRunner interface."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from pivotbuild.runners import INTERRUPTED, Cancel, StageSpec
from pivotbuild.runners.local import LocalRunner
from tests.ptyrun import run_in_pty


def run(spec: StageSpec, cancel: Cancel | None = None) -> tuple[int, list[str]]:
    lines: list[str] = []
    runner = LocalRunner()
    cancel = cancel or Cancel()
    runner.open(cancel)
    try:
        code = runner.run(spec, lines.append, cancel)
    finally:
        runner.close()
    return code, [line.rstrip("\n") for line in lines]


def test_commands_run_in_order_in_wdir_with_the_stage_environment(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    spec = StageSpec("s", ("echo one; pwd", "echo two >&2; echo $PIVOTBUILD_STAGE $EXTRA"),
                     str(tmp_path), "sub", env={"PIVOTBUILD_STAGE": "s", "EXTRA": "x"})
    code, lines = run(spec)
    assert code == 0
    assert lines == ["one", str(tmp_path / "sub"), "two", "s x"]  # stderr joins stdout


def test_the_first_failing_command_stops_the_stage(tmp_path: Path):
    spec = StageSpec("s", ("echo a", "exit 3", "touch never"), str(tmp_path))
    code, lines = run(spec)
    assert (code, lines) == (3, ["a"])
    assert not (tmp_path / "never").exists()


def test_a_command_killed_by_a_signal_is_128_plus_the_signal(tmp_path: Path):
    code, _ = run(StageSpec("s", ("kill -TERM $$",), str(tmp_path)))
    assert code == 128 + 15


def test_cancel_stops_a_running_command_and_starts_no_more(tmp_path: Path):
    cancel = Cancel()
    spec = StageSpec("s", ("touch started; sleep 60", "touch never"), str(tmp_path))
    result: list[tuple[int, list[str]]] = []
    thread = threading.Thread(target=lambda: result.append(run(spec, cancel)))
    thread.start()
    deadline = time.monotonic() + 10
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    cancel.set()  # stops the command's process group (SIGINT first)
    thread.join(30)
    assert result and result[0][0] == INTERRUPTED
    assert not (tmp_path / "never").exists()


def test_a_cancelled_runner_starts_nothing(tmp_path: Path):
    cancel = Cancel()
    cancel.set()
    code, lines = run(StageSpec("s", ("touch never",), str(tmp_path)), cancel)
    assert (code, lines) == (INTERRUPTED, [])
    assert not (tmp_path / "never").exists()


# ---- the console pool ------------------------------------------------------------------------

_CONSOLE_CHILD = """
import sys
from pivotbuild.runners import Cancel, StageSpec
from pivotbuild.runners.local import LocalRunner
runner, cancel = LocalRunner(), Cancel()
runner.open(cancel)
spec = StageSpec("ask", (sys.argv[1],), sys.argv[2], console=True)
code = runner.run(spec, lambda line: print("SINK:", line, end=""), cancel)
runner.close()
print("code", code)
"""


def test_a_console_stage_gets_the_terminal_not_the_sink(tmp_path: Path):
    """Under a terminal: the command's stdin, stdout and stderr are it (it can read what is
    typed), and nothing goes through the output sink."""
    cmd = ('[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo "all three on the terminal"; '
           'read answer; echo "got $answer"; echo "to stderr" >&2')
    code, text = run_in_pty([sys.executable, "-c", _CONSOLE_CHILD, cmd, str(tmp_path)],
                            tmp_path, send=b"yes\n")
    assert code == 0, text
    lines = text.splitlines()
    assert lines == ["all three on the terminal", "got yes", "to stderr", "code 0"]


def test_a_console_stages_stdout_goes_to_the_descriptor_it_is_given(tmp_path: Path):
    read_end, write_end = os.pipe()
    try:
        spec = StageSpec("c", ("echo out", "echo second"), str(tmp_path), console=True,
                         console_stdout=write_end)
        code, lines = run(spec)
    finally:
        os.close(write_end)
    with os.fdopen(read_end) as f:
        assert f.read() == "out\nsecond\n"
    assert (code, lines) == (0, [])


def test_cancel_stops_a_console_command_and_the_processes_it_started(tmp_path: Path):
    """A console command shares pivotbuild's process group, so it is stopped process by
    process: the shell and the sleep it started in the background both end."""
    cancel = Cancel()
    spec = StageSpec("c", ("sleep 60 & echo $! > bg.pid; touch started; wait", "touch never"),
                     str(tmp_path), console=True, console_stdout=os.open(os.devnull, os.O_WRONLY))
    result: list[tuple[int, list[str]]] = []
    thread = threading.Thread(target=lambda: result.append(run(spec, cancel)))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        background = int((tmp_path / "bg.pid").read_text())
        cancel.set()
        thread.join(30)
    finally:
        os.close(spec.console_stdout)
    assert result and result[0][0] == INTERRUPTED
    assert not (tmp_path / "never").exists()
    deadline = time.monotonic() + 10
    while _alive(background) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(background)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
