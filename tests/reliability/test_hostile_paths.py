"""Hostile and broken input on disk: symlinks out of the project in place of
outputs, corrupted locks. Nothing is written through a link; nothing crashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import run
from tests.cli.test_repro import TWO_STAGES, lock, ran


@pytest.fixture
def pipe(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pivot.toml").write_text(TWO_STAGES)
    (root / "raw.txt").write_text("hello\n")
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    target = tmp_path / "outside.txt"
    target.write_text("precious\n")
    return target


def test_repro_never_writes_through_an_output_replaced_by_a_link(pipe, outside):
    run(["repro"], pipe)
    (pipe / "clean.txt").unlink()
    (pipe / "clean.txt").symlink_to(outside)
    status = json.loads(run(["status", "--json"], pipe).out)["stages"][0]
    assert status["reasons"] == [{"kind": "out-changed", "path": "clean.txt",
                                  "detail": "symlink points outside the project"}]
    result = run(["repro"], pipe)
    assert result.code == 0, result.err
    assert outside.read_text() == "precious\n"
    assert not (pipe / "clean.txt").is_symlink()
    assert (pipe / "clean.txt").read_text() == "HELLO\n"


def test_a_stage_run_never_writes_through_a_link_either(pipe, outside):
    (pipe / "clean.txt").symlink_to(outside)  # before the first run: the cmd would follow it
    assert run(["repro"], pipe).code == 0
    assert outside.read_text() == "precious\n"
    assert ran(pipe) == ["prepare", "train"]


def test_checkout_replaces_the_link_only_with_force(pipe, outside):
    run(["repro"], pipe)
    (pipe / "clean.txt").unlink()
    (pipe / "clean.txt").symlink_to(outside)
    refused = run(["checkout"], pipe)
    assert refused.code == 1 and "clean.txt" in refused.err
    assert (pipe / "clean.txt").is_symlink()
    forced = run(["checkout", "--force"], pipe)
    assert forced.code == 0, forced.err
    assert outside.read_text() == "precious\n"
    assert (pipe / "clean.txt").read_text() == "HELLO\n" and not (pipe / "clean.txt").is_symlink()


def test_checkout_never_writes_through_a_linked_output_directory(pipe, tmp_path):
    run(["repro"], pipe)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    import shutil
    shutil.rmtree(pipe / "model", onerror=lambda f, p, e: (Path(p).parent.chmod(0o755), f(p)))
    (pipe / "model").symlink_to(elsewhere)
    result = run(["checkout", "--force"], pipe)
    assert result.code == 0, result.err
    assert list(elsewhere.iterdir()) == []
    assert (pipe / "model").is_dir() and not (pipe / "model").is_symlink()
    assert (pipe / "model" / "w").read_text() == "HELLO\n"


def test_a_directory_output_with_a_link_out_fails_its_stage(tmp_path, outside):
    root = tmp_path / "p"
    root.mkdir()
    (root / "pivot.toml").write_text(
        f'[stages.s]\ncmd = "mkdir -p d; echo 1 > d/ok; ln -s {outside} d/leak"\nouts = ["d"]\n'
    )
    result = run(["repro"], root)
    assert result.code == 1
    assert "d/leak: symlink points outside the project" in result.err
    assert not (root / ".pivotbuild" / "locks" / "s.json").exists()


@pytest.mark.parametrize("damage", [
    lambda text: text[: len(text) // 2],                             # truncated
    lambda text: "{not json",                                        # invalid JSON
    lambda text: text.replace('"schema": 1', '"schema": 99'),        # unknown schema
    lambda text: json.dumps({**json.loads(text), "deps": [
        {**json.loads(text)["deps"][0], "hash": None}]}),            # a null hash
    lambda text: json.dumps({**json.loads(text), "deps": [
        {**json.loads(text)["deps"][0], "hash": "xyz"}]}),           # a malformed hash
    lambda text: json.dumps({**json.loads(text), "cmd": 42}),        # a wrong type
    lambda text: "",                                                 # empty
])
def test_a_corrupted_lock_makes_the_stage_stale_never_a_crash(pipe, damage):
    run(["repro"], pipe)
    path = pipe / ".pivotbuild" / "locks" / "prepare.json"
    path.write_text(damage(path.read_text()))
    status = run(["status", "--json"], pipe)
    assert status.code == 0
    stage = json.loads(status.out)["stages"][0]
    assert stage["status"] == "stale"
    assert stage["reasons"][0]["kind"] == "never-run"
    assert ".pivotbuild/locks/prepare.json: invalid lock" in status.err
    result = run(["repro"], pipe)
    assert result.code == 0, result.err
    assert lock(pipe, "prepare")["stage"] == "prepare"  # rewritten whole
