"""store/place.py: putting objects into the workspace (methods, symlinks, directories, corrupt
and missing objects, and the overwrite rules of Placer.restore), on real files."""

# ruff: noqa: F811 - the fixtures imported from tests.storekit are parameters here

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from pivotbuild import hashing, manifest
from pivotbuild.errors import OperationError, UsageError
from pivotbuild.hasher import PathDigest
from pivotbuild.store import fileio
from pivotbuild.store.objects import (
    PARALLEL_MIN,
    CorruptObjectsError,
    MissingObjectsError,
    ObjectStore,
)
from pivotbuild.store.place import Placer
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


def test_hardlink_shares_the_read_only_inode(objects, placer, project):
    src = write(project / "big.bin", os.urandom(100_000))
    h = file_hash(src)
    objects.store_file(src, h)
    src.unlink()
    assert placer.link_file(h, src, ["hardlink", "copy"]) == "hardlink"
    assert os.stat(src).st_ino == os.stat(objects.object_path(h)).st_ino
    assert mode(src) == 0o444
    # Linking again over the same inode changes nothing and leaves no temp behind.
    assert placer.link_file(h, src, ["hardlink"]) == "hardlink"
    assert temps_in(project) == []
    # A copy replaces the shared inode with a private, writable one.
    assert placer.link_file(h, src, ["copy"]) == "copy"
    assert os.stat(src).st_ino != os.stat(objects.object_path(h)).st_ino
    assert mode(objects.object_path(h)) == 0o444


def test_hardlink_not_used_when_exec_bit_differs(objects, placer, project):
    src = write(project / "plain", b"same bytes")
    h = file_hash(src)
    objects.store_file(src, h)
    dest = project / "wanted-exec"
    assert placer.link_file(h, dest, ["hardlink", "copy"], executable=True) == "copy"
    assert mode(dest) == 0o755
    with pytest.raises(OperationError, match="exec bit"):
        placer.link_file(h, project / "x", ["hardlink"], executable=True)


def test_hardlink_falls_back_on_exdev(objects, placer, project, monkeypatch):
    src = write(project / "f", b"content")
    h = file_hash(src)
    objects.store_file(src, h)

    def cross_device(*args, **kwargs):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "link", cross_device)
    dest = project / "out" / "f"
    assert placer.link_file(h, dest, ["hardlink", "copy"]) == "copy"
    assert dest.read_bytes() == b"content"
    with pytest.raises(OperationError, match="cannot restore from the cache with hardlink"):
        placer.link_file(h, project / "g", ["hardlink"])
    assert not (project / "g").exists() and temps_in(project) == []


@pytest.mark.parametrize("code", [errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP])
def test_hardlink_falls_back_on_other_refusals(objects, placer, project, monkeypatch, code):
    src = write(project / "f", b"content")
    h = file_hash(src)
    objects.store_file(src, h)

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "link", refuse)
    assert placer.link_file(h, project / "g", ["hardlink", "copy"]) == "copy"


def test_reflink_falls_back_when_unsupported(objects, placer, project, monkeypatch):
    src = write(project / "f", b"content")
    h = file_hash(src)
    objects.store_file(src, h)

    def no_clone(fd, request, arg=0):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(fileio.fcntl, "ioctl", no_clone)
    dest = project / "g"
    assert placer.link_file(h, dest, ["reflink", "hardlink", "copy"]) == "hardlink"
    dest.unlink()
    assert placer.link_file(h, dest, ["reflink", "copy"]) == "copy"
    with pytest.raises(OperationError, match="reflink"):
        placer.link_file(h, project / "h", ["reflink"])


def test_reflink_on_this_file_system(objects, placer, project):
    # Whether or not the file system can clone, the result is a private writable copy.
    src = write(project / "f", b"clone me" * 1000)
    h = file_hash(src)
    objects.store_file(src, h)
    dest = project / "g"
    method = placer.link_file(h, dest, ["reflink", "copy"])
    assert method in ("reflink", "copy")
    assert dest.read_bytes() == b"clone me" * 1000
    assert os.stat(dest).st_ino != os.stat(objects.object_path(h)).st_ino
    assert mode(dest) == 0o644


def test_unknown_method_is_a_usage_error(objects, placer, project):
    src = write(project / "f", b"x")
    h = file_hash(src)
    objects.store_file(src, h)
    with pytest.raises(UsageError):
        placer.link_file(h, project / "g", ["symlink"])
    with pytest.raises(UsageError):
        placer.link_file(h, project / "g", [])


def test_link_out_of_a_missing_object(objects, placer, project):
    with pytest.raises(MissingObjectsError, match="missing; run 'pivotbuild pull'") as info:
        placer.link_file(H, project / "g", ["copy"])
    assert info.value.missing == [(str(project / "g"), H)]
    assert not (project / "g").exists()


def test_link_out_creates_parents(objects, placer, project):
    src = write(project / "f", b"x")
    h = file_hash(src)
    objects.store_file(src, h)
    dest = project / "a" / "b" / "c.txt"
    placer.link_file(h, dest, ["copy"])
    assert dest.read_bytes() == b"x"


def test_link_out_over_a_directory_is_refused(objects, placer, project):
    src = write(project / "f", b"x")
    h = file_hash(src)
    objects.store_file(src, h)
    (project / "d").mkdir()
    with pytest.raises(OperationError, match="is a directory"):
        placer.link_file(h, project / "d", ["copy"])


def test_dest_symlink_to_outside_is_replaced_not_written_through(tmp_path, objects, placer,
                                                                project):
    outside = write(tmp_path / "outside" / "victim.txt", b"precious")
    src = write(project / "f", b"restored")
    h = file_hash(src)
    objects.store_file(src, h)
    dest = project / "out.txt"
    dest.symlink_to(outside)
    for methods in (["copy"], ["hardlink"]):
        if dest.exists() and not dest.is_symlink():
            dest.unlink()
            dest.symlink_to(outside)
        placer.link_file(h, dest, methods)
        assert not dest.is_symlink() and dest.read_bytes() == b"restored"
        assert outside.read_bytes() == b"precious" and mode(outside) == 0o644


def test_dest_parent_resolving_outside_is_refused(tmp_path, objects, placer, project):
    outside = tmp_path / "outside"
    outside.mkdir()
    src = write(project / "f", b"x")
    h = file_hash(src)
    objects.store_file(src, h)
    (project / "link").symlink_to(outside, target_is_directory=True)
    for dest in (project / "link" / "f", project / "link" / "new" / "f",
                 project / ".." / "outside" / "f", tmp_path / "elsewhere"):
        with pytest.raises(OperationError, match="refusing to write outside the project"):
            placer.link_file(h, dest, ["copy"])
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "elsewhere").exists()


def test_checkout_dir_hardlinks_share_inodes_copies_do_not(objects, placer, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    objects.store_dir(d, digest)
    entries = {e.path: e for e in manifest.parse(digest.manifest)}
    placer.place_dir(digest.hash, d, ["hardlink"])
    obj = objects.object_path(entries["weights.bin"].hash)
    assert os.stat(d / "weights.bin").st_ino == os.stat(obj).st_ino
    placer.place_dir(digest.hash, d, ["copy"])
    assert os.stat(d / "weights.bin").st_ino != os.stat(obj).st_ino


def test_checkout_dir_of_many_files_links_the_new_ones_in_bulk(objects, placer, project):
    # 100 files (above the bulk threshold): some missing from the workspace, one edited, one
    # replaced by a symlink out of the project, and an executable whose stored object was
    # made non-executable (a hardlink cannot carry the entry's bit: it must be copied).
    d = project / "many"
    for i in range(100):
        write(d / f"sub{i % 4}" / f"f{i:03d}", b"content %d\n" % i, executable=(i == 7))
    digest = tree_digest(d, project)
    objects.store_dir(d, digest)
    entries = {e.path: e for e in manifest.parse(digest.manifest)}
    tool_obj = objects.object_path(entries["sub3/f007"].hash)
    tool_obj.chmod(0o444)
    for i in range(0, 100, 3):
        (d / f"sub{i % 4}" / f"f{i:03d}").unlink()
    (d / "sub1" / "f001").chmod(0o644)
    (d / "sub1" / "f001").write_bytes(b"edited")
    outside = project.parent / "outside.txt"
    outside.write_bytes(b"not yours")
    (d / "sub2" / "f002").unlink()
    (d / "sub2" / "f002").symlink_to(outside)
    restored = placer.place_dir(digest.hash, d, ["hardlink", "copy"])
    assert sorted(restored) == sorted(entries)
    assert tree_digest(d, project).hash == digest.hash
    assert outside.read_bytes() == b"not yours" and not (d / "sub2" / "f002").is_symlink()
    for path, entry in entries.items():
        same = os.stat(d / path).st_ino == os.stat(objects.object_path(entry.hash)).st_ino
        assert same == (path != "sub3/f007"), path
    assert mode(d / "sub3" / "f007") & 0o100
    assert temps_in(project) == []


def test_checkout_dir_leaves_untracked_files_and_honours_only(objects, placer, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    objects.store_dir(d, digest)
    write(d / "untracked.txt", b"mine")
    (d / "run.sh").unlink()
    assert placer.place_dir(digest.hash, d, ["copy"], only=["run.sh"]) == ["run.sh"]
    assert (d / "untracked.txt").read_bytes() == b"mine"
    assert (d / "run.sh").exists()


def test_checkout_dir_with_missing_objects_restores_the_rest(objects, placer, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    objects.store_dir(d, digest)
    entries = {e.path: e for e in manifest.parse(digest.manifest)}
    objects.remove(entries["weights.bin"].hash)
    shutil.rmtree(d)
    with pytest.raises(MissingObjectsError, match="weights.bin.*run 'pivotbuild pull'") as info:
        placer.place_dir(digest.hash, d, ["copy"])
    assert info.value.missing == [(str(d / "weights.bin"), entries["weights.bin"].hash)]
    assert (d / "run.sh").exists() and not (d / "weights.bin").exists()
    assert "run.sh" in info.value.restored


def test_checkout_dir_with_missing_dir_object(objects, placer, project):
    with pytest.raises(MissingObjectsError, match="pull"):
        placer.place_dir(H + ".dir", project / "d", ["copy"])
    assert not (project / "d").exists()


def _plant_dir_object(objects: ObjectStore, data: bytes) -> str:
    h = hashing.get_backend().hash_bytes(data) + ".dir"
    obj = objects.object_path(h)
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(data)
    return h


@pytest.mark.parametrize("evil", [b"../escaped", b"/tmp/abs-escape", b"a/../../escaped",
                                  b"./a", b"a//b"])
def test_malicious_manifest_is_refused(tmp_path, objects, placer, project, evil):
    payload = write(project / "payload", b"evil")
    ph = file_hash(payload)
    objects.store_file(payload, ph)
    data = manifest.HEADER + ph.encode() + b" - 4 " + evil + b"\n"
    h = _plant_dir_object(objects, data)
    dest = project / "out"
    with pytest.raises(OperationError, match="invalid directory manifest"):
        placer.place_dir(h, dest, ["copy"])
    assert not (tmp_path / "escaped").exists() and not (project / "escaped").exists()
    assert not Path("/tmp/abs-escape").exists()
    assert not dest.exists()


def test_corrupt_dir_object_is_refused(objects, placer, project):
    h = _plant_dir_object(objects, manifest.HEADER)
    objects.object_path(h).chmod(0o644)
    objects.object_path(h).write_bytes(manifest.HEADER + b"junk\n")
    with pytest.raises(OperationError, match="corrupt"):
        placer.place_dir(h, project / "out", ["copy"])
    assert not objects.verify(h)


def test_checkout_dir_replaces_a_dest_symlink_to_outside(tmp_path, objects, placer, project):
    outside = tmp_path / "outside"
    write(outside / "weights.bin", b"precious")
    d = make_tree(project)
    digest = tree_digest(d, project)
    objects.store_dir(d, digest)
    shutil.rmtree(d)
    d.symlink_to(outside, target_is_directory=True)
    placer.place_dir(digest.hash, d, ["copy"])
    assert not d.is_symlink() and d.is_dir()
    assert (outside / "weights.bin").read_bytes() == b"precious"
    assert sorted(p.name for p in outside.iterdir()) == ["weights.bin"]
    assert tree_digest(d, project).hash == digest.hash


def test_checkout_dir_refuses_a_subdir_symlink_to_outside(tmp_path, objects, placer, project):
    outside = tmp_path / "outside"
    outside.mkdir()
    d = make_tree(project)
    digest = tree_digest(d, project)
    objects.store_dir(d, digest)
    shutil.rmtree(d / "sub")
    (d / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OperationError, match="refusing to restore through it"):
        placer.place_dir(digest.hash, d, ["copy"])
    assert list(outside.iterdir()) == []


def test_checkout_dir_over_a_file_is_refused(objects, placer, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    objects.store_dir(d, digest)
    shutil.rmtree(d)
    d.write_bytes(b"a file now")
    with pytest.raises(OperationError, match="cannot create the directory"):
        placer.place_dir(digest.hash, d, ["copy"])
    assert d.read_bytes() == b"a file now"


def test_checkout_of_a_large_dir_in_parallel(tmp_path, project):
    objects = ObjectStore(tmp_path / "cache" / "files", jobs=4)
    d = project / "many"
    for i in range(PARALLEL_MIN + 30):
        write(d / f"g{i % 7}" / f"f{i}", f"content {i}".encode(), executable=i % 5 == 0)
    digest = tree_digest(d, project)
    objects.store_dir(d, digest)
    shutil.rmtree(d)
    placer = Placer(objects, project)
    assert len(placer.place_dir(digest.hash, d, ["hardlink", "copy"])) == digest.nfiles
    assert tree_digest(d, project).hash == digest.hash


def test_link_out_of_a_corrupt_object_removes_it_and_places_nothing(objects, placer, project):
    src = write(project / "f", b"good bytes")
    h = file_hash(src)
    objects.store_file(src, h)
    corrupt(objects.object_path(h))
    dest = project / "restored"
    with pytest.raises(CorruptObjectsError, match="out/f: cache object .* is corrupt"
                       ) as info:
        placer.link_file(h, dest, ["hardlink", "copy"], shown="out/f")
    assert info.value.corrupt == [("out/f", h)]
    assert not dest.exists() and not objects.has(h)


def test_checkout_dir_with_a_corrupt_member_restores_the_rest(objects, placer, project):
    d = make_tree(project)
    digest = tree_digest(d, project)
    objects.store_dir(d, digest)
    entries = {e.path: e for e in manifest.parse(digest.manifest)}
    bad = entries["weights.bin"].hash
    corrupt(objects.object_path(bad))
    shutil.rmtree(d)
    with pytest.raises(CorruptObjectsError, match="model/weights.bin") as info:
        placer.place_dir(digest.hash, d, ["copy"], shown="model")
    assert info.value.corrupt == [("model/weights.bin", bad)]
    assert not (d / "weights.bin").exists()
    assert (d / "run.sh").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert "run.sh" in info.value.restored
    # The object is gone, and the .dir object with it (it no longer has all its files).
    assert not objects.has(bad) and not objects.has(digest.hash)


# ---- Placer.restore: the one set of rules -------------------------------------------------


def now(path: Path) -> PathDigest:
    """What is at ``path``, as the hasher would say (PathDigest is what callers pass)."""
    if not os.path.lexists(path):
        return PathDigest(str(path), missing=True)
    if path.is_dir() and not path.is_symlink():
        tree = hashing.get_backend().hash_tree(str(path), str(path.parent))
        return PathDigest(str(path), tree.hash, tree.size, tree.nfiles, tree.manifest)
    got = hashing.get_backend().hash_files([str(path)])[0]
    return PathDigest(str(path), got.hash, got.size)


@pytest.fixture
def stored(objects: ObjectStore, project: Path) -> tuple[str, str]:
    """A file output "out.txt" and a directory output "model", stored; their hashes."""
    file_digest = file_hash(write(project / "out.txt", b"cached\n"))
    objects.store_file(project / "out.txt", file_digest)
    tree = tree_digest(make_tree(project), project)
    objects.store_dir(project / "model", tree)
    assert tree.hash is not None
    return file_digest, tree.hash


def test_restore_leaves_an_output_already_in_place(placer, project, stored):
    file_digest, dir_digest = stored
    ino = os.stat(project / "out.txt").st_ino
    for path, digest in (("out.txt", file_digest), ("model", dir_digest)):
        done = placer.restore(digest, path, now(project / path), ["copy"], overwrite=False)
        assert (done.placed, done.conflicts) == (False, [])
    assert os.stat(project / "out.txt").st_ino == ino
    # relink: placed again all the same (here as hardlinks to the objects)
    done = placer.restore(file_digest, "out.txt", now(project / "out.txt"), ["hardlink"],
                          overwrite=False, relink=True)
    assert done.placed and os.stat(project / "out.txt").st_nlink == 2


def test_restore_puts_back_what_is_missing(placer, project, stored):
    file_digest, dir_digest = stored
    (project / "out.txt").unlink()
    shutil.rmtree(project / "model")
    for path, digest in (("out.txt", file_digest), ("model", dir_digest)):
        done = placer.restore(digest, path, now(project / path), ["copy"], overwrite=False)
        assert done.placed and not done.conflicts
    assert (project / "out.txt").read_bytes() == b"cached\n"
    assert now(project / "model").hash == dir_digest


def test_without_overwrite_whatever_is_in_the_way_is_a_conflict(placer, project, stored):
    file_digest, dir_digest = stored
    (project / "out.txt").write_bytes(b"edited\n")
    (project / "model" / "run.sh").write_bytes(b"edited\n")
    write(project / "model" / "untracked", b"mine")
    done = placer.restore(file_digest, "out.txt", now(project / "out.txt"), ["copy"],
                          overwrite=False)
    assert (done.placed, done.conflicts) == (False, ["out.txt"])
    done = placer.restore(dir_digest, "model", now(project / "model"), ["copy"],
                          overwrite=False)
    assert (done.placed, done.conflicts) == (False, ["model/run.sh", "model/untracked"])
    assert (project / "out.txt").read_bytes() == b"edited\n"
    assert (project / "model" / "untracked").read_bytes() == b"mine"
    # the wrong kind of thing, or something that cannot be hashed, is in the way too
    shutil.rmtree(project / "model")
    (project / "model").write_bytes(b"a file")
    done = placer.restore(dir_digest, "model", now(project / "model"), ["copy"],
                          overwrite=False)
    assert done.conflicts == ["model"] and (project / "model").read_bytes() == b"a file"
    unhashable = PathDigest(str(project / "out.txt"), errors=[("out.txt", "Permission denied")])
    done = placer.restore(file_digest, "out.txt", unhashable, ["copy"], overwrite=False)
    assert done.conflicts == ["out.txt"] and (project / "out.txt").read_bytes() == b"edited\n"


def test_with_overwrite_only_what_differs_is_placed_and_untracked_files_go(placer, project,
                                                                        stored):
    file_digest, dir_digest = stored
    (project / "out.txt").write_bytes(b"edited\n")
    (project / "model" / "run.sh").write_bytes(b"edited\n")
    write(project / "model" / "untracked", b"mine")
    kept = os.stat(project / "model" / "weights.bin").st_ino
    for path, digest in (("out.txt", file_digest), ("model", dir_digest)):
        done = placer.restore(digest, path, now(project / path), ["copy"], overwrite=True)
        assert done.placed and not done.conflicts
    assert (project / "out.txt").read_bytes() == b"cached\n"
    assert not (project / "model" / "untracked").exists()
    assert now(project / "model").hash == dir_digest
    assert os.stat(project / "model" / "weights.bin").st_ino == kept  # unchanged: not touched
    # a file where the directory belongs, a directory where the file belongs: replaced
    shutil.rmtree(project / "model")
    (project / "model").write_bytes(b"a file")
    (project / "out.txt").unlink()
    write(project / "out.txt" / "inner", b"x")
    for path, digest in (("out.txt", file_digest), ("model", dir_digest)):
        assert placer.restore(digest, path, now(project / path), ["copy"], overwrite=True).placed
    assert (project / "out.txt").read_bytes() == b"cached\n"
    assert now(project / "model").hash == dir_digest


def test_restore_with_nothing_known_replaces_what_is_there(placer, project, stored):
    file_digest, _ = stored
    (project / "out.txt").write_bytes(b"edited\n")
    done = placer.restore(file_digest, "out.txt", None, ["copy"], overwrite=False)
    assert done.conflicts == ["out.txt"]
    assert placer.restore(file_digest, "out.txt", None, ["copy"], overwrite=True).placed
    assert (project / "out.txt").read_bytes() == b"cached\n"


def test_restore_refuses_a_path_whose_directory_leads_outside(tmp_path, placer, project, stored):
    file_digest, _ = stored
    outside = tmp_path / "outside"
    outside.mkdir()
    (project / "linkdir").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OperationError, match="linkdir/o: its directory resolves outside"):
        placer.restore(file_digest, "linkdir/o", None, ["copy"], overwrite=True)
    assert list(outside.iterdir()) == []


def test_a_missing_member_takes_its_dir_object_with_it(objects, placer, project, stored):
    """The presence of a .dir object implies its files': a restore that finds one missing
    removes the .dir object (the next commit or fetch stores it whole)."""
    _, dir_digest = stored
    entries = {e.path: e for e in objects.read_manifest(dir_digest)}
    objects.remove(entries["weights.bin"].hash)
    shutil.rmtree(project / "model")
    with pytest.raises(MissingObjectsError, match="weights.bin") as info:
        placer.restore(dir_digest, "model", now(project / "model"), ["copy"], overwrite=True)
    assert "run.sh" in info.value.restored and (project / "model" / "run.sh").exists()
    assert not objects.has(dir_digest)
    assert objects.has(entries["run.sh"].hash)  # the sound members stay
