"""The project lock: a second writer fails at once naming the holder, or waits
with --wait; readers never block; a killed holder leaves no stale lock."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.conftest import run

SLOW = """
[stages.slow]
cmd = "touch started; while [ ! -e release ]; do sleep 0.05; done; echo done > out"
outs = ["out"]
"""


def _start_holder(root: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "pivotbuild", "repro"], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        if (root / "started").exists():
            return proc
        time.sleep(0.02)
    proc.kill()
    pytest.fail("the holder never started its stage")


@pytest.fixture
def held(tmp_path: Path):
    (tmp_path / "pivot.toml").write_text(SLOW)
    proc = _start_holder(tmp_path)
    yield tmp_path, proc
    (tmp_path / "release").touch()
    proc.kill()
    proc.wait()


def test_second_writer_fails_at_once_naming_the_holder(held):
    root, proc = held
    for args in (["commit"], ["repro"], ["checkout"], ["gc"]):
        result = run(args, root)
        assert result.code == 1, args
        assert f"pid {proc.pid}: pivotbuild repro" in result.err, result.err
        assert "--wait" in result.err


def test_readers_never_block(held):
    root, _ = held
    assert run(["status"], root).code == 0
    assert run(["dag"], root).code == 0
    assert run(["history"], root).code == 0
    assert run(["repro", "--dry-run"], root).code == 0


def test_wait_lets_the_second_writer_through(held):
    root, proc = held
    waiter = subprocess.Popen([sys.executable, "-m", "pivotbuild", "repro", "--wait", "60"],
                              cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    time.sleep(0.5)
    assert waiter.poll() is None  # still waiting
    (root / "release").touch()
    assert proc.wait(timeout=60) == 0
    _out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err


def test_a_killed_holder_leaves_no_stale_lock(held):
    root, proc = held
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (root / "release").touch()
    result = run(["repro"], root)
    assert result.code == 0, result.err
