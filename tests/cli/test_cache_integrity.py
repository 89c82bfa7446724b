"""Nothing false enters or leaves the cache (SPEC §8), through the CLI.

- an output that is a symlink, or a file sharing its inode with another workspace name, is
  stored by copying its bytes: the object is a regular file, the source keeps its mode;
- a cache object whose content no longer matches its name is never put back: it is removed and
  named, `repro` runs the stage instead (and converges), `checkout` exits 1;
- whether an output is cached is read from pivot.toml, never from the lock;
- a failure to store names the output, not the cache's directory;
- run-cache entries whose objects are missing or corrupt are neither pushed nor pulled.

What ran is counted with a marker file each stage's cmd appends to."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.cli.conftest import lock, objects, ran, run

if TYPE_CHECKING:
    from tests.s3server import S3Server

pytest_plugins = ["tests.s3server"]  # the s3_server and s3_bucket fixtures

CACHE = Path(".pivotbuild") / "cache"


def out_hash(root: Path, stage: str, path: str) -> str:
    return next(o["hash"] for o in lock(root, stage)["outs"] if o["path"] == path)


def obj(root: Path, digest: str) -> Path:
    return root / CACHE / "files" / digest[:2] / digest[2:]


def file_digest(data: bytes) -> str:
    from pivotbuild.hashing import get_backend

    return get_backend().hash_bytes(data)


def damage(path: Path, data: bytes = b"evil bytes\n") -> None:
    """Overwrite a (read-only) file in place, as an editor would through a hardlink."""
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()


def append(path: Path, data: bytes) -> None:
    path.chmod(stat.S_IMODE(path.stat().st_mode) | stat.S_IWUSR)
    with open(path, "ab") as f:
        f.write(data)


def problems(root: Path, *args: str) -> list[dict]:
    result = run(["verify", "--json", *args], root)
    return json.loads(result.out)["problems"]


def errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("pivotbuild: error:")]


def summary(text: str) -> str:
    return [line for line in text.splitlines() if " ran, " in line][-1]


# ---- hole 3: links enter the cache as copies -------------------------------------------------

LINK_CASES = {
    "absolute-symlink": ("ln -s $PWD/src.txt f", "f", "f"),
    "relative-symlink": ("ln -s src.txt f", "f", "f"),
    "hardlink": ("ln src.txt f", "f", "f"),
    "symlink-in-dir": ("mkdir d && ln -s ../src.txt d/l && echo x > d/y", "d", "d/l"),
    "hardlink-in-dir": ("mkdir d && ln src.txt d/l && echo x > d/y", "d", "d/l"),
}


@pytest.mark.parametrize("case", sorted(LINK_CASES))
@pytest.mark.parametrize("checkout", ["default", "copy"])
def test_linked_output_is_stored_as_a_copy(tmp_path: Path, case: str, checkout: str):
    cmd, out, member = LINK_CASES[case]
    project = "" if checkout == "default" else '[project]\ncheckout = ["copy"]\n\n'
    (tmp_path / "pivot.toml").write_text(
        f'{project}[stages.s]\ncmd = "echo s >> runs.log; {cmd}"\nouts = ["{out}"]\n')
    src = tmp_path / "src.txt"
    src.write_bytes(b"hello\n")
    src.chmod(0o640)
    result = run(["repro"], tmp_path)
    assert result.code == 0, result.err
    assert stat.S_IMODE(src.stat().st_mode) == 0o640  # never chmod'ed
    assert src.read_bytes() == b"hello\n"

    digest = file_digest(b"hello\n")
    stored = obj(tmp_path, digest)
    st = os.lstat(stored)
    assert stat.S_ISREG(st.st_mode) and stored.read_bytes() == b"hello\n"
    assert not os.path.samestat(st, src.stat())  # not linked to the source
    if out == "d":
        assert out_hash(tmp_path, "s", "d").endswith(".dir")
    else:
        assert out_hash(tmp_path, "s", "f") == digest

    # Editing the source later leaves the cache intact; restoring gives the stored bytes back.
    with open(src, "ab") as f:
        f.write(b"edited\n")
    assert stored.read_bytes() == b"hello\n"
    assert not [p for p in problems(tmp_path, "--cache") if p["kind"] != "stale"]
    result = run(["repro"], tmp_path)
    assert result.code == 0, result.err
    assert ran(tmp_path) == ["s"]  # restored, not run
    assert (tmp_path / member).read_bytes() == b"hello\n"
    assert src.read_bytes() == b"hello\nedited\n"
    assert stat.S_IMODE(src.stat().st_mode) == 0o640
    verified = run(["verify", "--cache"], tmp_path)
    assert verified.code == 0, verified.err


def test_output_already_in_the_cache_shared_with_a_source_keeps_the_source(tmp_path: Path):
    """The object exists (another stage stored the same bytes): the linked output is relinked
    to it or kept, never the source chmod'ed."""
    (tmp_path / "pivot.toml").write_text(
        '[stages.a]\ncmd = "printf \'hello\\\\n\' > a.txt"\nouts = ["a.txt"]\n\n'
        '[stages.b]\ncmd = "ln src.txt f"\ndeps = ["a.txt"]\nouts = ["f"]\n')
    src = tmp_path / "src.txt"
    src.write_bytes(b"hello\n")
    result = run(["repro"], tmp_path)
    assert result.code == 0, result.err
    assert (tmp_path / "a.txt").read_bytes() == b"hello\n"
    assert stat.S_IMODE(src.stat().st_mode) == 0o644
    append(src, b"more\n")
    assert obj(tmp_path, file_digest(b"hello\n")).read_bytes() == b"hello\n"
    assert run(["verify", "--cache", "a"], tmp_path).code == 0


# ---- hole 4: corrupted objects are never put back --------------------------------------------

PIPELINE = """
[project]
checkout = ["hardlink", "copy"]

[stages.s]
cmd = "echo s >> runs.log; cp in.txt o"
deps = ["in.txt"]
outs = ["o"]

[stages.t]
cmd = "echo t >> runs.log; cat o o > p"
deps = ["o"]
outs = ["p"]
"""


@pytest.fixture
def pipe(tmp_path: Path) -> Path:
    (tmp_path / "pivot.toml").write_text(PIPELINE)
    (tmp_path / "in.txt").write_text("good\n")
    result = run(["repro"], tmp_path)
    assert result.code == 0, result.err
    assert ran(tmp_path) == ["s", "t"]
    return tmp_path


def test_append_through_a_hardlinked_output_runs_the_stage_and_converges(pipe: Path):
    digest = out_hash(pipe, "s", "o")
    assert os.stat(pipe / "o").st_nlink == 2  # the output is its cache object
    append(pipe / "o", b"bad\n")  # corrupts the object too
    result = run(["repro"], pipe)
    assert result.code == 0, result.err
    assert ran(pipe) == ["s", "t", "s"]
    assert (pipe / "o").read_text() == "good\n" and (pipe / "p").read_text() == "good\ngood\n"
    assert "o" in result.err and "corrupt" in result.err
    assert obj(pipe, digest).read_text() == "good\n"  # stored again from the new run
    again = run(["repro"], pipe)
    assert again.code == 0 and ran(pipe) == ["s", "t", "s"]
    assert "restored" not in summary(again.err)
    assert run(["verify", "--cache"], pipe).code == 0


def test_damaged_object_is_not_restored_by_repro(pipe: Path):
    digest = out_hash(pipe, "s", "o")
    (pipe / "o").unlink()
    damage(obj(pipe, digest))
    result = run(["repro"], pipe)
    assert result.code == 0, result.err
    assert ran(pipe) == ["s", "t", "s"]
    assert (pipe / "o").read_text() == "good\n"
    warning = [line for line in result.err.splitlines() if digest in line]
    assert warning and "o" in warning[0] and "corrupt" in warning[0]
    again = run(["repro"], pipe)
    assert again.code == 0 and ran(pipe) == ["s", "t", "s"]
    assert "restored" not in summary(again.err)


def test_damaged_object_is_not_taken_from_the_run_cache(pipe: Path):
    good = out_hash(pipe, "s", "o")
    (pipe / "in.txt").write_text("other\n")
    assert run(["repro"], pipe).code == 0
    assert ran(pipe) == ["s", "t", "s", "t"]
    damage(obj(pipe, good))
    (pipe / "in.txt").write_text("good\n")  # the run cache knows these inputs
    result = run(["repro"], pipe)
    assert result.code == 0, result.err
    assert ran(pipe) == ["s", "t", "s", "t", "s"]  # s ran: its object was bad (t: run cache)
    assert (pipe / "o").read_text() == "good\n" and (pipe / "p").read_text() == "good\ngood\n"
    assert good in result.err
    assert run(["verify", "--cache"], pipe).code == 0


def test_damaged_object_checkout_exits_1_names_the_output_and_removes_it(pipe: Path):
    digest = out_hash(pipe, "s", "o")
    (pipe / "o").unlink()
    damage(obj(pipe, digest))
    result = run(["checkout"], pipe)
    assert result.code == 1
    assert not (pipe / "o").exists()
    assert digest not in objects(pipe)
    [line] = [e for e in errors(result.err) if digest in e]
    assert line.startswith("pivotbuild: error: o: ") and "corrupt" in line
    # The object is gone now: checkout says so, repro makes it again.
    assert run(["checkout"], pipe).code == 1
    assert run(["repro"], pipe).code == 0
    assert ran(pipe) == ["s", "t", "s"] and (pipe / "o").read_text() == "good\n"
    assert run(["checkout"], pipe).code == 0


def test_damaged_member_of_a_directory_output(tmp_path: Path):
    (tmp_path / "pivot.toml").write_text(
        '[stages.s]\ncmd = "echo s >> runs.log; mkdir -p d; cp in.txt d/a; echo b > d/b"\n'
        'deps = ["in.txt"]\nouts = ["d"]\n')
    (tmp_path / "in.txt").write_text("good\n")
    assert run(["repro"], tmp_path).code == 0
    member = file_digest(b"good\n")
    shutil.rmtree(tmp_path / "d")
    damage(obj(tmp_path, member))
    checked = run(["checkout"], tmp_path)
    assert checked.code == 1 and "d/a" in checked.err and member in checked.err
    assert (tmp_path / "d" / "b").read_text() == "b\n"  # the rest is restored
    assert not (tmp_path / "d" / "a").exists()
    result = run(["repro"], tmp_path)
    assert result.code == 0, result.err
    assert ran(tmp_path) == ["s", "s"]
    assert (tmp_path / "d" / "a").read_text() == "good\n"
    assert obj(tmp_path, member).read_text() == "good\n"
    again = run(["repro"], tmp_path)
    assert again.code == 0 and ran(tmp_path) == ["s", "s"]
    assert run(["verify", "--cache"], tmp_path).code == 0


def test_damaged_directory_member_is_not_restored_by_repro(tmp_path: Path):
    (tmp_path / "pivot.toml").write_text(
        '[stages.s]\ncmd = "echo s >> runs.log; mkdir -p d; cp in.txt d/a; echo b > d/b"\n'
        'deps = ["in.txt"]\nouts = ["d"]\n')
    (tmp_path / "in.txt").write_text("good\n")
    assert run(["repro"], tmp_path).code == 0
    member = file_digest(b"good\n")
    shutil.rmtree(tmp_path / "d")
    damage(obj(tmp_path, member))
    result = run(["repro"], tmp_path)
    assert result.code == 0, result.err
    assert ran(tmp_path) == ["s", "s"] and (tmp_path / "d" / "a").read_text() == "good\n"
    again = run(["repro"], tmp_path)
    assert again.code == 0 and ran(tmp_path) == ["s", "s"]
    assert run(["verify", "--cache"], tmp_path).code == 0


@pytest.mark.parametrize("where", ["d/a", "f"])
def test_commit_never_relies_on_a_damaged_object_already_in_the_cache(tmp_path: Path,
                                                                        where: str):
    """A run that makes outputs whose objects exist already (a file, a directory's member)
    checks them: a damaged one is stored again from the workspace before the lock names it."""
    other = "f" if where == "d/a" else "d/a"
    (tmp_path / "pivot.toml").write_text(
        '[project]\ncheckout = ["copy"]\n\n'
        f'[stages.s]\ncmd = "echo s >> runs.log; mkdir -p d; cp in.txt {where}; '
        f'echo other > {other}"\ndeps = ["in.txt"]\nouts = ["d", "f"]\n')
    (tmp_path / "in.txt").write_text("good\n")
    assert run(["repro"], tmp_path).code == 0
    member = file_digest(b"good\n")
    damage(obj(tmp_path, member))
    forced = run(["repro", "-f"], tmp_path)
    assert forced.code == 0, forced.err
    assert ran(tmp_path) == ["s", "s"]
    assert obj(tmp_path, member).read_text() == "good\n"
    assert run(["verify", "--cache"], tmp_path).code == 0


def test_pull_does_not_place_a_damaged_local_object(tmp_path: Path):
    remote = tmp_path / "remote"
    remote.mkdir()
    a = tmp_path / "a"
    a.mkdir()
    (a / "pivot.toml").write_text(f'[remotes.origin]\nurl = "{remote}"\n' + PIPELINE)
    (a / "in.txt").write_text("good\n")
    assert run(["repro"], a).code == 0
    assert run(["push", "-r", "origin"], a).code == 0
    digest = out_hash(a, "s", "o")
    (a / "o").unlink()
    damage(obj(a, digest))
    first = run(["pull", "-r", "origin"], a)
    assert first.code == 1 and not (a / "o").exists()
    assert any(digest in e and e.startswith("pivotbuild: error: o: ") for e in errors(first.err))
    second = run(["pull", "-r", "origin"], a)  # the bad object was removed: fetched again
    assert second.code == 0, second.err
    assert (a / "o").read_text() == "good\n"
    assert run(["verify", "--cache"], a).code == 0


# ---- hole 7: pivot.toml decides what is cached -----------------------------------------------

def toggled(root: Path, cache: bool) -> None:
    text = (root / "pivot.toml").read_text()
    old, new = ('outs = ["o"]', 'outs = [{path = "o", cache = false}]')
    (root / "pivot.toml").write_text(text.replace(old, new) if not cache else
                                     text.replace(new, old))


@pytest.fixture
def remote_pipe(tmp_path: Path) -> tuple[Path, Path]:
    remote = tmp_path / "remote"
    remote.mkdir()
    root = tmp_path / "a"
    root.mkdir()
    (root / "pivot.toml").write_text(f'[project]\ndefault_remote = "origin"\n\n'
                                     f'[remotes.origin]\nurl = "{remote}"\n' + PIPELINE.replace(
                                         '[project]\ncheckout = ["hardlink", "copy"]\n', ""))
    (root / "in.txt").write_text("good\n")
    return root, remote


def remote_objects(remote: Path) -> set[str]:
    return {p.parent.name + p.name for p in (remote / "files").glob("*/*")}


def test_cache_turned_off_is_neither_pushed_nor_restored(remote_pipe: tuple[Path, Path]):
    root, remote = remote_pipe
    assert run(["repro"], root).code == 0
    o_hash = out_hash(root, "s", "o")
    toggled(root, cache=False)
    assert run(["status", "-q"], root).code == 0  # toggling changes nothing
    pushed = run(["push"], root)
    assert pushed.code == 0, pushed.err
    assert o_hash not in remote_objects(remote)
    assert out_hash(root, "t", "p") in remote_objects(remote)
    (root / "o").unlink()
    checked = run(["checkout"], root)
    assert checked.code == 0, checked.err
    assert not (root / "o").exists()
    result = run(["repro", "s"], root)  # not restored from the cache: run
    assert result.code == 0, result.err
    assert ran(root) == ["s", "t", "s"] and (root / "o").read_text() == "good\n"


def test_cache_turned_off_is_not_pulled(remote_pipe: tuple[Path, Path], tmp_path: Path):
    root, _remote = remote_pipe
    assert run(["repro"], root).code == 0
    assert run(["push"], root).code == 0
    toggled(root, cache=False)
    b = tmp_path / "b"
    b.mkdir()
    shutil.copy(root / "pivot.toml", b / "pivot.toml")
    shutil.copy(root / "in.txt", b / "in.txt")
    shutil.copytree(root / ".pivotbuild" / "locks", b / ".pivotbuild" / "locks")
    pulled = run(["pull"], b)
    assert pulled.code == 0, pulled.err
    assert not (b / "o").exists() and (b / "p").read_text() == "good\ngood\n"
    assert out_hash(root, "s", "o") not in objects(b)


def test_cache_turned_on_is_missing_until_committed(remote_pipe: tuple[Path, Path]):
    root, _ = remote_pipe
    toggled(root, cache=False)
    assert run(["repro"], root).code == 0
    o_hash = out_hash(root, "s", "o")
    assert o_hash not in objects(root)
    toggled(root, cache=True)
    result = run(["verify"], root)
    assert result.code == 1
    [line] = [e for e in errors(result.err) if o_hash in e]
    assert line.startswith("pivotbuild: error: o: ") and "commit" in line
    (root / "o").unlink()
    checked = run(["checkout"], root)
    assert checked.code == 1 and o_hash in checked.err  # cached now, and missing
    (root / "o").write_text("good\n")
    assert run(["commit", "s"], root).code == 0
    assert o_hash in objects(root)
    assert run(["verify"], root).code == 0
    (root / "o").unlink()
    assert run(["checkout"], root).code == 0
    assert (root / "o").read_text() == "good\n"


# ---- hole 15: a store failure names the output -----------------------------------------------

def test_store_failure_names_the_output(tmp_path: Path):
    (tmp_path / "pivot.toml").write_text('[stages.s]\ncmd = "echo hi > o"\nouts = ["o"]\n')
    files = tmp_path / CACHE / "files"
    files.mkdir(parents=True)
    files.chmod(0o555)
    try:
        result = run(["repro"], tmp_path, obey_permissions=True)
    finally:
        files.chmod(0o755)
    assert result.code == 1
    [line] = errors(result.err)
    assert line.startswith("pivotbuild: error: stage 's' failed: o: cannot store in the cache")
    assert "Permission denied" in line


# ---- run-cache trust -------------------------------------------------------------------------

def run_entries(top: Path) -> set[str]:
    return {p.parent.name + p.name.removesuffix(".json") for p in (top / "runs").glob("*/*")}


def test_push_run_cache_refuses_an_entry_whose_object_is_corrupt(
        remote_pipe: tuple[Path, Path]):
    root, remote = remote_pipe
    assert run(["repro"], root).code == 0
    digest = out_hash(root, "s", "o")
    damage(obj(root, digest))
    pushed = run(["push", "--run-cache"], root)
    assert pushed.code == 1
    assert digest not in remote_objects(remote)
    assert lock(root, "s")["input_hash"] not in run_entries(remote)
    assert lock(root, "t")["input_hash"] in run_entries(remote)


def test_push_run_cache_to_s3_refuses_a_corrupt_object(tmp_path: Path, s3_server: S3Server,
                                                        s3_bucket: str):
    root = tmp_path / "a"
    root.mkdir()
    (root / "pivot.toml").write_text(
        f'[project]\ndefault_remote = "origin"\n\n[remotes.origin]\n'
        f'url = "s3://{s3_bucket}/p"\n' + PIPELINE.replace(
            '[project]\ncheckout = ["hardlink", "copy"]\n', ""))
    (root / ".pivotbuild").mkdir()
    (root / ".pivotbuild" / "config.local.toml").write_text(
        f'[remotes.origin]\nendpoint_url = "{s3_server.endpoint}"\n')
    (root / "in.txt").write_text("good\n")
    assert run(["repro"], root).code == 0
    digest = out_hash(root, "s", "o")
    damage(obj(root, digest))
    pushed = run(["push", "--run-cache"], root)
    assert pushed.code == 1
    assert any(digest in e and "corrupt" in e for e in errors(pushed.err)), pushed.err
    keys = s3_server.filesystem().find(f"{s3_bucket}/p")
    names = {k.rsplit("/", 2)[-2] + k.rsplit("/", 1)[-1] for k in keys}
    assert digest not in names
    assert lock(root, "s")["input_hash"] + ".json" not in names
    assert lock(root, "t")["input_hash"] + ".json" in names


def test_repro_pull_replaces_a_corrupt_local_run_cache_object(
        remote_pipe: tuple[Path, Path], tmp_path: Path):
    root, _remote = remote_pipe
    assert run(["repro"], root).code == 0
    assert run(["push", "--run-cache"], root).code == 0
    b = tmp_path / "b"
    b.mkdir()
    for name in ("pivot.toml", "in.txt"):
        shutil.copy(root / name, b / name)
    shutil.copytree(root / CACHE / "runs", b / CACHE / "runs")  # a local entry...
    digest = out_hash(root, "s", "o")
    obj(b, digest).parent.mkdir(parents=True)
    obj(b, digest).write_bytes(b"poison\n")  # ...naming an object that is not what it says
    result = run(["repro", "--pull"], b)
    assert result.code == 0, result.err
    assert ran(b) == []  # taken from the remote instead
    assert (b / "o").read_text() == "good\n" and (b / "p").read_text() == "good\ngood\n"
    assert obj(b, digest).read_text() == "good\n"


def test_repro_pull_refuses_a_run_cache_entry_with_a_poisoned_object(
        remote_pipe: tuple[Path, Path], tmp_path: Path):
    root, remote = remote_pipe
    assert run(["repro"], root).code == 0
    assert run(["push", "--run-cache"], root).code == 0
    digest = out_hash(root, "s", "o")
    damage(remote / "files" / digest[:2] / digest[2:])
    b = tmp_path / "b"
    b.mkdir()
    for name in ("pivot.toml", "in.txt"):
        shutil.copy(root / name, b / name)
    result = run(["repro", "--pull"], b)
    assert result.code == 1  # the rejected object is reported...
    assert any(digest in e and "rejected" in e for e in errors(result.err)), result.err
    assert ran(b) == ["s"]  # ...and s ran instead (t's entry and objects are good)
    assert (b / "o").read_text() == "good\n"
    assert run(["verify", "--cache"], b).code == 0
