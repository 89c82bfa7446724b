"""Kills (SIGKILL, and some SIGTERM) at random moments during repro -j 2 (restoring from the
run cache, or running its stages), commit, checkout, gc, push and pull (to a local directory
and to S3 on a loopback moto server): no torn lock, no bad object in the cache or on the
remote, no surviving stage command, no source made read-only, a sound state.db, and the
next run converges (killharness.py; `python -m tests.reliability.killharness` for thousands
of kills)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.killharness import (
    COMMANDS,
    Harness,
    Stats,
    objects_whole,
    run_kills,
    sources_writable,
)

# 6 per command in the suite (a round takes seconds: S3 transfers, a stage that sleeps);
# PIVOTBUILD_HARNESS_KILLS raises it, `python -m tests.reliability.killharness` for thousands.
KILLS = int(os.environ.get("PIVOTBUILD_HARNESS_KILLS", "54"))


@pytest.mark.slow
def test_random_kills_lose_nothing(tmp_path):
    stats = run_kills(tmp_path, KILLS)
    assert set(stats.kills) == set(COMMANDS)
    assert sum(stats.kills.values()) == KILLS
    assert stats.terms > 0
    assert stats.violations == []


def test_the_checks_see_what_they_look_for(tmp_path: Path):
    """The harness's own checks flag a surviving process, a read-only source and an object
    that does not match its name (so that zero violations means something)."""
    harness = Harness(tmp_path / "h")
    name, value = harness.marker.split("=", 1)
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                              env={**os.environ, name: value})
    try:
        stats = Stats()
        harness._check_survivors(stats, "planted")
        assert len(stats.violations) == 1 and str(orphan.pid) in stats.violations[0]
        assert orphan.wait(timeout=10) == -signal.SIGKILL  # and it was killed
    finally:
        orphan.kill()
        orphan.wait()
    root = tmp_path / "h" / "ref0"
    (root / "version").chmod(0o444)
    assert sources_writable(root) == [f"{root / 'version'}: made read-only"]
    objects = sorted((root / ".pivotbuild" / "cache" / "files").glob("*/*"))
    victim = objects[0]
    victim.chmod(0o644)
    victim.write_bytes(b"not what it was\n")
    problems = objects_whole(root / ".pivotbuild" / "cache")
    assert problems == [(f"{root / '.pivotbuild' / 'cache'}: object "
                         f"{victim.parent.name + victim.name} does not match its content")]
