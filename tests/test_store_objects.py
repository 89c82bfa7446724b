"""store/objects.py: storing, reading, checking, listing and removing content-addressed objects,
on real files."""

# ruff: noqa: F811 - the fixtures imported from tests.storekit are parameters here

from __future__ import annotations

import errno
import multiprocessing
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest

from pivotbuild import manifest
from pivotbuild.errors import OperationError
from pivotbuild.names import InvalidHashError, check_hash
from pivotbuild.store import objects as objects_mod
from pivotbuild.store.objects import ObjectStore
from tests.storekit import (  # noqa: F401 - fixtures
    H,
    corrupt,
    each_backend,
    file_hash,
    make_tree,
    mode,
    objects,
    placer,
    project,
    temps_in,
    tree_digest,
    write,
)


def test_object_layout(objects):
    assert objects.object_path(H) == objects.files_dir / "01" / H[2:]
    assert objects.object_path(H + ".dir") == objects.files_dir / "01" / (H[2:] + ".dir")


@pytest.mark.parametrize(
    "bad",
    ["", "abc", H.upper(), H + "0", H[:-1], H + ".DIR", H + ".dirx", H + "/x", "../" + H[3:],
     "../../etc/passwd", H[:2] + "/" + H[3:], " " + H[1:], H + "\n", None, 12],
)
def test_invalid_hashes_are_rejected(objects, bad):
    with pytest.raises(InvalidHashError) as info:
        objects.object_path(bad)
    assert isinstance(info.value, ValueError) and isinstance(info.value, OperationError)
    with pytest.raises(InvalidHashError):
        objects.has(bad)


def test_file_and_dir_hash_kinds_are_checked(objects, placer, project):
    assert check_hash(H, directory=False) == H
    with pytest.raises(InvalidHashError):
        check_hash(H + ".dir", directory=False)
    src = write(project / "f", b"x")
    with pytest.raises(InvalidHashError):
        objects.store_file(src, H + ".dir")
    with pytest.raises(InvalidHashError):
        placer.place_dir(H, project / "d", ["copy"])


def test_store_file_and_link_back_by_copy(objects, placer, project):
    src = write(project / "data.csv", b"a,b\n1,2\n")
    h = file_hash(src)
    assert not objects.has(h)
    objects.store_file(src, h)
    obj = objects.object_path(h)
    assert objects.has(h) and obj.read_bytes() == b"a,b\n1,2\n"
    assert mode(obj) == 0o444
    assert objects.verify(h)
    src.unlink()
    assert placer.link_file(h, src, ["copy"]) == "copy"
    assert src.read_bytes() == b"a,b\n1,2\n"
    assert mode(src) == 0o644
    assert os.stat(src).st_ino != os.stat(obj).st_ino
    assert temps_in(project) == []


def test_store_is_idempotent(objects, project):
    src = write(project / "f", b"x")
    h = file_hash(src)
    objects.store_file(src, h)
    ino = os.stat(objects.object_path(h)).st_ino
    objects.store_file(src, h)
    assert os.stat(objects.object_path(h)).st_ino == ino
    existing: list[str] = []
    objects.store_file(src, h, existing=existing)
    assert existing == [str(src)]


def test_exec_bit_is_kept(objects, placer, project):
    src = write(project / "tool.sh", b"#!/bin/sh\n", executable=True)
    h = file_hash(src)
    objects.store_file(src, h)
    assert mode(objects.object_path(h)) == 0o555
    dest = project / "copy.sh"
    assert placer.link_file(h, dest, ["copy"]) == "copy"
    assert mode(dest) == 0o755
    linked = project / "linked.sh"
    assert placer.link_file(h, linked, ["hardlink"]) == "hardlink"
    assert mode(linked) == 0o555


def test_store_refuses_a_file_that_changed_after_hashing(objects, project):
    src = write(project / "f", b"first version")
    h = file_hash(src)
    src.write_bytes(b"second version")
    with pytest.raises(OperationError, match="changed while it was being stored") as info:
        objects.store_file(src, h)
    assert str(src) in str(info.value)
    assert not objects.has(h)
    assert list(objects.iter_objects()) == []
    assert temps_in(objects.files_dir) == []


def test_store_of_a_missing_file_names_it(objects, project):
    with pytest.raises(OperationError, match="gone.*No such file"):
        objects.store_file(project / "gone", H)
    assert list(objects.iter_objects()) == []


def test_store_refuses_a_non_regular_file(objects, project):
    (project / "d").mkdir()
    with pytest.raises(OperationError, match="not a regular file"):
        objects.store_file(project / "d", H)


def test_store_many_files_in_parallel_batch(tmp_path, project):
    # More files than are fsynced one by one: the one-syncfs path is taken.
    objects = ObjectStore(tmp_path / "cache" / "files", jobs=4)
    d = project / "many"
    for i in range(objects_mod._FSYNC_EACH_MAX + 20):
        write(d / f"f{i}", f"file {i % 40}".encode())
    digest = tree_digest(d, project)
    assert objects.store_dir(d, digest) == 40 + 1  # distinct contents, and the .dir object
    for entry in manifest.parse(digest.manifest):
        assert objects.object_path(entry.hash).read_bytes() == (d / entry.path).read_bytes()
    assert temps_in(objects.files_dir) == []


def test_not_durable_mode_stores_the_same(tmp_path, project):
    objects = ObjectStore(tmp_path / "cache" / "files", durable=False)
    src = write(project / "f", b"x")
    h = file_hash(src)
    objects.store_file(src, h)
    assert objects.verify(h)


def test_concurrent_store_from_threads(tmp_path, project):
    src = write(project / "f", os.urandom(300_000))
    h = file_hash(src)
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def store():
        try:
            barrier.wait()
            ObjectStore(tmp_path / "shared" / "files").store_file(src, h)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=store) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    shared = ObjectStore(tmp_path / "shared" / "files")
    assert list(shared.iter_objects()) == [h]
    assert shared.verify(h) and temps_in(shared.files_dir) == []


def _store_in_process(cache_dir: str, src: str, h: str, start: multiprocessing.Event) -> None:
    start.wait()
    ObjectStore(Path(cache_dir) / "files").store_file(Path(src), h)


def test_concurrent_store_from_processes(tmp_path, project):
    src = write(project / "f", os.urandom(2_000_000))
    h = file_hash(src)
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [
        ctx.Process(target=_store_in_process, args=(str(tmp_path / "shared"), str(src), h, start))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    shared = ObjectStore(tmp_path / "shared" / "files")
    assert list(shared.iter_objects()) == [h]
    assert shared.verify(h) and temps_in(shared.files_dir) == []


def test_store_dir_and_checkout_round_trip(objects, placer, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    added = objects.store_dir(d, digest)
    # 4 distinct contents among 5 files, plus the .dir object
    assert added == 5
    dir_obj = objects.object_path(digest.hash)
    assert dir_obj.read_bytes() == digest.manifest and mode(dir_obj) == 0o444
    for entry in manifest.parse(digest.manifest):
        assert objects.has(entry.hash)
    assert objects.verify(digest.hash)
    assert objects.store_dir(d, digest) == 0

    for methods in (["copy"], ["hardlink"], ["reflink", "hardlink", "copy"]):
        shutil.rmtree(d)
        restored = placer.place_dir(digest.hash, d, methods)
        assert sorted(restored) == sorted(e.path for e in manifest.parse(digest.manifest))
        assert tree_digest(d, project).hash == digest.hash
        assert os.access(d / "run.sh", os.X_OK) and mode(d / "run.sh") & 0o100
        assert not mode(d / "weights.bin") & 0o111
        assert temps_in(project) == []


def test_dir_object_is_written_last(objects, project, monkeypatch):
    d = make_tree(project)
    digest = tree_digest(d, project)
    real_copy_in = ObjectStore._copy_in

    def failing_copy_in(self, job, fsync):
        if job.src.endswith("weights.bin"):
            raise OperationError(f"{job.shown}: cannot store in the cache: simulated failure")
        return real_copy_in(self, job, fsync)

    monkeypatch.setattr(ObjectStore, "_copy_in", failing_copy_in)
    with pytest.raises(OperationError, match="simulated failure"):
        objects.store_dir(d, digest)
    assert not objects.has(digest.hash)
    assert temps_in(objects.files_dir) == []


def test_dir_member_changed_after_hashing_stores_no_dir_object(objects, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    (d / "sub" / "b.txt").write_bytes(b"changed")
    with pytest.raises(OperationError, match=r"sub/b\.txt: the file changed"):
        objects.store_dir(d, digest)
    assert not objects.has(digest.hash)


def test_store_dir_checks_the_manifest_against_its_hash(objects, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    digest.manifest = digest.manifest.replace(b"weights", b"weightz")
    with pytest.raises(OperationError, match="does not match its hash"):
        objects.store_dir(d, digest)
    assert list(objects.iter_objects()) == []


def test_verify_detects_corruption(objects, project):
    src = write(project / "f", b"good")
    h = file_hash(src)
    objects.store_file(src, h)
    obj = objects.object_path(h)
    assert objects.verify(h)
    obj.chmod(0o644)
    obj.write_bytes(b"bad!")
    assert not objects.verify(h)
    assert not objects.verify(H)


def test_iter_objects_and_remove(objects, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    objects.store_dir(d, digest)
    shard = objects.object_path(digest.hash).parent
    (shard / ".leftover.abc.tmp").write_bytes(b"partial")
    (objects.files_dir / "not-a-shard").mkdir()
    listed = list(objects.iter_objects())
    expected = {e.hash for e in manifest.parse(digest.manifest)} | {digest.hash}
    assert listed == sorted(listed) and set(listed) == expected
    assert objects.remove(digest.hash) is True
    assert objects.remove(digest.hash) is False
    assert digest.hash not in set(objects.iter_objects())


def test_remove_stale_temps(objects, project):
    src = write(project / "f", b"x")
    h = file_hash(src)
    objects.store_file(src, h)
    stale = objects.object_path(h).parent / ".old.abc.tmp"
    stale.write_bytes(b"partial")
    os.utime(stale, (1, 1))
    fresh = objects.object_path(h).parent / ".new.abc.tmp"
    fresh.write_bytes(b"partial")
    assert objects.remove_stale_temps() == 1
    assert not stale.exists() and fresh.exists() and objects.has(h)


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_store_of_a_symlink_copies_its_target(objects, project, relative):
    src = write(project / "src.txt", b"linked bytes")
    src.chmod(0o640)
    link = project / "out"
    link.symlink_to("src.txt" if relative else src)
    h = file_hash(src)
    objects.store_file(link, h, link=True)
    obj = objects.object_path(h)
    assert stat.S_ISREG(os.lstat(obj).st_mode) and obj.read_bytes() == b"linked bytes"
    assert mode(obj) == 0o444 and mode(src) == 0o640
    assert os.stat(obj).st_ino != os.stat(src).st_ino
    assert link.is_symlink()


def test_store_of_a_file_another_name_shares_copies_it(objects, project):
    src = write(project / "src.txt", b"shared inode")
    out = project / "out"
    os.link(src, out)
    h = file_hash(out)
    objects.store_file(out, h, link=True)
    obj = objects.object_path(h)
    assert os.stat(obj).st_ino != os.stat(src).st_ino and os.stat(src).st_nlink == 2
    assert mode(src) == 0o644
    with open(src, "ab") as f:  # an edit of the source never reaches the object
        f.write(b" edited")
    assert objects.verify(h)


def test_store_of_a_sole_file_still_links_it(objects, project):
    src = write(project / "alone", b"one name")
    h = file_hash(src)
    objects.store_file(src, h, link=True)
    obj = objects.object_path(h)
    if os.stat(obj).st_ino != os.stat(src).st_ino:
        pytest.skip("this file system reflinks or refuses hardlinks into the cache")
    assert mode(src) == 0o444


def test_store_dir_copies_its_links(objects, project):
    src = write(project / "src.txt", b"shared")
    d = project / "d"
    write(d / "own", b"own bytes")
    (d / "sym").symlink_to("../src.txt")
    os.link(src, d / "hard")
    digest = tree_digest(d, project)
    objects.store_dir(d, digest, link=True)
    for e in manifest.parse(digest.manifest):
        obj = objects.object_path(e.hash)
        assert stat.S_ISREG(os.lstat(obj).st_mode)
    assert os.stat(src).st_nlink == 2 and mode(src) == 0o644
    src_obj = objects.object_path(file_hash(src))
    assert os.stat(src_obj).st_ino != os.stat(src).st_ino
    assert (d / "sym").is_symlink()


@pytest.mark.parametrize("link", [False, True])
def test_store_failure_names_the_output_then_the_cache(objects, project, monkeypatch, link):
    src = write(project / "f", b"x")
    h = file_hash(src)

    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(os, "makedirs", refuse)
    with pytest.raises(OperationError, match=r"^out/f: cannot store in the cache: "
                       r"Permission denied \(.*files/\w\w\)$"):
        objects.store_file(src, h, link=link, shown="out/f")
    with pytest.raises(OperationError, match=r"^out/f: cannot store in the cache: "):
        objects.store_file(project / "missing", h, shown="out/f")


def test_store_replaces_a_corrupt_object(objects, project):
    src = write(project / "f", b"good bytes")
    h = file_hash(src)
    objects.store_file(src, h)
    corrupt(objects.object_path(h))
    existing: list[str] = []
    objects.store_file(src, h, existing=existing)
    assert existing == [] and objects.verify(h)


def test_check_output_of_a_directory(objects, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    objects.store_dir(d, digest)
    assert objects.check_output(digest.hash, "model") == []
    bad = {e.path: e.hash for e in manifest.parse(digest.manifest)}["sub/b.txt"]
    corrupt(objects.object_path(bad))
    found = objects.check_output(digest.hash, "model", remove=False)
    assert found and found[0][1] == bad and objects.has(bad) and objects.has(digest.hash)
    assert objects.check_output(digest.hash, "model")[0][1] == bad
    assert not objects.has(bad) and not objects.has(digest.hash)
