"""Issue 11 (SPEC §8) through the CLI: project files as outs, credentials in remote URLs,
`commit --dry-run` and matrix base names, over-long stage names, `history`/`status` exit codes,
`gc --grace`, messages (invalid locks, a corrupt state.db), and history never rewritten.

What ran is counted with a marker file each stage's cmd appends to."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import history, lock, objects, ran, run

LOCKS = Path(".pivotbuild") / "locks"
CACHE = Path(".pivotbuild") / "cache"


def run_entries(root: Path) -> set[str]:
    return {p.name for p in (root / CACHE / "runs").glob("*/*")}


def git_init(root: Path) -> None:
    subprocess.run(["git", "init", "-q", str(root)], check=True)


# ---- 2. the project's own files can never be outputs ---------------------------------------


@pytest.mark.parametrize(("out", "problem"), [
    (".git", "git repository"),
    (".git/hooks/pre-commit", "git repository"),
    ("sub/.git", "git repository"),
    ("pivot.toml", "pipeline file"),
    ("./sub/../pivot.toml", "pipeline file"),
    ("params.toml", "params file"),
    ("data.pvt", ".pvt"),
    ("sub/raw.csv.pvt", ".pvt"),
    (".pivotbuild", ".pivotbuild"),
    (".pivotbuild/locks/a.json", ".pivotbuild"),
])
def test_project_files_are_never_outputs(tmp_path: Path, out: str, problem: str) -> None:
    git_init(tmp_path)
    config = f'[stages.x]\ncmd = "echo x >> runs.log"\nouts = ["{out}"]\n'
    (tmp_path / "pivot.toml").write_text(config)
    (tmp_path / "params.toml").write_text("seed = 1\n")
    (tmp_path / "data.pvt").write_text("{}\n")
    for command in (["repro"], ["status"], ["commit", "x"]):
        result = run(command, tmp_path)
        assert result.code == 2, (command, result.err)
        assert "pivot.toml: stages.x.outs[0]: " in result.err and problem in result.err
        assert len(result.err.strip().splitlines()) == 1
    assert ran(tmp_path) == []
    assert (tmp_path / ".git" / "HEAD").is_file()
    assert (tmp_path / "pivot.toml").read_text() == config
    assert (tmp_path / "params.toml").read_text() == "seed = 1\n"
    assert (tmp_path / "data.pvt").read_text() == "{}\n"


def test_an_output_cannot_be_the_root_or_contain_the_project_files(tmp_path: Path) -> None:
    """`.` is the root (holding .git and pivot.toml), also when reached from a wdir; a
    directory holding a nested git repository (a submodule, a vendored clone) is refused."""
    git_init(tmp_path)
    (tmp_path / "vendor" / "lib").mkdir(parents=True)
    git_init(tmp_path / "vendor" / "lib")
    (tmp_path / "conf").mkdir()
    cases = [
        (".", '"."', "outs[0]", "project root"),
        ("conf", '"ok", ".."', "outs[1]", "project root"),
        ("conf", '"../vendor/lib"', "outs[0]", "git repository"),
        ("conf", '"../pivot.toml"', "outs[0]", "pipeline file"),
    ]
    for wdir, outs, key, problem in cases:
        (tmp_path / "pivot.toml").write_text(
            f'[stages.x]\ncmd = "echo x >> runs.log"\nwdir = "{wdir}"\nouts = [{outs}]\n')
        result = run(["repro"], tmp_path)
        assert result.code == 2, (outs, result.err)
        assert f"pivot.toml: stages.x.{key}: " in result.err and problem in result.err, result.err
    (tmp_path / "pivot.toml").write_text(
        '[stages.x]\nmatrix = {f = ["ok", ".git"]}\ncmd = "echo x >> runs.log"\n'
        'outs = ["${item.f}"]\n')
    result = run(["repro"], tmp_path)
    assert result.code == 2 and "pivot.toml: stages.x.outs[0]: " in result.err
    assert "x@.git" in result.err and "git repository" in result.err
    assert ran(tmp_path) == [] and not (tmp_path / "conf" / "runs.log").exists()
    assert (tmp_path / ".git" / "HEAD").is_file()
    assert (tmp_path / "vendor" / "lib" / ".git" / "HEAD").is_file()


@pytest.mark.parametrize(("link", "target", "out", "landed"), [
    ("gl", ".git", "gl/HEAD", ".git/HEAD"),
    ("self", ".", "self/pivot.toml", "pivot.toml"),
    ("state", ".pivotbuild", "state/locks", ".pivotbuild/locks"),
])
def test_a_symlinked_directory_does_not_reach_the_project_files(
        tmp_path: Path, link: str, target: str, out: str, landed: str) -> None:
    """Sibling of hole 2 (with hole 1): the out is declared through a symlink inside the
    project that lands on one of its own files; the stage fails naming it, nothing is lost."""
    git_init(tmp_path)
    (tmp_path / link).symlink_to(target)
    config = f'[stages.x]\ncmd = "echo x >> runs.log"\nouts = ["{out}"]\n'
    (tmp_path / "pivot.toml").write_text(config)
    (tmp_path / ".pivotbuild" / "locks").mkdir(parents=True)
    result = run(["repro"], tmp_path)
    assert result.code == 1, result.err
    assert f"{out}: its directory resolves to {landed}, one of the project's own" in result.err
    assert ran(tmp_path) == []
    assert (tmp_path / ".git" / "HEAD").is_file()
    assert (tmp_path / "pivot.toml").read_text() == config
    assert (tmp_path / ".pivotbuild" / "locks").is_dir()


def test_a_dependency_on_pivot_toml_is_still_allowed(tmp_path: Path) -> None:
    (tmp_path / "pivot.toml").write_text(
        '[stages.x]\ncmd = "wc -c < pivot.toml > size"\ndeps = ["pivot.toml"]\n'
        'outs = ["size"]\n')
    result = run(["repro"], tmp_path)
    assert result.code == 0, result.err
    assert lock(tmp_path, "x")["deps"][0]["path"] == "pivot.toml"


# ---- 5. credentials in a remote URL -------------------------------------------------------

SECRET = "Hunter2Zz9Secret"

CREDENTIAL_URLS = [
    f"s3://AKIAIOSFODNN7EXAMPLE:{SECRET}/ab+cd@bucket/prefix",
    f"s3://AKIAIOSFODNN7EXAMPLE:{SECRET}@bucket/prefix",
    f"https://alice:{SECRET}@cache.example.com/pivot",
    f"s3://bucket/prefix?secret_key={SECRET}",
    f"https://cache.example.com/p?X-Amz-Security-Token={SECRET}&region=eu",
    f"s3://bucket/prefix?password={SECRET}",
    f"https://cache.example.com/p?token={SECRET}",
    f"gs://bucket/p?aws_secret_access_key={SECRET}",
]

REMOTE_COMMANDS = [
    ["push"], ["fetch"], ["pull"], ["status", "--remote"], ["repro", "--pull"], ["status"],
    ["push", "-r", "origin"],
]


@pytest.mark.parametrize("url", CREDENTIAL_URLS)
def test_credentials_in_a_pivot_toml_url_are_a_config_error(tmp_path: Path, url: str) -> None:
    (tmp_path / "pivot.toml").write_text(
        f'[project]\ndefault_remote = "origin"\n[remotes.origin]\nurl = "{url}"\n'
        '[stages.a]\ncmd = "echo a >> runs.log; echo a > o"\nouts = ["o"]\n')
    for command in REMOTE_COMMANDS:
        result = run(command, tmp_path)
        assert result.code == 2, (command, result.err)
        assert "pivot.toml: remotes.origin.url: " in result.err, result.err
        assert "credentials" in result.err
        assert SECRET not in result.out + result.err
    assert ran(tmp_path) == []


@pytest.mark.parametrize("url", CREDENTIAL_URLS[:4])
def test_credentials_in_config_local_are_a_config_error(tmp_path: Path, url: str) -> None:
    (tmp_path / "pivot.toml").write_text(
        '[project]\ndefault_remote = "origin"\n[remotes.origin]\nurl = "s3://bucket/p"\n'
        '[stages.a]\ncmd = "echo a > o"\nouts = ["o"]\n')
    (tmp_path / ".pivotbuild").mkdir()
    (tmp_path / ".pivotbuild" / "config.local.toml").write_text(
        f'[remotes.origin]\nurl = "{url}"\n')
    for command in REMOTE_COMMANDS:
        result = run(command, tmp_path)
        assert result.code == 2, (command, result.err)
        assert ".pivotbuild/config.local.toml: remotes.origin.url: " in result.err
        assert SECRET not in result.out + result.err


def test_credentials_in_an_endpoint_url_are_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "pivot.toml").write_text(
        '[remotes.origin]\nurl = "s3://bucket/p"\n'
        f'endpoint_url = "http://minio:{SECRET}@127.0.0.1:9/"\n')
    result = run(["push", "-r", "origin"], tmp_path)
    assert result.code == 2 and "pivot.toml: remotes.origin.endpoint_url: " in result.err
    assert SECRET not in result.out + result.err


def test_a_user_name_in_a_url_is_never_printed(tmp_path: Path) -> None:
    """A URL with a user name but no secret is accepted; no message shows the user name."""
    (tmp_path / "pivot.toml").write_text(
        '[remotes.origin]\nurl = "sftp://deploy-user-xyz@127.0.0.1:9/srv/cache"\n'
        '[stages.a]\ncmd = "echo a > o"\nouts = ["o"]\n')
    assert run(["repro"], tmp_path).code == 0
    for command in (["push", "-r", "origin"], ["fetch", "-r", "origin"],
                    ["status", "--remote", "-r", "origin"], ["pull", "-r", "origin"]):
        result = run(command, tmp_path)
        assert result.code == 1, (command, result.err)
        assert "remote 'origin'" in result.err
        assert "deploy-user-xyz" not in result.out + result.err, result.err


def test_redaction_leaves_a_plain_url_alone(tmp_path: Path) -> None:
    """file:// URLs carry no credentials; status --remote names the remote by its URL."""
    target = tmp_path / "remote"
    target.mkdir()
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "pivot.toml").write_text(
        f'[project]\ndefault_remote = "origin"\n[remotes.origin]\nurl = "{target}"\n'
        '[stages.a]\ncmd = "echo a > o"\nouts = ["o"]\n')
    assert run(["repro"], proj).code == 0
    result = run(["status", "--remote"], proj)
    assert result.code == 0 and f"remote 'origin' ({target})" in result.out


# ---- 8 and 9. commit --dry-run exits as commit would; commit of a matrix base ---------------


COMMIT_STAGES = """
[stages.good]
cmd = "echo good >> runs.log; echo g > g.txt"
outs = ["g.txt"]

[stages.noout]
cmd = "echo noout >> runs.log; echo n > n.txt"
outs = ["n.txt"]

[stages.nodep]
cmd = "echo nodep >> runs.log; echo d > d.txt"
deps = ["absent.txt"]
outs = ["d.txt"]

[stages.m]
foreach = ["x", "y"]
cmd = "echo m >> runs.log; echo ${item} > m_${item}.txt"
outs = ["m_${item}.txt"]
"""


def test_commit_dry_run_fails_where_commit_would(tmp_path: Path) -> None:
    (tmp_path / "pivot.toml").write_text(COMMIT_STAGES)
    (tmp_path / "g.txt").write_text("g\n")
    (tmp_path / "d.txt").write_text("d\n")
    dry = run(["commit", "--dry-run", "good", "noout", "nodep"], tmp_path)
    assert dry.code == 1, dry.err
    assert "would commit 'good'" in dry.out
    assert "noout" not in dry.out and "nodep" not in dry.out
    assert "stage 'noout': missing 'n.txt'" in dry.err
    assert "stage 'nodep': missing 'absent.txt'" in dry.err
    assert not (tmp_path / LOCKS).exists() and objects(tmp_path) == set()
    as_json = run(["commit", "--dry-run", "--json", "good", "noout", "nodep"], tmp_path)
    assert as_json.code == 1
    doc = json.loads(as_json.out)
    assert doc["committed"] == ["good"] and doc["dry_run"] is True
    assert [f["stage"] for f in doc["failed"]] == ["noout", "nodep"]
    assert "n.txt" in doc["failed"][0]["error"]
    real = run(["commit", "--json", "good", "noout", "nodep"], tmp_path)
    assert real.code == 1
    assert json.loads(real.out)["failed"] == doc["failed"]
    assert (tmp_path / LOCKS / "good.json").is_file()
    assert sorted(p.name for p in (tmp_path / LOCKS).iterdir()) == ["good.json"]
    # With nothing that would fail, the dry run exits 0 and still writes nothing.
    (tmp_path / "n.txt").write_text("n\n")
    ok = run(["commit", "--dry-run", "noout"], tmp_path)
    assert ok.code == 0 and "would commit 'noout'" in ok.out
    assert not (tmp_path / LOCKS / "noout.json").exists()
    assert ran(tmp_path) == []


def test_commit_of_a_matrix_base_name_commits_every_instance(tmp_path: Path) -> None:
    (tmp_path / "pivot.toml").write_text(COMMIT_STAGES)
    (tmp_path / "m_x.txt").write_text("x\n")
    (tmp_path / "m_y.txt").write_text("y\n")
    result = run(["commit", "--json", "m"], tmp_path)
    assert result.code == 0, result.err
    assert json.loads(result.out)["committed"] == ["m@x", "m@y"]
    assert lock(tmp_path, "m@x")["outs"][0]["path"] == "m_x.txt"
    assert lock(tmp_path, "m@y")["outs"][0]["path"] == "m_y.txt"
    assert run(["repro", "m"], tmp_path).code == 0
    assert ran(tmp_path) == []  # committed: nothing runs
    unknown = run(["commit", "mm"], tmp_path)
    assert unknown.code == 2 and "unknown stage" in unknown.err and "'mm'" in unknown.err
    # history accepts the base name too, and lists every instance's records.
    assert [r["stage"] for r in history(tmp_path, "m")] == ["m@x", "m@y"]


# ---- 10. a stage name too long for its lock file -------------------------------------------


def test_a_stage_name_too_long_for_its_lock_file_is_a_config_error(tmp_path: Path) -> None:
    long_base = "s" * 251  # 251 + len(".json") = 256 bytes: one too many
    (tmp_path / "pivot.toml").write_text(
        f'[stages.{long_base}]\ncmd = "echo ran >> runs.log; echo x > o"\nouts = ["o"]\n')
    result = run(["repro"], tmp_path)
    assert result.code == 2, result.err
    assert f"pivot.toml: stages.{long_base}: " in result.err and "too long" in result.err
    assert ran(tmp_path) == [] and not (tmp_path / "o").exists()
    # A matrix name is the base, '@' and its values: 1 + 1 + 249 = 251 bytes.
    (tmp_path / "pivot.toml").write_text(
        f'[stages.m]\nforeach = ["short", "{"v" * 249}"]\n'
        'cmd = "echo ran >> runs.log; echo x > o_${item}"\nouts = ["o_${item}"]\n')
    result = run(["repro"], tmp_path)
    assert result.code == 2, result.err
    assert "pivot.toml: stages.m.foreach[1]: " in result.err and "too long" in result.err
    assert ran(tmp_path) == []


def test_the_longest_stage_names_work(tmp_path: Path) -> None:
    """250 bytes is the limit: ASCII, and a matrix value of two-byte characters."""
    ascii_name = "a" * 250
    wide = "é" * 124  # m@ + 248 bytes = 250 bytes
    (tmp_path / "pivot.toml").write_text(
        f'[stages.{ascii_name}]\ncmd = "echo a >> runs.log; echo a > a.txt"\nouts = ["a.txt"]\n'
        f'[stages.m]\nforeach = ["{wide}"]\ncmd = "echo m >> runs.log; echo m > m.txt"\n'
        'outs = ["m.txt"]\n', encoding="utf-8")
    result = run(["repro", "-j", "1"], tmp_path)
    assert result.code == 0, result.err
    assert ran(tmp_path) == ["a", "m"]
    assert lock(tmp_path, ascii_name)["stage"] == ascii_name
    assert lock(tmp_path, f"m@{wide}")["stage"] == f"m@{wide}"
    assert run(["repro"], tmp_path).code == 0 and ran(tmp_path) == ["a", "m"]


# ---- 11. history of an unknown stage; status with an invalid lock ---------------------------


def test_history_of_an_unknown_stage_exits_2(tmp_path: Path) -> None:
    (tmp_path / "pivot.toml").write_text(COMMIT_STAGES)
    result = run(["history", "nosuch"], tmp_path)
    assert result.code == 2 and "unknown stage: 'nosuch'" in result.err
    assert run(["history", "--json", "nosuch"], tmp_path).code == 2
    known = run(["history", "good"], tmp_path)  # known, never run: not an error
    assert known.code == 0 and "No runs of 'good' recorded." in known.out
    assert run(["repro", "good"], tmp_path).code == 0
    # A stage removed from pivot.toml keeps its history.
    (tmp_path / "pivot.toml").write_text(COMMIT_STAGES.replace("[stages.good]", "[stages.bad]"))
    assert [r["stage"] for r in history(tmp_path, "good")] == ["good"]


@pytest.mark.parametrize("damage", ["garbage", "other-stage", "directory", "truncated"])
def test_status_with_an_invalid_lock_exits_0_and_shows_the_stage_stale(
        tmp_path: Path, damage: str) -> None:
    (tmp_path / "pivot.toml").write_text(
        '[stages.a]\ncmd = "echo a > o"\nouts = ["o"]\n'
        '[stages.b]\ncmd = "cat o > p"\ndeps = ["o"]\nouts = ["p"]\n')
    assert run(["repro"], tmp_path).code == 0
    path = tmp_path / LOCKS / "a.json"
    text = path.read_text()
    if damage == "garbage":
        path.write_text("not json\n")
    elif damage == "other-stage":
        path.write_text(text.replace('"stage": "a"', '"stage": "b"'))
    elif damage == "directory":
        path.unlink()
        path.mkdir()
    else:
        path.write_text(text[:40])
    result = run(["status"], tmp_path)
    assert result.code == 0, result.err
    assert "a: stale" in result.out and "the lock is invalid" in result.out
    assert "b: stale" in result.out  # upstream stale
    assert ".pivotbuild/locks/a.json: invalid lock" in result.err
    as_json = run(["status", "--json"], tmp_path)
    assert as_json.code == 0
    assert json.loads(as_json.out)["stages"][0]["status"] == "stale"
    assert run(["status", "-q"], tmp_path).code == 1
    assert run(["-q", "status"], tmp_path).code == 0
    if damage == "directory":
        path.rmdir()
    assert run(["repro"], tmp_path).code == 0  # a repro replaces the invalid lock
    assert lock(tmp_path, "a")["stage"] == "a"


def test_a_date_param_is_a_config_error_not_a_failed_status(tmp_path: Path) -> None:
    """Sibling of hole 11 (status exiting 1): a TOML date in a listed param could not be
    recorded in the lock, and status and repro failed with exit 1 on every run."""
    (tmp_path / "params.toml").write_text("[train]\nlr = 0.1\nstart = 2024-01-01\n")
    (tmp_path / "pivot.toml").write_text(
        '[stages.x]\ncmd = "echo x >> runs.log; echo x > o"\nouts = ["o"]\n'
        'params = ["train"]\n')
    for command in (["status"], ["repro"], ["commit"]):
        result = run(command, tmp_path)
        assert result.code == 2, (command, result.err)
        assert "pivot.toml: stages.x.params[0]: 'train.start' is a date in params.toml" in (
            result.err)
    assert ran(tmp_path) == []


# ---- 13. gc --grace ------------------------------------------------------------------------


GC_STAGE = '[stages.s]\ncmd = "cat in.txt > out.txt"\ndeps = ["in.txt"]\nouts = ["out.txt"]\n'


def _two_generations(root: Path) -> tuple[set[str], set[str]]:
    """Run twice with different input; (objects, run entries) of the first run are garbage."""
    (root / "pivot.toml").write_text(GC_STAGE)
    (root / "in.txt").write_text("one\n")
    assert run(["repro"], root).code == 0
    first_runs = run_entries(root)
    (root / "in.txt").write_text("two\n")
    assert run(["repro"], root).code == 0
    return objects(root) - {lock(root, "s")["outs"][0]["hash"]}, first_runs


def test_gc_grace_keeps_young_garbage_and_says_so(tmp_path: Path) -> None:
    env = {"PIVOTBUILD_GC_GRACE_S": ""}  # unset in effect: the default 3600 s applies
    garbage, old_runs = _two_generations(tmp_path)
    assert len(garbage) == 1 and len(old_runs) == 1
    before = objects(tmp_path)
    result = run(["gc"], tmp_path, env=env)
    assert result.code == 0, result.err
    assert objects(tmp_path) == before
    assert "kept 1 unreferenced object and 1 run-cache entry" in result.err
    assert "--grace 3600" in result.err
    dry = run(["gc", "--grace", "0", "--dry-run"], tmp_path, env=env)
    assert dry.code == 0 and objects(tmp_path) == before
    assert f"would delete object {next(iter(garbage))}" in dry.out
    now = run(["gc", "--grace", "0"], tmp_path, env=env)
    assert now.code == 0, now.err
    assert objects(tmp_path) == before - garbage
    assert len(run_entries(tmp_path)) == 1 and run_entries(tmp_path) != old_runs
    assert "--grace" not in now.err  # nothing was kept for being young
    assert run(["verify", "--cache"], tmp_path).code == 0


def test_gc_grace_flag_wins_over_the_environment(tmp_path: Path) -> None:
    garbage, _ = _two_generations(tmp_path)
    before = objects(tmp_path)
    kept = run(["gc", "--grace", "3600"], tmp_path, env={"PIVOTBUILD_GC_GRACE_S": "0"})
    assert kept.code == 0 and objects(tmp_path) == before and "--grace" in kept.err
    gone = run(["gc"], tmp_path, env={"PIVOTBUILD_GC_GRACE_S": "0"})
    assert gone.code == 0 and objects(tmp_path) == before - garbage
    bad = run(["gc"], tmp_path, env={"PIVOTBUILD_GC_GRACE_S": "soon"})
    assert bad.code == 2 and "PIVOTBUILD_GC_GRACE_S" in bad.err
    negative = run(["gc", "--grace", "-1"], tmp_path)
    assert negative.code == 2


def test_gc_keeps_the_files_a_young_manifest_lists(tmp_path: Path, monkeypatch) -> None:
    """A .dir object kept for being young keeps the (old) file objects it lists: a manifest
    never outlives its files. Which objects are young is decided by a stand-in for the ctime
    check, so that the test does not depend on the clock."""
    from pivotbuild import gc as gc_module
    from pivotbuild.pipeline import opened

    (tmp_path / "pivot.toml").write_text(
        '[stages.d]\ncmd = "mkdir -p d; cat in.txt > d/f"\ndeps = ["in.txt"]\nouts = ["d"]\n')
    (tmp_path / "in.txt").write_text("one\n")
    assert run(["repro"], tmp_path).code == 0
    first_dir = lock(tmp_path, "d")["outs"][0]["hash"]
    (tmp_path / "in.txt").write_text("two\n")
    assert run(["repro"], tmp_path).code == 0
    before = objects(tmp_path)
    assert len(before) == 4  # two manifests, two files
    young_path = tmp_path / CACHE / "files" / first_dir[:2] / first_dir[2:]
    monkeypatch.setattr(gc_module, "_young", lambda path, now, grace: path == young_path)
    with opened(tmp_path) as pipeline:
        report = gc_module.gc(pipeline, grace_s=60)
    assert objects(tmp_path) == before
    assert report.young_objects == 2 and report.objects == []
    assert len(report.runs) == 1 and len(run_entries(tmp_path)) == 1
    assert run(["gc", "--grace", "0"], tmp_path).code == 0
    assert len(objects(tmp_path)) == 2
    assert run(["verify", "--cache"], tmp_path).code == 0


# ---- 15. messages --------------------------------------------------------------------------


def test_an_invalid_lock_message_reads_well(tmp_path: Path) -> None:
    (tmp_path / "pivot.toml").write_text('[stages.a]\ncmd = "echo a > o"\nouts = ["o"]\n')
    (tmp_path / LOCKS).mkdir(parents=True)
    (tmp_path / LOCKS / "a.json").write_text('{"cmd": ["echo a > o')
    result = run(["status"], tmp_path)
    assert result.code == 0
    assert "at at" not in result.err
    assert "Unterminated string starting at line 1 column 10" in result.err
    (tmp_path / LOCKS / "a.json").write_text("{}")  # (valid JSON, still an invalid lock)
    result = run(["status"], tmp_path)
    assert result.code == 0 and "missing key 'schema'" in result.err
    (tmp_path / LOCKS / "a.json").unlink()


def test_a_corrupt_state_db_is_set_aside_once_and_the_exit_codes_stay(tmp_path: Path) -> None:
    (tmp_path / "pivot.toml").write_text(
        '[stages.a]\ncmd = "echo a >> runs.log; echo a > o"\nouts = ["o"]\n')
    assert run(["repro"], tmp_path).code == 0
    db = tmp_path / ".pivotbuild" / "state.db"
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    db.write_bytes(b"this is not an SQLite database, it was damaged\n" * 100)
    first = run(["status", "-q"], tmp_path)
    assert first.code == 0  # up to date: a damaged memo changes no decision
    warnings = [line for line in first.err.splitlines() if "state.db" in line]
    assert len(warnings) == 1, first.err
    assert "only" in warnings[0] and "stat memo and run history" in warnings[0]
    assert "state.db.corrupt" in warnings[0]
    assert (tmp_path / ".pivotbuild" / "state.db.corrupt").is_file()
    second = run(["repro"], tmp_path)
    assert second.code == 0 and "state.db" not in second.err
    (tmp_path / "o").unlink()
    third = run(["status", "-q"], tmp_path)
    assert third.code == 1 and "state.db" not in third.err
    assert run(["repro", "-f"], tmp_path).code == 0
    assert ran(tmp_path) == ["a", "a"]
    records = history(tmp_path)  # the history works again (the damaged one is set aside)
    assert records and records[-1]["stage"] == "a" and records[-1]["status"] == "ok"


def test_a_state_db_it_cannot_use_is_not_destroyed_and_the_hint_is_given(tmp_path: Path) -> None:
    """A database from a newer pivotbuild is no corruption: it stays, the warning says why."""
    import sqlite3

    (tmp_path / "pivot.toml").write_text('[stages.a]\ncmd = "echo a > o"\nouts = ["o"]\n')
    (tmp_path / ".pivotbuild").mkdir()
    db = tmp_path / ".pivotbuild" / "state.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    result = run(["repro"], tmp_path)
    assert result.code == 0
    warnings = [line for line in result.err.splitlines() if "state.db" in line]
    assert len(warnings) == 1 and "newer pivotbuild" in warnings[0], result.err
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 99
    conn.close()


# ---- 17. history is never rewritten ---------------------------------------------------------


def test_commit_adds_its_own_history_record_and_rewrites_none(tmp_path: Path) -> None:
    (tmp_path / "pivot.toml").write_text(
        '[stages.a]\ncmd = "echo a >> runs.log; echo made > o"\nouts = ["o"]\n'
        '[stages.b]\ncmd = "echo b >> runs.log; echo b > p"\nouts = ["p"]\n')
    assert run(["repro", "--no-commit", "-j", "1"], tmp_path).code == 0
    before = history(tmp_path)
    assert [(r["stage"], r["status"], r["committed"]) for r in before] == [
        ("a", "ok", False), ("b", "ok", False)]
    (tmp_path / "o").write_text("edited by hand\n")
    result = run(["commit", "a"], tmp_path)
    assert result.code == 0, result.err
    after = history(tmp_path)
    assert after[:2] == before  # earlier records exactly as they were
    assert len(after) == 3
    record = after[2]
    assert record["stage"] == "a" and record["status"] == "committed"
    assert record["committed"] is True
    assert record["input_hash"] == lock(tmp_path, "a")["input_hash"]
    assert record["duration_s"] >= 0 and record["run_id"] > before[1]["run_id"]
    text = run(["history", "a"], tmp_path)
    assert text.code == 0 and "committed" in text.out
    # A commit with nothing to commit adds nothing.
    assert run(["commit"], tmp_path).code == 0
    assert [r["stage"] for r in history(tmp_path)] == ["a", "b", "a", "b"]
    assert history(tmp_path)[3]["status"] == "committed"
    assert run(["commit"], tmp_path).code == 0
    assert len(history(tmp_path)) == 4
    assert ran(tmp_path) == ["a", "b"]
