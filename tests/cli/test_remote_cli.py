"""push / fetch / pull / repro --pull / status --remote as a user runs them.

Two clones share a remote: clone A runs `repro` and `push --run-cache`; clone B is what git
would give a colleague (pivot.toml, sources, locks or not, no cache). What ran is counted with
a marker file every stage's cmd appends to."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import click
import pytest
from click.testing import CliRunner

from pivotbuild import manifest, names
from pivotbuild.hashing import get_backend
from tests.cli.conftest import lock, ran, run

if TYPE_CHECKING:
    from tests.s3server import S3Server

pytest_plugins = ["tests.s3server"]  # the s3_server and s3_bucket fixtures

STAGES = """
[stages.prepare]
cmd = "echo prepare >> runs.log; tr a-z A-Z < raw.txt > clean.txt"
deps = ["raw.txt"]
outs = ["clean.txt"]

[stages.train]
cmd = "echo train >> runs.log; mkdir -p model/sub; rev clean.txt > model/w; echo 7 > model/sub/n"
deps = ["clean.txt", "params.toml"]
outs = ["model"]

[stages.report]
cmd = "echo report >> runs.log; cat model/sub/n model/w > report.txt"
deps = ["model/sub"]
outs = ["report.txt"]
"""

OUTPUTS = ("clean.txt", "model/w", "model/sub/n", "report.txt")


def project(root: Path, url: str, stages: str = STAGES, local: str = "") -> Path:
    root.mkdir(parents=True)
    (root / "pivot.toml").write_text(
        f'[project]\ndefault_remote = "origin"\n\n[remotes.origin]\nurl = "{url}"\n' + stages)
    (root / "raw.txt").write_text("two clones\n")
    (root / "params.toml").write_text("[train]\nlr = 0.1\n")
    if local:
        (root / ".pivotbuild").mkdir()
        (root / ".pivotbuild" / "config.local.toml").write_text(local)
    return root


def clone(src: Path, dst: Path, locks: bool = True) -> Path:
    dst.mkdir()
    for name in ("pivot.toml", "params.toml", "raw.txt"):
        shutil.copy(src / name, dst / name)
    local = src / ".pivotbuild" / "config.local.toml"
    if local.exists():
        (dst / ".pivotbuild").mkdir()
        shutil.copy(local, dst / ".pivotbuild" / "config.local.toml")
    if locks:
        shutil.copytree(src / ".pivotbuild" / "locks", dst / ".pivotbuild" / "locks")
    return dst


def contents(root: Path) -> dict[str, bytes]:
    return {p: (root / p).read_bytes() for p in OUTPUTS if (root / p).exists()}


def cache_objects(root: Path) -> set[str]:
    files = root / ".pivotbuild" / "cache" / "files"
    return {p.parent.name + p.name for p in files.glob("*/*")} if files.is_dir() else set()


def errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("pivotbuild: error:")]


@pytest.fixture
def remote_dir(tmp_path: Path) -> Path:
    path = tmp_path / "remote"
    path.mkdir()
    return path


@pytest.fixture
def clone_a(tmp_path: Path, remote_dir: Path) -> Path:
    """Clone A: repro, then push --run-cache."""
    a = project(tmp_path / "a", str(remote_dir))
    assert run(["repro"], a).code == 0
    assert ran(a) == ["prepare", "train", "report"]
    pushed = run(["push", "--run-cache"], a)
    assert pushed.code == 0, pushed.err
    assert "push to 'origin': 5 object(s)" in pushed.err and "3 run-cache entries" in pushed.err
    return a


# ---- the two-clone scenario ------------------------------------------------------------------


@pytest.mark.parametrize("with_locks", [True, False], ids=["locks", "no-locks"])
def test_fresh_clone_repro_pull_runs_nothing_and_matches(clone_a: Path, tmp_path: Path,
                                                         with_locks: bool):
    b = clone(clone_a, tmp_path / "b", locks=with_locks)
    result = run(["repro", "--pull"], b)
    assert result.code == 0, result.err
    assert ran(b) == []
    assert contents(b) == contents(clone_a) and len(contents(b)) == len(OUTPUTS)
    for stage in ("prepare", "train", "report"):
        assert lock(b, stage) == lock(clone_a, stage)
    assert json.loads(run(["status", "--json"], b).out)["stages"] == [
        {"name": s, "status": "up-to-date", "reasons": []} for s in ("prepare", "train", "report")
    ]


def test_repro_pull_asks_the_remote_again_below_a_stage_that_ran(clone_a: Path,
                                                                 tmp_path: Path):
    """prepare must run (raw.txt changed) but makes the same clean.txt: train's input hash
    is then one the remote run cache knows, looked up when train is decided again."""
    b = clone(clone_a, tmp_path / "b", locks=False)
    (b / "raw.txt").write_text("TWO clones\n")
    result = run(["repro", "--pull"], b)
    assert result.code == 0, result.err
    assert ran(b) == ["prepare"]
    assert contents(b) == contents(clone_a)


def test_fresh_clone_pull_then_repro_runs_nothing(clone_a: Path, tmp_path: Path):
    b = clone(clone_a, tmp_path / "b")
    pulled = run(["pull", "-j", "3"], b)
    assert pulled.code == 0, pulled.err
    assert "fetch from 'origin': 5 object(s)" in pulled.err
    assert "Restored model" in pulled.out
    assert contents(b) == contents(clone_a)
    assert run(["repro"], b).code == 0
    assert ran(b) == []


def test_second_push_sends_nothing(clone_a: Path):
    again = run(["push", "--run-cache"], clone_a)
    assert again.code == 0
    assert "0 object(s) (0 B) sent, 8 already there, 0 failed" in again.err


def test_fetch_fills_the_cache_but_not_the_workspace(clone_a: Path, tmp_path: Path):
    b = clone(clone_a, tmp_path / "b")
    result = run(["fetch", "train"], b)
    assert result.code == 0, result.err
    assert contents(b) == {}
    model = lock(clone_a, "train")["outs"][0]["hash"]
    assert model in cache_objects(b) and len(cache_objects(b)) == 3  # .dir + its 2 files


# ---- what is refused ------------------------------------------------------------------------


def test_tampered_object_pull_exits_1_and_names_it(clone_a: Path, tmp_path: Path,
                                                   remote_dir: Path):
    clean = lock(clone_a, "prepare")["outs"][0]["hash"]
    obj = remote_dir / "files" / clean[:2] / clean[2:]
    os.chmod(obj, 0o644)
    obj.write_bytes(b"TWO CLONES?\n")
    b = clone(clone_a, tmp_path / "b")
    result = run(["pull"], b)
    assert result.code == 1
    named = [line for line in errors(result.err) if clean in line]
    assert named and "clean.txt (prepare)" in named[0] and "rejected" in named[0]
    assert clean not in cache_objects(b)
    assert not (b / "clean.txt").exists()
    assert (b / "report.txt").read_bytes() == (clone_a / "report.txt").read_bytes()
    assert "1 failed" in result.err


def test_malicious_dir_manifest_is_rejected_by_pull(clone_a: Path, tmp_path: Path,
                                                    remote_dir: Path):
    payload = b"owned\n"
    digest = get_backend().hash_bytes(payload)
    data = manifest.HEADER + f"{digest} - {len(payload)} ../../escaped\n".encode()
    evil = names.dir_hash(data)
    for name, content in ((evil, data), (digest, payload)):
        (remote_dir / "files" / name[:2]).mkdir(exist_ok=True)
        (remote_dir / "files" / name[:2] / name[2:]).write_bytes(content)
    b = clone(clone_a, tmp_path / "b")
    lock_file = b / ".pivotbuild" / "locks" / "train.json"
    doc = json.loads(lock_file.read_text())
    doc["outs"][0].update(hash=evil, size=len(payload), nfiles=1)
    lock_file.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    result = run(["pull", "train"], b)
    assert result.code == 1
    assert any(evil in line and "unsafe path" in line for line in errors(result.err))
    assert evil not in cache_objects(b)
    assert not (tmp_path / "escaped").exists() and not (b / "escaped").exists()


def test_cache_false_outputs_never_reach_the_remote(tmp_path: Path, remote_dir: Path):
    stages = """
[stages.measure]
cmd = "wc -c < raw.txt > metrics.json; cp raw.txt copy.txt"
deps = ["raw.txt"]
outs = [{path = "metrics.json", cache = false}, "copy.txt"]
"""
    a = project(tmp_path / "a", str(remote_dir), stages)
    assert run(["repro"], a).code == 0
    result = run(["push", "--run-cache"], a)
    assert result.code == 0, result.err
    outs = {o["path"]: o["hash"] for o in lock(a, "measure")["outs"]}
    on_remote = {p.parent.name + p.name for p in (remote_dir / "files").glob("*/*")}
    assert on_remote == {outs["copy.txt"]}
    b = clone(a, tmp_path / "b")
    assert run(["pull"], b).code == 0
    assert (b / "copy.txt").exists() and not (b / "metrics.json").exists()


def test_remote_errors_are_one_line(tmp_path: Path):
    a = project(tmp_path / "a", str(tmp_path / "not-there"))
    assert run(["repro"], a).code == 0
    result = run(["push"], a)
    assert result.code == 1
    assert result.err.strip().splitlines() == [
        (f"pivotbuild: error: remote 'origin' ({tmp_path / 'not-there'}): the directory does "
         f"not exist (create it first)")
    ]
    unknown = run(["pull", "-r", "backup"], a)
    assert unknown.code == 2
    assert unknown.err.strip() == ("pivotbuild: error: unknown remote 'backup' (known: origin)")
    (a / "pivot.toml").write_text(STAGES)
    none = run(["fetch"], a)
    assert none.code == 2 and "no remote is configured" in none.err
    assert not (tmp_path / "not-there").exists()


def test_unknown_target_exits_2(clone_a: Path):
    result = run(["push", "nonsense"], clone_a)
    assert result.code == 2 and "nonsense" in result.err


# ---- status --remote (rendered by remote_status_command_impl) ---------------------------------


def status_remote(root: Path, *args: str) -> tuple[int, str]:
    from pivotbuild.cli.remote import remote_status_command_impl

    @click.command()
    @click.argument("targets", nargs=-1)
    @click.option("-r", "remote_name", default=None)
    @click.option("--json", "as_json", is_flag=True)
    @click.option("-q", "quiet", is_flag=True)
    def status(targets, remote_name, as_json, quiet):
        remote_status_command_impl(None, targets, remote_name, as_json, quiet)

    cwd = os.getcwd()
    os.chdir(root)
    try:
        result = CliRunner().invoke(status, list(args))
    finally:
        os.chdir(cwd)
    return result.exit_code, result.output


def test_status_remote_names_what_is_missing_where(tmp_path: Path, remote_dir: Path):
    a = project(tmp_path / "a", str(remote_dir))
    assert run(["repro"], a).code == 0
    code, out = status_remote(a)
    assert code == 0
    assert "  train: model: missing on the remote (3 of 3 objects)" in out
    assert "0 in sync, 3 missing on the remote, 0 only on the remote, 0 in neither" in out
    assert status_remote(a, "-q")[0] == 1
    assert run(["push", "prepare"], a).code == 0
    code, out = status_remote(a, "--json")
    doc = json.loads(out)
    assert {o["path"]: o["status"] for o in doc["outputs"]} == {
        "clean.txt": "in-sync", "model": "missing-on-remote", "report.txt": "missing-on-remote"}
    assert run(["push"], a).code == 0
    assert status_remote(a, "-q")[0] == 0
    b = clone(a, tmp_path / "b")
    code, out = status_remote(b)
    assert "  prepare: clean.txt: only on the remote (not in the local cache)" in out
    assert "0 in sync, 0 missing on the remote, 3 only on the remote, 0 in neither" in out


# ---- S3 --------------------------------------------------------------------------------------


def s3_local(endpoint: str) -> str:
    return f'[remotes.origin]\nendpoint_url = "{endpoint}"\n'


def test_s3_two_clones(tmp_path: Path, s3_server: S3Server, s3_bucket: str):
    a = project(tmp_path / "a", f"s3://{s3_bucket}/pivot", local=s3_local(s3_server.endpoint))
    assert run(["repro"], a).code == 0
    pushed = run(["push", "--run-cache", "-j", "4"], a)
    assert pushed.code == 0, pushed.err
    assert "5 object(s)" in pushed.err and "3 run-cache entries" in pushed.err
    assert "0 object(s) (0 B) sent" in run(["push", "--run-cache"], a).err
    keys = s3_server.filesystem().find(f"{s3_bucket}/pivot")
    assert len(keys) == 8 and not [k for k in keys if k.endswith(".tmp")]
    b = clone(a, tmp_path / "b", locks=False)
    if "--pull" in run(["repro", "--help"], b).out:
        result = run(["repro", "--pull"], b)
    else:  # until repro --pull is wired: fetch what clone A's locks name, then repro
        shutil.copytree(a / ".pivotbuild" / "locks", b / ".pivotbuild" / "locks")
        assert run(["pull"], b).code == 0
        result = run(["repro"], b)
    assert result.code == 0, result.err
    assert ran(b) == [] and contents(b) == contents(a)


def test_s3_missing_bucket_and_unreachable_endpoint(tmp_path: Path, s3_server: S3Server,
                                                    dead_s3_endpoint: str):
    a = project(tmp_path / "a", "s3://no-such-bucket/x", local=s3_local(s3_server.endpoint))
    assert run(["repro"], a).code == 0
    result = run(["push"], a)
    assert result.code == 1
    assert result.err.strip().splitlines() == [
        ("pivotbuild: error: remote 'origin' (s3://no-such-bucket/x): the bucket "
         "'no-such-bucket' does not exist")]
    (a / ".pivotbuild" / "config.local.toml").write_text(s3_local(dead_s3_endpoint))
    b = clone(a, tmp_path / "b")
    result = run(["pull"], b)
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "pivotbuild: error: remote 'origin' (s3://no-such-bucket/x): cannot connect")
    assert not (b / ".pivotbuild" / "cache").exists()
