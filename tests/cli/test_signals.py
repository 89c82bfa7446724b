"""SIGTERM, SIGHUP and SIGINT to a running `repro`: every stage command (with its children)
stops, no lock is written, the exit code is 128 + the signal, and stderr says "interrupted"
once. SIGKILL of pivotbuild: no stage command outlives it (SPEC §8)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.conftest import run

# An odd duration marks this file's stage commands in /proc (the `sleep` is the child of
# the stage's `sh`, or its grandchild through a subshell).
SLEEP = "97.3179"


def sleepers() -> list[int]:
    """Pids of live `sleep SLEEP` processes."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if argv[:2] == [b"sleep", SLEEP.encode()] and state != "Z":
            found.append(int(entry))
    return found


def wait_until(predicate, limit: float = 60.0) -> bool:
    """Poll until predicate() holds (bounded, so a broken build fails instead of hanging)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture(autouse=True)
def no_sleeper_left_behind():
    """Whatever a test does, it leaves none of its sleeps running (even when it fails)."""
    yield
    for pid in sleepers():
        os.kill(pid, signal.SIGKILL)


def sleeping_project(root: Path, stages: int = 1) -> Path:
    """Stages that each start, mark that they started, then sleep in a child of sh (and,
    for the second stage, a grandchild through a subshell)."""
    text = ""
    for i in range(stages):
        sleeper = f"sleep {SLEEP}" if i % 2 == 0 else f"(sleep {SLEEP}; true)"
        text += (f'[stages.s{i}]\ncmd = "echo started >> started-{i}; {sleeper}; '
                 f'echo done > out{i}"\nouts = ["out{i}"]\n\n')
    (root / "pivot.toml").write_text(text)
    return root


def start(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pivotbuild", *args], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_stages(root: Path, proc: subprocess.Popen[str], stages: int) -> None:
    def all_sleeping() -> bool:
        return (all((root / f"started-{i}").exists() for i in range(stages))
                and len(sleepers()) >= stages)

    if not wait_until(all_sleeping):
        proc.kill()
        _out, err = proc.communicate()
        pytest.fail(f"the stages never started: {err}")


def locks(root: Path) -> list[str]:
    directory = root / ".pivotbuild" / "locks"
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129),
                                           (signal.SIGINT, 130)])
def test_a_stop_signal_stops_every_command_and_writes_no_lock(project, sig, code):
    sleeping_project(project, stages=2)
    proc = start(project, "repro", "-j", "2")
    wait_for_stages(project, proc, 2)
    proc.send_signal(sig)
    try:
        _out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
        pytest.fail(f"repro did not stop after {sig!r}: {err}")
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if "interrupted" in line] == [
        "pivotbuild: error: interrupted"]
    assert not err.startswith("\n")  # no blank line before it
    assert wait_until(lambda: sleepers() == []), "a stage command outlived the interrupt"
    assert locks(project) == []
    assert not (project / "out0").exists() and not (project / "out1").exists()
    statuses = {r["stage"]: r["status"]
                for r in json.loads(run(["history", "--json"], project).out)["runs"]}
    assert statuses == {"s0": "interrupted", "s1": "interrupted"}
    # Nothing was committed: the next repro runs both stages again.
    (project / "pivot.toml").write_text((project / "pivot.toml").read_text().replace(
        f"sleep {SLEEP}", "true"))
    again = run(["repro"], project)
    assert again.code == 0, again.err
    assert locks(project) == ["s0.json", "s1.json"]
    assert (project / "started-0").read_text() == "started\nstarted\n"


def test_a_second_sigterm_while_stopping_changes_nothing(project):
    sleeping_project(project, stages=1)
    proc = start(project, "repro")
    wait_for_stages(project, proc, 1)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)  # a second one while stopping changes nothing
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.count("interrupted") == 1 and "Traceback" not in err
    assert wait_until(lambda: sleepers() == [])


def test_sigkill_leaves_no_stage_command_behind(project):
    sleeping_project(project, stages=2)
    proc = start(project, "repro", "-j", "2")
    wait_for_stages(project, proc, 2)
    proc.kill()
    proc.communicate()
    assert wait_until(lambda: sleepers() == []), "a stage command outlived a killed pivotbuild"
    assert locks(project) == []


def test_a_normal_run_leaves_its_watchdog_nowhere(project):
    """The guard process ends with the run: nothing of the run stays behind."""
    (project / "pivot.toml").write_text('[stages.a]\ncmd = "echo $PIVOTBUILD_RUN > o"\n'
                                        'outs = ["o"]\n')
    result = run(["repro"], project)
    assert result.code == 0, result.err
    token = (project / "o").read_text().strip()
    assert token

    def carriers() -> list[str]:
        hits = []
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and token.encode() in Path(
                        f"/proc/{entry}/cmdline").read_bytes():
                    hits.append(entry)
            except OSError:
                continue
        return hits

    assert wait_until(lambda: carriers() == [])


def test_sigterm_with_the_live_display_gives_the_terminal_back(project):
    """On a terminal the progress bar hides the cursor; an interrupt must stop the display
    (cursor shown again) before the one "interrupted" line."""
    import pty

    sleeping_project(project, stages=1)
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "pivotbuild", "repro"], cwd=project,
                            stdin=terminal, stdout=terminal, stderr=terminal,
                            env={**os.environ, "TERM": "xterm", "COLUMNS": "100"})
    os.close(terminal)
    try:
        wait_for_stages(project, proc, 1)
        proc.send_signal(signal.SIGTERM)
        seen = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=60) == 143
    finally:
        os.close(controller)
        if proc.poll() is None:
            proc.kill()
    text = seen.decode("utf-8", "replace")
    assert "\x1b[?25l" in text  # the display was on ...
    assert text.rindex("\x1b[?25h") > text.rindex("\x1b[?25l")  # ... and gave the cursor back
    assert text.count("pivotbuild: error: interrupted") == 1
    assert text.rindex("pivotbuild: error: interrupted") > text.rindex("\x1b[?25h")
    assert wait_until(lambda: sleepers() == [])


FINALIZER_SCRIPT = """
import os, signal, sys, threading, time
from pivotbuild import entry

class Finalized:
    def __del__(self):
        # The signal lands while this finalizer runs, where Python cannot raise it.
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)).start()
        time.sleep(2)

def command():
    thing = Finalized()
    del thing
    time.sleep(10)
    print("finished as if nothing had happened", file=sys.stderr)

entry._main = command
entry.main()
"""


def test_an_interrupt_that_lands_in_a_finalizer_is_not_lost(tmp_path):
    """Python prints an exception raised in a finalizer as "Exception ignored" and goes on:
    a SIGTERM that lands there must still end the command (found by the kill harness)."""
    proc = subprocess.run([sys.executable, "-c", FINALIZER_SCRIPT], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr == "pivotbuild: error: interrupted\n"
