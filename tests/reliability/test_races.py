"""Races run for real: two projects writing one shared cache at the same time, two
writers in one project, and gc in one project while another stores objects."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pivotbuild.hashing import PythonBackend
from tests.cli.conftest import run

ROUNDS = int(os.environ.get("PIVOTBUILD_RACE_ROUNDS", "8"))

# Identical content in both projects: they race to store the very same objects.
STAGES = """
[stages.gen]
cmd = "mkdir -p tree; i=0; while [ $i -lt 60 ]; do echo $i > tree/f$i; i=$((i+1)); done; seq 1 5000 > big"
outs = ["tree", "big"]
"""


def _start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pivotbuild", *args], cwd=cwd,
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _cache_is_whole(cache: Path) -> None:
    backend = PythonBackend()
    for obj in (cache / "files").glob("*/*"):
        if obj.name.startswith("."):
            continue
        name = obj.parent.name + obj.name
        assert backend.hash_bytes(obj.read_bytes()) == name.removesuffix(".dir"), name


@pytest.fixture
def two_projects(tmp_path: Path):
    cache = tmp_path / "cache"
    env = {"PIVOTBUILD_CACHE_DIR": str(cache)}
    roots = []
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()
        (root / "pivot.toml").write_text(STAGES)
        roots.append(root)
    return roots, cache, env


def test_two_projects_store_the_same_objects_at_once(two_projects):
    roots, cache, env = two_projects
    for _ in range(ROUNDS):
        procs = [_start(["repro", "-f"], root, env) for root in roots]
        for proc in procs:
            _out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        _cache_is_whole(cache)
    for root in roots:
        result = run(["verify", "--cache"], root, env)
        assert result.code == 0, result.err


def test_two_writers_in_one_project(two_projects):
    roots, _cache, env = two_projects
    root = roots[0]
    for _ in range(ROUNDS):
        procs = [_start(["repro", "-f"], root, env) for _ in range(2)]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
        assert any(code == 0 for code, _ in results)
        for code, err in results:
            if code != 0:  # it lost the race for the project lock, and says to whom
                assert code == 1 and "another pivotbuild is writing this project" in err, err
        for proc in procs:
            proc.stdout.close()
            proc.stderr.close()
    both = [_start(["repro", "-f", "--wait", "120"], root, env) for _ in range(2)]
    for proc in both:
        _out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    assert run(["verify", "--cache"], root, env).code == 0


def test_gc_in_one_project_never_deletes_what_another_just_stored(two_projects):
    roots, cache, env = two_projects
    gc_env = {**env, "PIVOTBUILD_GC_GRACE_S": "3600"}
    (roots[0] / "pivot.toml").write_text('[stages.x]\ncmd = "echo x > x"\nouts = ["x"]\n')
    assert run(["repro"], roots[0], env).code == 0
    for i in range(ROUNDS):
        (roots[1] / "pivot.toml").write_text(STAGES.replace("seq 1 5000", f"seq 1 {5000 + i}"))
        writer = _start(["repro"], roots[1], env)
        collector = _start(["gc"], roots[0], gc_env)
        _out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        _out, err = collector.communicate(timeout=120)
        assert collector.returncode == 0, err
        result = run(["verify", "--cache"], roots[1], env)
        assert result.code == 0, result.err
    _cache_is_whole(cache)
