"""runners/local.py: a stage's commands as local processes, through the StageRunner interface."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pivotbuild.runners import INTERRUPTED, Cancel, StageSpec
from pivotbuild.runners.local import LocalRunner


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
