"""SIGKILL at random moments during `commit` and `repro` of a multi-output stage:
every lock parses and is the old or the new one, every cache object matches its
name, and the next command succeeds."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pivotbuild.hashing import PythonBackend
from pivotbuild.lock import parse_lock
from tests.cli.conftest import run

# 25 kills per command, 50 in all; PIVOTBUILD_KILLS raises it for long runs.
KILLS = int(os.environ.get("PIVOTBUILD_KILLS", "25"))

STAGE = """
[stages.multi]
cmd = "sh make.sh"
deps = ["make.sh", "version"]
outs = ["one.txt", "two.txt", "tree", {path = "note.txt", cache = false}]
"""

MAKE = """\
v=$(cat version)
echo "one $v" > one.txt
echo "two $v" > two.txt
mkdir -p tree
i=0
while [ $i -lt 150 ]; do echo "$v $i" > tree/f$i; i=$((i+1)); done
echo "note $v" > note.txt
"""


def _project(root: Path, version: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pivot.toml").write_text(STAGE)
    (root / "make.sh").write_text(MAKE)
    (root / "version").write_text(f"{version}\n")
    return root


def _lock_bytes(root: Path) -> bytes | None:
    path = root / ".pivotbuild" / "locks" / "multi.json"
    return path.read_bytes() if path.exists() else None


def _check_cache(root: Path) -> None:
    backend = PythonBackend()
    files = root / ".pivotbuild" / "cache" / "files"
    for obj in files.glob("*/*"):
        if obj.name.startswith("."):
            continue  # a temp file a killed writer left: never a valid object name
        name = obj.parent.name + obj.name
        expected = name.removesuffix(".dir")
        assert backend.hash_bytes(obj.read_bytes()) == expected, f"corrupt object {name}"


def _reference_locks(tmp_path: Path) -> dict[int, bytes]:
    """The lock each version produces (locks are byte-identical in any checkout)."""
    refs = {}
    for version in (0, 1):
        ref = _project(tmp_path / f"ref{version}", version)
        assert run(["repro"], ref).code == 0
        refs[version] = _lock_bytes(ref)
    return refs


def _kill_at_random(args: list[str], cwd: Path, delay: float) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "pivotbuild", *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.kill()
    proc.wait()


def _duration(args: list[str], cwd: Path) -> float:
    start = time.monotonic()
    assert run(args, cwd).code == 0
    return time.monotonic() - start


@pytest.mark.parametrize("command", ["commit", "repro"])
def test_sigkill_never_leaves_a_torn_lock_or_a_bad_object(tmp_path, command):
    refs = _reference_locks(tmp_path)
    rng = random.Random(20261126)
    project = _project(tmp_path / "p", 0)
    assert run(["repro"], project).code == 0
    current = 0
    # One full run of the command, to spread kills over its whole length.
    (project / "version").write_text("1\n")
    if command == "commit":
        shutil.rmtree(project / "tree")
        assert run(["repro", "--no-commit"], project).code == 0
    duration = _duration([command], project)
    current = 1
    for _ in range(KILLS):
        new = 1 - current
        (project / "version").write_text(f"{new}\n")
        if command == "commit":
            # Workspace outputs for the new version, then commit them (killed).
            assert run(["repro", "--no-commit"], project).code == 0
        old_lock = _lock_bytes(project)
        _kill_at_random([command], project, rng.uniform(0, duration * 1.2))
        after = _lock_bytes(project)
        assert after in (old_lock, refs[new]), "torn or foreign lock"
        parse_lock(after, "multi")
        _check_cache(project)
        follow = run([command], project)
        assert follow.code == 0, follow.err
        assert _lock_bytes(project) == refs[new]
        current = new
    assert run(["verify", "--cache"], project).code == 0
