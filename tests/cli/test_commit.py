"""`repro --no-commit`, `commit`, `checkout`, `verify` and `gc` through the CLI (SPEC §5-6)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cli.conftest import history, objects, run
from tests.cli.test_repro import TWO_STAGES, lock, ran

CACHE = Path(".pivotbuild") / "cache"


def runs(root: Path) -> set[str]:
    top = root / CACHE / "runs"
    return {p.name for p in top.glob("*/*")} if top.exists() else set()


def status(root: Path) -> dict[str, str]:
    return {s["name"]: s["status"]
            for s in json.loads(run(["status", "--json"], root).out)["stages"]}


@pytest.fixture
def pipe(tmp_path: Path) -> Path:
    (tmp_path / "pivot.toml").write_text(TWO_STAGES)
    (tmp_path / "raw.txt").write_text("hello\n")
    return tmp_path


def test_no_commit_writes_nothing_durable_but_history(pipe):
    result = run(["repro", "--no-commit"], pipe)
    assert result.code == 0, result.err
    assert ran(pipe) == ["prepare", "train"]
    assert (pipe / "clean.txt").read_text() == "HELLO\n" and (pipe / "model" / "w").exists()
    assert not (pipe / ".pivotbuild" / "locks").exists() or not any(
        (pipe / ".pivotbuild" / "locks").iterdir())
    assert objects(pipe) == set() and runs(pipe) == set()
    h = history(pipe)
    assert [(r["stage"], r["committed"], r["status"]) for r in h] == [
        ("prepare", False, "ok"), ("train", False, "ok")]
    assert all(len(r["input_hash"]) == 32 for r in h)


def test_no_commit_then_repro_runs_again_and_commits(pipe):
    run(["repro", "--no-commit"], pipe)
    run(["repro"], pipe)
    assert ran(pipe) == ["prepare", "train", "prepare", "train"]
    assert lock(pipe, "train")["outs"][1]["hash"].endswith(".dir")
    assert [r["committed"] for r in history(pipe)] == [False, False, True, True]


def test_no_commit_then_commit_records_the_workspace(pipe):
    run(["repro", "--no-commit"], pipe)
    result = run(["commit"], pipe)
    assert result.code == 0, result.err
    assert lock(pipe, "prepare")["outs"][0]["hash"] in objects(pipe)
    assert lock(pipe, "train")["outs"][1]["hash"] in objects(pipe)
    assert status(pipe) == {"prepare": "up-to-date", "train": "up-to-date"}
    run(["repro"], pipe)
    assert ran(pipe) == ["prepare", "train"]
    h = history(pipe)
    # The --no-commit runs stay as they were; commit added a record per stage (issue 11).
    assert [(r["stage"], r["status"], r["committed"]) for r in h] == [
        ("prepare", "ok", False), ("train", "ok", False),
        ("prepare", "committed", True), ("train", "committed", True)]
    assert h[1]["input_hash"] == h[3]["input_hash"] == lock(pipe, "train")["input_hash"]


def test_comment_only_change_to_a_dep_script_is_committed_without_running(tmp_path):
    (tmp_path / "pivot.toml").write_text(
        '[stages.expensive]\ncmd = "echo ran >> runs.log; sh work.sh > result"\n'
        'deps = ["work.sh"]\nouts = ["result"]\n'
    )
    (tmp_path / "work.sh").write_text("# compute\necho 42\n")
    run(["repro"], tmp_path)
    (tmp_path / "work.sh").write_text("# compute the answer (refactored comment)\necho 42\n")
    assert status(tmp_path) == {"expensive": "stale"}
    assert run(["commit"], tmp_path).code == 0
    assert status(tmp_path) == {"expensive": "up-to-date"}
    run(["repro"], tmp_path)
    assert ran(tmp_path) == ["ran"]


def test_commit_stage_records_edited_outputs(pipe):
    run(["repro"], pipe)
    (pipe / "clean.txt").unlink()
    (pipe / "clean.txt").write_text("EDITED BY HAND\n")
    assert run(["commit", "prepare"], pipe).code == 0
    from pivotbuild.hashing import PythonBackend
    assert lock(pipe, "prepare")["outs"][0]["hash"] == PythonBackend().hash_bytes(
        b"EDITED BY HAND\n")
    assert status(pipe)["prepare"] == "up-to-date"


def test_commit_with_nothing_stale_touches_no_lock(pipe):
    run(["repro"], pipe)
    locks = sorted((pipe / ".pivotbuild" / "locks").iterdir())
    before = [(p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in locks]
    result = run(["commit"], pipe)
    assert result.code == 0
    assert "Nothing to commit." in result.out
    assert [(p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in locks] == before
    doc = json.loads(run(["commit", "--json"], pipe).out)
    assert doc == {"committed": [], "failed": [], "unchanged": ["prepare", "train"]}


def test_commit_named_stage_when_up_to_date(pipe):
    run(["repro"], pipe)
    (pipe / ".pivotbuild" / "locks" / "train.json").unlink()
    run(["repro", "--no-run-cache", "-n"], pipe)  # sanity: nothing written
    doc = json.loads(run(["commit", "prepare", "--json"], pipe).out)
    assert doc["committed"] == ["prepare"] and doc["failed"] == []
    assert run(["commit", "nosuch"], pipe).code == 2


def test_commit_missing_output_commits_the_others(tmp_path):
    (tmp_path / "pivot.toml").write_text(
        '[stages.a]\ncmd = "true"\nouts = ["a.out", "a2.out"]\n'
        '[stages.b]\ncmd = "true"\nouts = ["b.out"]\n'
    )
    (tmp_path / "a.out").write_text("only one of a's outputs")
    (tmp_path / "b.out").write_text("b")
    result = run(["commit", "--json"], tmp_path)
    assert result.code == 1
    doc = json.loads(result.out)
    assert doc["committed"] == ["b"]
    assert [f["stage"] for f in doc["failed"]] == ["a"] and "a2.out" in doc["failed"][0]["error"]
    assert not (tmp_path / ".pivotbuild" / "locks" / "a.json").exists()
    from pivotbuild.hashing import PythonBackend
    a_hash = PythonBackend().hash_bytes(b"only one of a's outputs")
    assert a_hash not in objects(tmp_path)
    assert PythonBackend().hash_bytes(b"b") in objects(tmp_path)
    plain = run(["commit"], tmp_path)
    assert plain.code == 1 and "a2.out" in plain.err


def test_directory_output_hash_follows_its_files(tmp_path):
    (tmp_path / "pivot.toml").write_text('[stages.d]\ncmd = "true"\nouts = ["dir"]\n')
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    for name in ["a", "b", "sub/c"]:
        (tmp_path / "dir" / name).write_text(name)
    run(["commit"], tmp_path)
    first = lock(tmp_path, "d")["outs"][0]
    assert first["nfiles"] == 3
    manifest_obj = tmp_path / CACHE / "files" / first["hash"][:2] / first["hash"][2:]
    listed = [line.split(" ", 3)[3] for line in manifest_obj.read_text().splitlines()[1:]]
    assert listed == ["a", "b", "sub/c"]
    (tmp_path / "dir" / "new").write_text("n")
    run(["commit", "d"], tmp_path)
    second = lock(tmp_path, "d")["outs"][0]
    assert second["hash"] != first["hash"] and second["nfiles"] == 4
    os.unlink(tmp_path / "dir" / "new")
    os.unlink(tmp_path / "dir" / "a")
    run(["commit", "d"], tmp_path)
    third = lock(tmp_path, "d")["outs"][0]
    assert third["hash"] not in (first["hash"], second["hash"]) and third["nfiles"] == 2


def test_commit_dry_run_writes_nothing(pipe):
    run(["repro", "--no-commit"], pipe)
    result = run(["commit", "--dry-run"], pipe)
    assert result.code == 0 and "would commit 'prepare'" in result.out
    assert objects(pipe) == set()
    assert not (pipe / ".pivotbuild" / "locks").exists()


# ---- checkout ---------------------------------------------------------------------


def test_checkout_restores_deleted_outputs_and_second_is_a_noop(pipe):
    run(["repro"], pipe)
    os.unlink(pipe / "clean.txt")
    os.unlink(pipe / "model" / "w")
    result = run(["checkout"], pipe)
    assert result.code == 0, result.err
    assert (pipe / "clean.txt").read_text() == "HELLO\n"
    assert (pipe / "model" / "w").read_text() == "HELLO\n"
    again = run(["checkout"], pipe)
    assert again.code == 0 and "0 restored" in again.err


def test_checkout_refuses_to_clobber_without_force(pipe):
    run(["repro"], pipe)
    os.unlink(pipe / "clean.txt")
    (pipe / "clean.txt").write_text("mine\n")
    (pipe / "model" / "untracked").write_text("keep me")
    result = run(["checkout"], pipe)
    assert result.code == 1
    assert "clean.txt" in result.err and "model/untracked" in result.err
    assert (pipe / "clean.txt").read_text() == "mine\n"
    assert (pipe / "model" / "untracked").exists()
    forced = run(["checkout", "--force"], pipe)
    assert forced.code == 0, forced.err
    assert (pipe / "clean.txt").read_text() == "HELLO\n"
    assert not (pipe / "model" / "untracked").exists()


def test_checkout_reports_a_missing_object_and_restores_the_rest(pipe):
    run(["repro"], pipe)
    train_dir = lock(pipe, "train")["outs"][1]["hash"]
    os.unlink(pipe / CACHE / "files" / train_dir[:2] / train_dir[2:])
    os.unlink(pipe / "clean.txt")
    os.chmod(pipe / "model" / "w", 0o644)
    os.unlink(pipe / "model" / "w")
    result = run(["checkout"], pipe)
    assert result.code == 1
    assert train_dir in result.err and "pivotbuild pull" in result.err
    assert (pipe / "clean.txt").read_text() == "HELLO\n"


def test_checkout_ignores_non_cached_outputs(pipe):
    run(["repro"], pipe)
    os.unlink(pipe / "metrics.json")
    assert run(["checkout"], pipe).code == 0
    assert not (pipe / "metrics.json").exists()


@pytest.mark.parametrize("mode", ["hardlink", "copy"])
def test_checkout_link_modes(pipe, mode):
    text = f'[project]\ncheckout = ["{mode}"]\n' + TWO_STAGES
    (pipe / "pivot.toml").write_text(text)
    run(["repro"], pipe)
    os.unlink(pipe / "clean.txt")
    run(["checkout"], pipe)
    digest = lock(pipe, "prepare")["outs"][0]["hash"]
    obj = pipe / CACHE / "files" / digest[:2] / digest[2:]
    same = (pipe / "clean.txt").stat().st_ino == obj.stat().st_ino
    assert same == (mode == "hardlink")
    if mode == "copy":
        assert os.access(pipe / "clean.txt", os.W_OK)
        assert (pipe / "clean.txt").stat().st_mode & 0o200


# ---- verify and gc ------------------------------------------------------------------


def test_verify_passes_then_names_each_failure(pipe):
    run(["repro"], pipe)
    ok = run(["verify", "--cache"], pipe)
    assert ok.code == 0, ok.err
    (pipe / "raw.txt").write_text("changed\n")
    stale = run(["verify"], pipe)
    assert stale.code == 1 and "stage 'prepare' is stale" in stale.err
    (pipe / "raw.txt").write_text("hello\n")
    digest = lock(pipe, "prepare")["outs"][0]["hash"]
    obj = pipe / CACHE / "files" / digest[:2] / digest[2:]
    os.chmod(obj, 0o644)
    os.unlink(pipe / "clean.txt")  # the hardlinked workspace copy
    data = bytearray(obj.read_bytes())
    data[0] ^= 1
    obj.write_bytes(bytes(data))
    # checkout would refuse the corrupt object (and remove it): write the workspace copy by
    # hand, so that only the object is wrong
    (pipe / "clean.txt").write_text("HELLO\n")
    corrupt = run(["verify", "--cache", "--json"], pipe)
    assert corrupt.code == 1
    kinds = {(p["kind"], p.get("hash")) for p in json.loads(corrupt.out)["problems"]}
    assert ("corrupt-object", digest) in kinds
    os.unlink(obj)
    missing = run(["verify"], pipe)
    assert missing.code == 1 and f"cache object {digest} is missing" in missing.err


def test_gc_keeps_referenced_and_deletes_the_rest(pipe, monkeypatch):
    monkeypatch.setenv("PIVOTBUILD_GC_GRACE_S", "0")
    run(["repro"], pipe)
    referenced = objects(pipe)
    (pipe / "raw.txt").write_text("world\n")
    run(["repro"], pipe)
    everything = objects(pipe)
    assert len(everything) > len(referenced)
    dry = run(["gc", "--dry-run"], pipe)
    assert dry.code == 0 and "would delete" in dry.out
    assert objects(pipe) == everything
    assert run(["gc"], pipe).code == 0
    kept = objects(pipe)
    current = {o["hash"] for s in ("prepare", "train") for o in lock(pipe, s)["outs"]
               if o["cache"]}
    assert current <= kept < everything
    assert runs(pipe) == {lock(pipe, s)["input_hash"][2:] + ".json" for s in ("prepare", "train")}
    assert run(["verify", "--cache"], pipe).code == 0


def test_gc_keeps_what_was_just_stored(pipe):
    """Another project sharing the cache may have stored an object and not yet
    written its lock: objects younger than the grace period are kept."""
    run(["repro"], pipe)
    (pipe / "raw.txt").write_text("world\n")
    run(["repro"], pipe)
    everything = objects(pipe)
    assert run(["gc"], pipe).code == 0
    assert objects(pipe) == everything


def test_gc_honours_every_project_sharing_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIVOTBUILD_GC_GRACE_S", "0")
    shared = tmp_path / "shared-cache"
    monkeypatch.setenv("PIVOTBUILD_CACHE_DIR", str(shared))
    projects = []
    for name, text in (("a", "alpha"), ("b", "beta")):
        root = tmp_path / name
        root.mkdir()
        (root / "pivot.toml").write_text(f'[stages.s]\ncmd = "echo {text} > out"\nouts = ["out"]\n')
        assert run(["repro"], root).code == 0
        projects.append(root)
    before = {p.parent.name + p.name for p in (shared / "files").glob("*/*")}
    assert len(before) == 2
    assert run(["gc"], projects[0]).code == 0  # a's gc must keep b's object
    assert {p.parent.name + p.name for p in (shared / "files").glob("*/*")} == before
    import shutil
    shutil.rmtree(projects[1], onerror=lambda f, p, e: (Path(p).parent.chmod(0o755), f(p)))
    assert run(["gc"], projects[0]).code == 0  # b is gone: its object may go too
    assert len({p.parent.name + p.name for p in (shared / "files").glob("*/*")}) == 1
