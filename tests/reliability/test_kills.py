"""SIGKILL at random moments during repro -j 2, commit, checkout, gc, push and pull:
no torn lock, no bad object in the cache or on the remote, a sound state.db, and the
next run converges (killharness.py; `python -m tests.reliability.killharness` for
thousands of kills)."""

from __future__ import annotations

import os

from tests.reliability.killharness import COMMANDS, run_kills

KILLS = int(os.environ.get("PIVOTBUILD_HARNESS_KILLS", "150"))  # 25 per command


def test_random_kills_lose_nothing(tmp_path):
    stats = run_kills(tmp_path, KILLS)
    assert set(stats.kills) == set(COMMANDS)
    assert sum(stats.kills.values()) == KILLS
    assert stats.violations == []
