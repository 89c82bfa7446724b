"""The content-addressed cache: store, link out, directories, safety, run cache, on real files."""

from __future__ import annotations

import errno
import multiprocessing
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest

from pivotbuild import cache as cachemod
from pivotbuild import hashing, manifest
from pivotbuild.cache import Cache, InvalidHashError, MissingObjectsError, check_hash
from pivotbuild.errors import OperationError, UsageError
from pivotbuild.lock import LockedOut


@pytest.fixture(params=["core", "python"], autouse=True)
def each_backend(request, monkeypatch):
    """Run every test with the compiled core and with the pure-Python fallback."""
    if request.param == "core":
        try:
            backend: hashing.Backend = hashing.CoreBackend()
        except ImportError:
            pytest.skip("compiled core not built on this machine")
    else:
        backend = hashing.PythonBackend()
    monkeypatch.setattr(hashing, "_backend", backend)
    return backend


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    return root


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "proj" / ".pivotbuild" / "cache")


def file_hash(path: Path) -> str:
    digest = hashing.get_backend().hash_files([str(path)])[0]
    assert digest.hash is not None, digest.error
    return digest.hash


def write(path: Path, data: bytes, executable: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o755 if executable else 0o644)
    return path


def tree_digest(path: Path, root: Path) -> hashing.TreeDigest:
    digest = hashing.get_backend().hash_tree(str(path), str(root))
    assert digest.hash is not None, digest.errors
    return digest


def make_tree(root: Path) -> Path:
    d = root / "model"
    write(d / "weights.bin", b"\x00\x01" * 5000)
    write(d / "run.sh", b"#!/bin/sh\necho hi\n", executable=True)
    write(d / "sub" / "deep" / "a.txt", b"same")
    write(d / "sub" / "b.txt", b"same")  # two files, one object
    write(d / "name with spaces\\and backslash", b"odd")
    return d


def temps_in(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.endswith(".tmp")]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# ---- names ---------------------------------------------------------------------------------

H = "0123456789abcdef0123456789abcdef"


def test_object_layout(cache):
    assert cache.object_path(H) == cache.cache_dir / "files" / "01" / H[2:]
    assert cache.object_path(H + ".dir") == cache.cache_dir / "files" / "01" / (H[2:] + ".dir")
    assert cache.run_path(H) == cache.cache_dir / "runs" / "01" / (H[2:] + ".json")


@pytest.mark.parametrize(
    "bad",
    ["", "abc", H.upper(), H + "0", H[:-1], H + ".DIR", H + ".dirx", H + "/x", "../" + H[3:],
     "../../etc/passwd", H[:2] + "/" + H[3:], " " + H[1:], H + "\n", None, 12],
)
def test_invalid_hashes_are_rejected(cache, bad):
    with pytest.raises(InvalidHashError) as info:
        cache.object_path(bad)
    assert isinstance(info.value, ValueError) and isinstance(info.value, OperationError)
    with pytest.raises(InvalidHashError):
        cache.has(bad)


def test_file_and_dir_hash_kinds_are_checked(cache, project):
    assert check_hash(H, directory=False) == H
    with pytest.raises(InvalidHashError):
        check_hash(H + ".dir", directory=False)
    with pytest.raises(InvalidHashError):
        cache.run_path(H + ".dir")
    src = write(project / "f", b"x")
    with pytest.raises(InvalidHashError):
        cache.store_file(src, H + ".dir")
    with pytest.raises(InvalidHashError):
        cache.checkout_dir(H, project / "d", ["copy"], project)


# ---- files ---------------------------------------------------------------------------------


def test_store_file_and_link_back_by_copy(cache, project):
    src = write(project / "data.csv", b"a,b\n1,2\n")
    h = file_hash(src)
    assert not cache.has(h)
    cache.store_file(src, h)
    obj = cache.object_path(h)
    assert cache.has(h) and obj.read_bytes() == b"a,b\n1,2\n"
    assert mode(obj) == 0o444
    assert cache.verify(h)
    src.unlink()
    assert cache.link_out(h, src, ["copy"], project) == "copy"
    assert src.read_bytes() == b"a,b\n1,2\n"
    assert mode(src) == 0o644
    assert os.stat(src).st_ino != os.stat(obj).st_ino
    assert temps_in(project) == []


def test_store_is_idempotent(cache, project):
    src = write(project / "f", b"x")
    h = file_hash(src)
    cache.store_file(src, h)
    ino = os.stat(cache.object_path(h)).st_ino
    cache.store_file(src, h)
    assert os.stat(cache.object_path(h)).st_ino == ino
    assert cache.store_files([(src, h)]) == 0


def test_exec_bit_is_kept(cache, project):
    src = write(project / "tool.sh", b"#!/bin/sh\n", executable=True)
    h = file_hash(src)
    cache.store_file(src, h)
    assert mode(cache.object_path(h)) == 0o555
    dest = project / "copy.sh"
    assert cache.link_out(h, dest, ["copy"], project) == "copy"
    assert mode(dest) == 0o755
    linked = project / "linked.sh"
    assert cache.link_out(h, linked, ["hardlink"], project) == "hardlink"
    assert mode(linked) == 0o555


def test_hardlink_shares_the_read_only_inode(cache, project):
    src = write(project / "big.bin", os.urandom(100_000))
    h = file_hash(src)
    cache.store_file(src, h)
    src.unlink()
    assert cache.link_out(h, src, ["hardlink", "copy"], project) == "hardlink"
    assert os.stat(src).st_ino == os.stat(cache.object_path(h)).st_ino
    assert mode(src) == 0o444
    # Linking again over the same inode changes nothing and leaves no temp behind.
    assert cache.link_out(h, src, ["hardlink"], project) == "hardlink"
    assert temps_in(project) == []
    # A copy replaces the shared inode with a private, writable one.
    assert cache.link_out(h, src, ["copy"], project) == "copy"
    assert os.stat(src).st_ino != os.stat(cache.object_path(h)).st_ino
    assert mode(cache.object_path(h)) == 0o444


def test_hardlink_not_used_when_exec_bit_differs(cache, project):
    src = write(project / "plain", b"same bytes")
    h = file_hash(src)
    cache.store_file(src, h)
    dest = project / "wanted-exec"
    assert cache.link_out(h, dest, ["hardlink", "copy"], project, executable=True) == "copy"
    assert mode(dest) == 0o755
    with pytest.raises(OperationError, match="exec bit"):
        cache.link_out(h, project / "x", ["hardlink"], project, executable=True)


def test_hardlink_falls_back_on_exdev(cache, project, monkeypatch):
    src = write(project / "f", b"content")
    h = file_hash(src)
    cache.store_file(src, h)

    def cross_device(*args, **kwargs):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "link", cross_device)
    dest = project / "out" / "f"
    assert cache.link_out(h, dest, ["hardlink", "copy"], project) == "copy"
    assert dest.read_bytes() == b"content"
    with pytest.raises(OperationError, match="cannot restore from the cache with hardlink"):
        cache.link_out(h, project / "g", ["hardlink"], project)
    assert not (project / "g").exists() and temps_in(project) == []


@pytest.mark.parametrize("code", [errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP])
def test_hardlink_falls_back_on_other_refusals(cache, project, monkeypatch, code):
    src = write(project / "f", b"content")
    h = file_hash(src)
    cache.store_file(src, h)

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "link", refuse)
    assert cache.link_out(h, project / "g", ["hardlink", "copy"], project) == "copy"


def test_reflink_falls_back_when_unsupported(cache, project, monkeypatch):
    src = write(project / "f", b"content")
    h = file_hash(src)
    cache.store_file(src, h)

    def no_clone(fd, request, arg=0):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(cachemod.fcntl, "ioctl", no_clone)
    dest = project / "g"
    assert cache.link_out(h, dest, ["reflink", "hardlink", "copy"], project) == "hardlink"
    dest.unlink()
    assert cache.link_out(h, dest, ["reflink", "copy"], project) == "copy"
    with pytest.raises(OperationError, match="reflink"):
        cache.link_out(h, project / "h", ["reflink"], project)


def test_reflink_on_this_file_system(cache, project):
    # Whether or not the file system can clone, the result is a private writable copy.
    src = write(project / "f", b"clone me" * 1000)
    h = file_hash(src)
    cache.store_file(src, h)
    dest = project / "g"
    method = cache.link_out(h, dest, ["reflink", "copy"], project)
    assert method in ("reflink", "copy")
    assert dest.read_bytes() == b"clone me" * 1000
    assert os.stat(dest).st_ino != os.stat(cache.object_path(h)).st_ino
    assert mode(dest) == 0o644


def test_unknown_method_is_a_usage_error(cache, project):
    src = write(project / "f", b"x")
    h = file_hash(src)
    cache.store_file(src, h)
    with pytest.raises(UsageError):
        cache.link_out(h, project / "g", ["symlink"], project)
    with pytest.raises(UsageError):
        cache.link_out(h, project / "g", [], project)


def test_link_out_of_a_missing_object(cache, project):
    with pytest.raises(MissingObjectsError, match="missing; run 'pivotbuild pull'") as info:
        cache.link_out(H, project / "g", ["copy"], project)
    assert info.value.missing == [(str(project / "g"), H)]
    assert not (project / "g").exists()


def test_link_out_creates_parents(cache, project):
    src = write(project / "f", b"x")
    h = file_hash(src)
    cache.store_file(src, h)
    dest = project / "a" / "b" / "c.txt"
    cache.link_out(h, dest, ["copy"], project)
    assert dest.read_bytes() == b"x"


def test_link_out_over_a_directory_is_refused(cache, project):
    src = write(project / "f", b"x")
    h = file_hash(src)
    cache.store_file(src, h)
    (project / "d").mkdir()
    with pytest.raises(OperationError, match="is a directory"):
        cache.link_out(h, project / "d", ["copy"], project)


def test_store_refuses_a_file_that_changed_after_hashing(cache, project):
    src = write(project / "f", b"first version")
    h = file_hash(src)
    src.write_bytes(b"second version")
    with pytest.raises(OperationError, match="changed while it was being stored") as info:
        cache.store_file(src, h)
    assert str(src) in str(info.value)
    assert not cache.has(h)
    assert list(cache.iter_objects()) == []
    assert temps_in(cache.cache_dir) == []


def test_store_of_a_missing_file_names_it(cache, project):
    with pytest.raises(OperationError, match="gone.*No such file"):
        cache.store_file(project / "gone", H)
    assert list(cache.iter_objects()) == []


def test_store_refuses_a_non_regular_file(cache, project):
    (project / "d").mkdir()
    with pytest.raises(OperationError, match="not a regular file"):
        cache.store_file(project / "d", H)


def test_store_files_in_parallel_batch(tmp_path, project):
    # More files than are fsynced one by one: the one-syncfs path is taken.
    cache = Cache(tmp_path / "cache", jobs=4)
    items = []
    for i in range(cachemod._FSYNC_EACH_MAX + 20):
        src = write(project / f"f{i}", f"file {i % 40}".encode())
        items.append((src, file_hash(src)))
    assert cache.store_files(items) == 40
    for src, h in items:
        assert cache.object_path(h).read_bytes() == src.read_bytes()
    assert temps_in(cache.cache_dir) == []


def test_not_durable_mode_stores_the_same(tmp_path, project):
    cache = Cache(tmp_path / "cache", durable=False)
    src = write(project / "f", b"x")
    h = file_hash(src)
    cache.store_file(src, h)
    assert cache.verify(h)


def test_concurrent_store_from_threads(tmp_path, project):
    src = write(project / "f", os.urandom(300_000))
    h = file_hash(src)
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def store():
        try:
            barrier.wait()
            Cache(tmp_path / "shared").store_file(src, h)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=store) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    shared = Cache(tmp_path / "shared")
    assert list(shared.iter_objects()) == [h]
    assert shared.verify(h) and temps_in(shared.cache_dir) == []


def _store_in_process(cache_dir: str, src: str, h: str, start: multiprocessing.Event) -> None:
    start.wait()
    Cache(Path(cache_dir)).store_file(Path(src), h)


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
    shared = Cache(tmp_path / "shared")
    assert list(shared.iter_objects()) == [h]
    assert shared.verify(h) and temps_in(shared.cache_dir) == []


# ---- symlinks and escapes ------------------------------------------------------------------


def test_dest_symlink_to_outside_is_replaced_not_written_through(tmp_path, cache, project):
    outside = write(tmp_path / "outside" / "victim.txt", b"precious")
    src = write(project / "f", b"restored")
    h = file_hash(src)
    cache.store_file(src, h)
    dest = project / "out.txt"
    dest.symlink_to(outside)
    for methods in (["copy"], ["hardlink"]):
        if dest.exists() and not dest.is_symlink():
            dest.unlink()
            dest.symlink_to(outside)
        cache.link_out(h, dest, methods, project)
        assert not dest.is_symlink() and dest.read_bytes() == b"restored"
        assert outside.read_bytes() == b"precious" and mode(outside) == 0o644


def test_dest_parent_resolving_outside_is_refused(tmp_path, cache, project):
    outside = tmp_path / "outside"
    outside.mkdir()
    src = write(project / "f", b"x")
    h = file_hash(src)
    cache.store_file(src, h)
    (project / "link").symlink_to(outside, target_is_directory=True)
    for dest in (project / "link" / "f", project / "link" / "new" / "f",
                 project / ".." / "outside" / "f", tmp_path / "elsewhere"):
        with pytest.raises(OperationError, match="refusing to write outside the project"):
            cache.link_out(h, dest, ["copy"], project)
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "elsewhere").exists()


# ---- directories ---------------------------------------------------------------------------


def test_store_dir_and_checkout_round_trip(cache, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    added = cache.store_dir(d, digest)
    # 4 distinct contents among 5 files, plus the .dir object
    assert added == 5
    dir_obj = cache.object_path(digest.hash)
    assert dir_obj.read_bytes() == digest.manifest and mode(dir_obj) == 0o444
    for entry in manifest.parse(digest.manifest):
        assert cache.has(entry.hash)
    assert cache.verify(digest.hash)
    assert cache.store_dir(d, digest) == 0

    for methods in (["copy"], ["hardlink"], ["reflink", "hardlink", "copy"]):
        shutil.rmtree(d)
        restored = cache.checkout_dir(digest.hash, d, methods, project)
        assert sorted(restored) == sorted(e.path for e in manifest.parse(digest.manifest))
        assert tree_digest(d, project).hash == digest.hash
        assert os.access(d / "run.sh", os.X_OK) and mode(d / "run.sh") & 0o100
        assert not mode(d / "weights.bin") & 0o111
        assert temps_in(project) == []


def test_checkout_dir_hardlinks_share_inodes_copies_do_not(cache, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    cache.store_dir(d, digest)
    entries = {e.path: e for e in manifest.parse(digest.manifest)}
    cache.checkout_dir(digest.hash, d, ["hardlink"], project)
    obj = cache.object_path(entries["weights.bin"].hash)
    assert os.stat(d / "weights.bin").st_ino == os.stat(obj).st_ino
    cache.checkout_dir(digest.hash, d, ["copy"], project)
    assert os.stat(d / "weights.bin").st_ino != os.stat(obj).st_ino


def test_checkout_dir_of_many_files_links_the_new_ones_in_bulk(cache, project):
    # 100 files (above the bulk threshold): some missing from the workspace, one edited, one
    # replaced by a symlink out of the project, and an executable whose stored object was
    # made non-executable (a hardlink cannot carry the entry's bit: it must be copied).
    d = project / "many"
    for i in range(100):
        write(d / f"sub{i % 4}" / f"f{i:03d}", b"content %d\n" % i, executable=(i == 7))
    digest = tree_digest(d, project)
    cache.store_dir(d, digest)
    entries = {e.path: e for e in manifest.parse(digest.manifest)}
    tool_obj = cache.object_path(entries["sub3/f007"].hash)
    tool_obj.chmod(0o444)
    for i in range(0, 100, 3):
        (d / f"sub{i % 4}" / f"f{i:03d}").unlink()
    (d / "sub1" / "f001").chmod(0o644)
    (d / "sub1" / "f001").write_bytes(b"edited")
    outside = project.parent / "outside.txt"
    outside.write_bytes(b"not yours")
    (d / "sub2" / "f002").unlink()
    (d / "sub2" / "f002").symlink_to(outside)
    restored = cache.checkout_dir(digest.hash, d, ["hardlink", "copy"], project)
    assert sorted(restored) == sorted(entries)
    assert tree_digest(d, project).hash == digest.hash
    assert outside.read_bytes() == b"not yours" and not (d / "sub2" / "f002").is_symlink()
    for path, entry in entries.items():
        same = os.stat(d / path).st_ino == os.stat(cache.object_path(entry.hash)).st_ino
        assert same == (path != "sub3/f007"), path
    assert mode(d / "sub3" / "f007") & 0o100
    assert temps_in(project) == []


def test_checkout_dir_leaves_untracked_files_and_honours_only(cache, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    cache.store_dir(d, digest)
    write(d / "untracked.txt", b"mine")
    (d / "run.sh").unlink()
    assert cache.checkout_dir(digest.hash, d, ["copy"], project, only=["run.sh"]) == ["run.sh"]
    assert (d / "untracked.txt").read_bytes() == b"mine"
    assert (d / "run.sh").exists()


def test_dir_object_is_written_last(cache, project, monkeypatch):
    d = make_tree(project)
    digest = tree_digest(d, project)
    real_copy_in = Cache._copy_in

    def failing_copy_in(self, job, fsync):
        if job.src.endswith("weights.bin"):
            raise OperationError(f"{job.shown}: cannot store in the cache: simulated failure")
        return real_copy_in(self, job, fsync)

    monkeypatch.setattr(Cache, "_copy_in", failing_copy_in)
    with pytest.raises(OperationError, match="simulated failure"):
        cache.store_dir(d, digest)
    assert not cache.has(digest.hash)
    assert temps_in(cache.cache_dir) == []


def test_dir_member_changed_after_hashing_stores_no_dir_object(cache, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    (d / "sub" / "b.txt").write_bytes(b"changed")
    with pytest.raises(OperationError, match=r"sub/b\.txt: the file changed"):
        cache.store_dir(d, digest)
    assert not cache.has(digest.hash)


def test_store_dir_checks_the_manifest_against_its_hash(cache, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    digest.manifest = digest.manifest.replace(b"weights", b"weightz")
    with pytest.raises(OperationError, match="does not match its hash"):
        cache.store_dir(d, digest)
    assert list(cache.iter_objects()) == []


def test_checkout_dir_with_missing_objects_restores_the_rest(cache, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    cache.store_dir(d, digest)
    entries = {e.path: e for e in manifest.parse(digest.manifest)}
    cache.remove(entries["weights.bin"].hash)
    shutil.rmtree(d)
    with pytest.raises(MissingObjectsError, match="weights.bin.*run 'pivotbuild pull'") as info:
        cache.checkout_dir(digest.hash, d, ["copy"], project)
    assert info.value.missing == [(str(d / "weights.bin"), entries["weights.bin"].hash)]
    assert (d / "run.sh").exists() and not (d / "weights.bin").exists()
    assert "run.sh" in info.value.restored


def test_checkout_dir_with_missing_dir_object(cache, project):
    with pytest.raises(MissingObjectsError, match="pull"):
        cache.checkout_dir(H + ".dir", project / "d", ["copy"], project)
    assert not (project / "d").exists()


def _plant_dir_object(cache: Cache, data: bytes) -> str:
    h = hashing.get_backend().hash_bytes(data) + ".dir"
    obj = cache.object_path(h)
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(data)
    return h


@pytest.mark.parametrize("evil", [b"../escaped", b"/tmp/abs-escape", b"a/../../escaped",
                                  b"./a", b"a//b"])
def test_malicious_manifest_is_refused(tmp_path, cache, project, evil):
    payload = write(project / "payload", b"evil")
    ph = file_hash(payload)
    cache.store_file(payload, ph)
    data = manifest.HEADER + ph.encode() + b" - 4 " + evil + b"\n"
    h = _plant_dir_object(cache, data)
    dest = project / "out"
    with pytest.raises(OperationError, match="invalid directory manifest"):
        cache.checkout_dir(h, dest, ["copy"], project)
    assert not (tmp_path / "escaped").exists() and not (project / "escaped").exists()
    assert not Path("/tmp/abs-escape").exists()
    assert not dest.exists()


def test_corrupt_dir_object_is_refused(cache, project):
    h = _plant_dir_object(cache, manifest.HEADER)
    cache.object_path(h).chmod(0o644)
    cache.object_path(h).write_bytes(manifest.HEADER + b"junk\n")
    with pytest.raises(OperationError, match="corrupt"):
        cache.checkout_dir(h, project / "out", ["copy"], project)
    assert not cache.verify(h)


def test_checkout_dir_replaces_a_dest_symlink_to_outside(tmp_path, cache, project):
    outside = tmp_path / "outside"
    write(outside / "weights.bin", b"precious")
    d = make_tree(project)
    digest = tree_digest(d, project)
    cache.store_dir(d, digest)
    shutil.rmtree(d)
    d.symlink_to(outside, target_is_directory=True)
    cache.checkout_dir(digest.hash, d, ["copy"], project)
    assert not d.is_symlink() and d.is_dir()
    assert (outside / "weights.bin").read_bytes() == b"precious"
    assert sorted(p.name for p in outside.iterdir()) == ["weights.bin"]
    assert tree_digest(d, project).hash == digest.hash


def test_checkout_dir_refuses_a_subdir_symlink_to_outside(tmp_path, cache, project):
    outside = tmp_path / "outside"
    outside.mkdir()
    d = make_tree(project)
    digest = tree_digest(d, project)
    cache.store_dir(d, digest)
    shutil.rmtree(d / "sub")
    (d / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OperationError, match="refusing to restore through it"):
        cache.checkout_dir(digest.hash, d, ["copy"], project)
    assert list(outside.iterdir()) == []


def test_checkout_dir_over_a_file_is_refused(cache, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    cache.store_dir(d, digest)
    shutil.rmtree(d)
    d.write_bytes(b"a file now")
    with pytest.raises(OperationError, match="cannot create the directory"):
        cache.checkout_dir(digest.hash, d, ["copy"], project)
    assert d.read_bytes() == b"a file now"


def test_checkout_of_a_large_dir_in_parallel(tmp_path, project):
    cache = Cache(tmp_path / "cache", jobs=4)
    d = project / "many"
    for i in range(cachemod._PARALLEL_MIN + 30):
        write(d / f"g{i % 7}" / f"f{i}", f"content {i}".encode(), executable=i % 5 == 0)
    digest = tree_digest(d, project)
    cache.store_dir(d, digest)
    shutil.rmtree(d)
    assert len(cache.checkout_dir(digest.hash, d, ["hardlink", "copy"], project)) == digest.nfiles
    assert tree_digest(d, project).hash == digest.hash


# ---- verify, listing, removal --------------------------------------------------------------


def test_verify_detects_corruption(cache, project):
    src = write(project / "f", b"good")
    h = file_hash(src)
    cache.store_file(src, h)
    obj = cache.object_path(h)
    assert cache.verify(h)
    obj.chmod(0o644)
    obj.write_bytes(b"bad!")
    assert not cache.verify(h)
    assert not cache.verify(H)


def test_iter_objects_and_remove(cache, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    cache.store_dir(d, digest)
    shard = cache.object_path(digest.hash).parent
    (shard / ".leftover.abc.tmp").write_bytes(b"partial")
    (cache.files_dir / "not-a-shard").mkdir()
    objects = list(cache.iter_objects())
    expected = {e.hash for e in manifest.parse(digest.manifest)} | {digest.hash}
    assert objects == sorted(objects) and set(objects) == expected
    assert cache.remove(digest.hash) is True
    assert cache.remove(digest.hash) is False
    assert digest.hash not in set(cache.iter_objects())


def test_remove_stale_temps(cache, project):
    src = write(project / "f", b"x")
    h = file_hash(src)
    cache.store_file(src, h)
    stale = cache.object_path(h).parent / ".old.abc.tmp"
    stale.write_bytes(b"partial")
    os.utime(stale, (1, 1))
    fresh = cache.object_path(h).parent / ".new.abc.tmp"
    fresh.write_bytes(b"partial")
    assert cache.remove_stale_temps() == 1
    assert not stale.exists() and fresh.exists() and cache.has(h)


# ---- run cache -----------------------------------------------------------------------------

D = "fedcba9876543210fedcba9876543210"


def test_run_cache_round_trip(cache):
    outs = [
        {"path": "model", "hash": D + ".dir", "size": 10, "nfiles": 2, "cache": True,
         "persist": True},
        LockedOut("metrics.json", H, 5, cache=False),
    ]
    assert cache.put_run(H, outs) is True
    path = cache.run_path(H)
    before = path.stat()
    assert cache.put_run(H, list(reversed(outs))) is False  # same bytes: untouched
    assert path.stat().st_ino == before.st_ino
    got = cache.get_run(H)
    assert got == {
        "input_hash": H, "schema": 1,
        "outs": [
            {"cache": False, "hash": H, "path": "metrics.json", "size": 5},
            {"cache": True, "hash": D + ".dir", "nfiles": 2, "path": "model", "size": 10},
        ],
    }
    assert path.read_text().endswith("}\n")
    assert list(cache.iter_runs()) == [H]
    assert cache.remove_run(H) is True and cache.get_run(H) is None
    assert cache.remove_run(H) is False


def test_put_run_refuses_bad_outs(cache):
    for bad in ({"path": "../x", "hash": H, "size": 1}, {"path": "a", "hash": None, "size": 1},
                {"path": "a", "hash": D + ".dir", "size": 1}):
        with pytest.raises(OperationError, match="refusing to record"):
            cache.put_run(H, [bad])
    assert cache.get_run(H) is None


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"[]", b'{"input_hash": "%s", "outs": [], "schema": 2}' % H.encode(),
     b'{"input_hash": "%s", "outs": [], "schema": 1}' % D.encode(),
     b'{"input_hash": "%s", "outs": [{"path": "/abs", "hash": "%s", "size": 1, "cache": true}],'
     b' "schema": 1}' % (H.encode(), H.encode()),
     b'{"input_hash": "%s", "outs": [{"path": "a", "hash": null, "size": 1, "cache": true}],'
     b' "schema": 1}' % H.encode(),
     b"\xff\xfe"],
)
def test_corrupt_run_entries_are_absent(cache, content):
    path = cache.run_path(H)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert cache.get_run(H) is None


def test_get_run_of_an_invalid_hash_is_none(cache):
    assert cache.get_run("../../etc/passwd") is None


# ---- links never enter the cache (SPEC §8) ------------------------------------------------


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_store_of_a_symlink_copies_its_target(cache, project, relative):
    src = write(project / "src.txt", b"linked bytes")
    src.chmod(0o640)
    link = project / "out"
    link.symlink_to("src.txt" if relative else src)
    h = file_hash(src)
    cache.store_file(link, h, link=True)
    obj = cache.object_path(h)
    assert stat.S_ISREG(os.lstat(obj).st_mode) and obj.read_bytes() == b"linked bytes"
    assert mode(obj) == 0o444 and mode(src) == 0o640
    assert os.stat(obj).st_ino != os.stat(src).st_ino
    assert link.is_symlink()


def test_store_of_a_file_another_name_shares_copies_it(cache, project):
    src = write(project / "src.txt", b"shared inode")
    out = project / "out"
    os.link(src, out)
    h = file_hash(out)
    cache.store_file(out, h, link=True)
    obj = cache.object_path(h)
    assert os.stat(obj).st_ino != os.stat(src).st_ino and os.stat(src).st_nlink == 2
    assert mode(src) == 0o644
    with open(src, "ab") as f:  # an edit of the source never reaches the object
        f.write(b" edited")
    assert cache.verify(h)


def test_store_of_a_sole_file_still_links_it(cache, project):
    src = write(project / "alone", b"one name")
    h = file_hash(src)
    cache.store_file(src, h, link=True)
    obj = cache.object_path(h)
    if os.stat(obj).st_ino != os.stat(src).st_ino:
        pytest.skip("this file system reflinks or refuses hardlinks into the cache")
    assert mode(src) == 0o444


def test_store_dir_copies_its_links(cache, project):
    src = write(project / "src.txt", b"shared")
    d = project / "d"
    write(d / "own", b"own bytes")
    (d / "sym").symlink_to("../src.txt")
    os.link(src, d / "hard")
    digest = tree_digest(d, project)
    cache.store_dir(d, digest, link=True)
    for e in manifest.parse(digest.manifest):
        obj = cache.object_path(e.hash)
        assert stat.S_ISREG(os.lstat(obj).st_mode)
    assert os.stat(src).st_nlink == 2 and mode(src) == 0o644
    src_obj = cache.object_path(file_hash(src))
    assert os.stat(src_obj).st_ino != os.stat(src).st_ino
    assert (d / "sym").is_symlink()


@pytest.mark.parametrize("link", [False, True])
def test_store_failure_names_the_output_then_the_cache(cache, project, monkeypatch, link):
    src = write(project / "f", b"x")
    h = file_hash(src)

    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(os, "makedirs", refuse)
    with pytest.raises(OperationError, match=r"^out/f: cannot store in the cache: "
                       r"Permission denied \(.*files/\w\w\)$"):
        cache.store_file(src, h, link=link, shown="out/f")
    with pytest.raises(OperationError, match=r"^out/f: cannot store in the cache: "):
        cache.store_file(project / "missing", h, shown="out/f")


# ---- corrupt objects are never placed -------------------------------------------------------


def corrupt(path: Path, data: bytes = b"evil") -> None:
    path.chmod(0o644)
    with open(path, "r+b") as f:  # in place: the inode stays, as through a hardlink
        f.write(data)
        f.truncate()


def age(path: Path, seconds: float = 60) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


class DictMemo:
    """A stand-in for the state database's file memo."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[int, int, int, str]] = {}

    def get_files(self, paths):
        return {p: self.rows[p] for p in paths if p in self.rows}

    def put_files(self, rows):
        for path, size, mtime, ino, digest in rows:
            self.rows[path] = (size, mtime, ino, digest)


def test_link_out_of_a_corrupt_object_removes_it_and_places_nothing(cache, project):
    src = write(project / "f", b"good bytes")
    h = file_hash(src)
    cache.store_file(src, h)
    corrupt(cache.object_path(h))
    dest = project / "restored"
    with pytest.raises(cachemod.CorruptObjectsError, match="out/f: cache object .* is corrupt"
                       ) as info:
        cache.link_out(h, dest, ["hardlink", "copy"], project, shown="out/f")
    assert info.value.corrupt == [("out/f", h)]
    assert not dest.exists() and not cache.has(h)


def test_checkout_dir_with_a_corrupt_member_restores_the_rest(cache, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    cache.store_dir(d, digest)
    entries = {e.path: e for e in manifest.parse(digest.manifest)}
    bad = entries["weights.bin"].hash
    corrupt(cache.object_path(bad))
    shutil.rmtree(d)
    with pytest.raises(cachemod.CorruptObjectsError, match="model/weights.bin") as info:
        cache.checkout_dir(digest.hash, d, ["copy"], project, shown="model")
    assert info.value.corrupt == [("model/weights.bin", bad)]
    assert not (d / "weights.bin").exists()
    assert (d / "run.sh").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert "run.sh" in info.value.restored
    # The object is gone, and the .dir object with it (it no longer has all its files).
    assert not cache.has(bad) and not cache.has(digest.hash)


def test_store_replaces_a_corrupt_object(cache, project):
    src = write(project / "f", b"good bytes")
    h = file_hash(src)
    cache.store_file(src, h)
    corrupt(cache.object_path(h))
    existing: list[str] = []
    cache.store_file(src, h, existing=existing)
    assert existing == [] and cache.verify(h)


def test_check_output_of_a_directory(cache, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    cache.store_dir(d, digest)
    assert cache.check_output(digest.hash, "model") == []
    bad = {e.path: e.hash for e in manifest.parse(digest.manifest)}["sub/b.txt"]
    corrupt(cache.object_path(bad))
    found = cache.check_output(digest.hash, "model", remove=False)
    assert found and found[0][1] == bad and cache.has(bad) and cache.has(digest.hash)
    assert cache.check_output(digest.hash, "model")[0][1] == bad
    assert not cache.has(bad) and not cache.has(digest.hash)


def test_the_memo_spares_unchanged_objects_but_not_edited_ones(tmp_path, project, monkeypatch):
    memo = DictMemo()
    cache = Cache(tmp_path / "cache", memo=memo)
    src = write(project / "f", b"good bytes")
    h = file_hash(src)
    cache.store_file(src, h)
    obj = cache.object_path(h)
    age(obj)  # out of the racy window: its signature may be trusted
    assert cache.check_output(h, "f") == [] and str(obj) in memo.rows

    backend = hashing.get_backend()
    calls: list[list[str]] = []
    real = backend.hash_files

    def counting(paths, jobs=0):
        calls.append(list(paths))
        return real(paths, jobs)

    monkeypatch.setattr(backend, "hash_files", counting)
    fresh = Cache(tmp_path / "cache", memo=memo)  # another process, the same memo
    fresh.link_out(h, project / "a", ["copy"], project)
    assert calls == []  # not read again
    # Edited in place (same inode), its mtime put back: the size still gives it away.
    st = os.stat(obj)
    corrupt(obj, b"good bytes, and more")
    os.utime(obj, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(obj).st_ino == st.st_ino
    with pytest.raises(cachemod.CorruptObjectsError):
        Cache(tmp_path / "cache", memo=memo).link_out(h, project / "b", ["copy"], project)
    assert calls and not (project / "b").exists()


def test_a_fresh_object_is_not_trusted_by_the_memo(tmp_path, project):
    memo = DictMemo()
    cache = Cache(tmp_path / "cache", memo=memo)
    src = write(project / "f", b"new")
    h = file_hash(src)
    cache.store_file(src, h)
    assert cache.check_output(h, "f") == []
    assert memo.rows == {}  # written just now: inside the racy window
    corrupt(cache.object_path(h), b"neW")  # same size, and perhaps the same mtime
    assert cache.check_output(h, "f") == [("f", h)]


def test_objects_this_process_stored_are_placed_without_reading_them_again(
        tmp_path, project, monkeypatch):
    cache = Cache(tmp_path / "cache", memo=DictMemo())
    d = make_tree(project)
    digest = tree_digest(d, project)
    cache.store_dir(d, digest)
    single = write(project / "single", b"single file")
    single_hash = file_hash(single)
    cache.store_file(single, single_hash, link=True)
    backend = hashing.get_backend()
    calls: list[list[str]] = []
    real = backend.hash_files

    def counting(paths, jobs=0):
        calls.append(list(paths))
        return real(paths, jobs)

    monkeypatch.setattr(backend, "hash_files", counting)
    shutil.rmtree(d)
    cache.checkout_dir(digest.hash, d, ["copy"], project)
    cache.link_out(single_hash, project / "again", ["copy"], project)
    assert calls == []
    # Edited in place since (through the workspace file that is the object): found out all
    # the same, by its size (within one timestamp tick its mtime may not have moved).
    corrupt(cache.object_path(single_hash), b"single file, edited")
    with pytest.raises(cachemod.CorruptObjectsError):
        cache.link_out(single_hash, project / "third", ["copy"], project)
    assert calls
