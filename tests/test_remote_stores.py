"""remote/__init__.py and base.py: opening a remote; the store interface, one suite run against
both kinds of store."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from pivotbuild import remote as remotes
from pivotbuild.errors import OperationError, UsageError
from pivotbuild.pipeline import opened
from pivotbuild.remote.base import (
    CORRUPT_LOCAL,
    FILES_DIR,
    NOT_LOCAL,
    RUNS_DIR,
    object_rel,
    run_rel,
)
from pivotbuild.remote.fsspecstore import FsspecStore
from pivotbuild.remote.localdir import LocalStore
from pivotbuild.store.objects import ObjectStore
from tests.remotekit import do, lock_doc, make_project, repro

pytest_plugins = ["tests.remote_fixtures"]  # the remote_dir and built fixtures


def test_open_remote_default_named_unknown_and_none(tmp_path: Path, remote_dir: Path):
    root = make_project(tmp_path / "p", "../remote")
    with opened(root) as pipeline:
        remote = remotes.open_remote(pipeline.project, None)
        assert remote.name == "origin"
        assert remote.store.root == str(remote_dir)  # relative: to the project root
        with pytest.raises(UsageError, match="unknown remote 'nope'"):
            remotes.open_remote(pipeline.project, "nope")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "pivot.toml").write_text("")
    with opened(bare) as pipeline, pytest.raises(UsageError, match="no remote is configured"):
        remotes.open_remote(pipeline.project, None)


def test_missing_local_directory_is_one_line_naming_the_remote(tmp_path: Path):
    root = make_project(tmp_path / "p", str(tmp_path / "nowhere"))
    repro(root)
    for verb in ("push", "fetch"):
        with pytest.raises(OperationError) as info:
            do(verb, root)
        message = str(info.value)
        assert "remote 'origin'" in message and "does not exist" in message
        assert "\n" not in message
    assert not (tmp_path / "nowhere").exists()


# ---- the store interface, the same suite for both kinds of store ------------------------------


class Counting:
    """A progress sink that counts what it is told."""

    def __init__(self) -> None:
        self.added = 0
        self.done = 0

    def add(self, count: int) -> None:
        self.added += count

    def advance(self, count: int = 1) -> None:
        self.done += count


@pytest.fixture(params=["localdir", "memory"])
def store(request, tmp_path: Path):
    """An empty store of each kind: a local directory, an fsspec in-memory file system."""
    if request.param == "localdir":
        path = tmp_path / "store"
        path.mkdir()
        yield LocalStore(str(path))
        return
    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"/store-{uuid.uuid4().hex}"
    fs.mkdir(root)
    yield FsspecStore(fs, root, "memory")
    fs.rm(root, recursive=True)


def local_objects(root: Path) -> ObjectStore:
    return ObjectStore(root / ".pivotbuild" / "cache" / "files", durable=False)


def test_a_store_round_trips_objects_and_lists_what_it_holds(store, built: Path,
                                                             tmp_path: Path):
    objects = local_objects(built)
    digests = sorted(objects.iter_objects())
    tool = next(d for d in digests if os.access(objects.object_path(d), os.X_OK))
    store.check()
    assert store.present(FILES_DIR, digests) == set()
    progress = Counting()
    sent = store.put_many(objects, digests, 2, progress)
    assert sent.failed == {} and progress.done == len(digests)
    assert sent.done == {d: objects.object_path(d).stat().st_size for d in digests}
    absent = "0" * 32
    assert store.present(FILES_DIR, [*digests, absent]) == set(digests)
    assert store.read(object_rel(digests[0])) == objects.object_path(digests[0]).read_bytes()

    other = local_objects(tmp_path / "other")
    for digest in (*digests, absent):
        (other.files_dir / digest[:2]).mkdir(parents=True, exist_ok=True)
    progress = Counting()
    got = store.get_many(other, [*digests, absent], {tool}, 2, progress)
    assert progress.done == len(digests) + 1
    assert isinstance(got.pop(absent), FileNotFoundError)
    for digest, (temp, size, _) in got.items():
        assert Path(temp).parent == other.object_path(digest).parent  # beside its place
        assert Path(temp).read_bytes() == objects.object_path(digest).read_bytes()
        assert size == objects.object_path(digest).stat().st_size
        assert os.access(temp, os.X_OK) == (digest == tool)
    assert not list(other.iter_objects())  # nothing placed: the fetcher verifies first


def test_a_store_never_sends_a_corrupt_or_missing_object(store, built: Path):
    objects = local_objects(built)
    clean = lock_doc(built, "prepare")["outs"][0]["hash"]
    report = lock_doc(built, "report")["outs"][0]["hash"]
    obj = objects.object_path(clean)
    obj.chmod(0o644)
    obj.write_text("EDITED IN PLACE\n")
    objects.object_path(report).unlink()
    digests = sorted(objects.iter_objects()) + [report]
    progress = Counting()
    sent = store.put_many(objects, digests, 2, progress)
    assert sent.failed == {clean: f"not sent: {CORRUPT_LOCAL}", report: f"not sent: {NOT_LOCAL}"}
    assert progress.done == len(digests)
    assert store.present(FILES_DIR, digests) == set(digests) - {clean, report} == set(sent.done)


def test_a_store_writes_and_reads_entries_and_lists_run_entries(store):
    input_hash = "ab" * 16
    store.write(run_rel(input_hash), b'{"entry": 1}\n')
    assert store.read(run_rel(input_hash)) == b'{"entry": 1}\n'
    assert store.present(RUNS_DIR, [input_hash, "cd" * 16]) == {input_hash}
    with pytest.raises(FileNotFoundError):
        store.read(run_rel("cd" * 16))
