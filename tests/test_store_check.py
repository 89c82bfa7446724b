"""store/check.py: objects checked against their names through the stat memo, on real files."""

# ruff: noqa: F811 - the fixtures imported from tests.storekit are parameters here

from __future__ import annotations

import os
import shutil

import pytest

from pivotbuild.store.objects import CorruptObjectsError, ObjectStore
from pivotbuild.store.place import Placer
from tests.storekit import (  # noqa: F401 - fixtures
    DictMemo,
    age,
    corrupt,
    counting_hash_calls,
    each_backend,
    file_hash,
    make_tree,
    project,
    tree_digest,
    write,
)


def test_the_memo_spares_unchanged_objects_but_not_edited_ones(tmp_path, project, monkeypatch):
    memo = DictMemo()
    objects = ObjectStore(tmp_path / "cache" / "files", memo=memo)
    src = write(project / "f", b"good bytes")
    h = file_hash(src)
    objects.store_file(src, h)
    obj = objects.object_path(h)
    age(obj)  # out of the racy window: its signature may be trusted
    assert objects.check_output(h, "f") == [] and str(obj) in memo.rows

    calls = counting_hash_calls(monkeypatch)
    fresh = ObjectStore(tmp_path / "cache" / "files", memo=memo)  # another process, same memo
    Placer(fresh, project).link_file(h, project / "a", ["copy"])
    assert calls == []  # not read again
    # Edited in place (same inode), its mtime put back: the size still gives it away.
    st = os.stat(obj)
    corrupt(obj, b"good bytes, and more")
    os.utime(obj, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(obj).st_ino == st.st_ino
    with pytest.raises(CorruptObjectsError):
        again = ObjectStore(tmp_path / "cache" / "files", memo=memo)
        Placer(again, project).link_file(h, project / "b", ["copy"])
    assert calls and not (project / "b").exists()


def test_a_fresh_object_is_not_trusted_by_the_memo(tmp_path, project):
    memo = DictMemo()
    objects = ObjectStore(tmp_path / "cache" / "files", memo=memo)
    src = write(project / "f", b"new")
    h = file_hash(src)
    objects.store_file(src, h)
    assert objects.check_output(h, "f") == []
    assert memo.rows == {}  # written just now: inside the racy window
    corrupt(objects.object_path(h), b"neW")  # same size, and perhaps the same mtime
    assert objects.check_output(h, "f") == [("f", h)]


def test_objects_this_process_stored_are_placed_without_reading_them_again(
        tmp_path, project, monkeypatch):
    objects = ObjectStore(tmp_path / "cache" / "files", memo=DictMemo())
    placer = Placer(objects, project)
    d = make_tree(project)
    digest = tree_digest(d, project)
    objects.store_dir(d, digest)
    single = write(project / "single", b"single file")
    single_hash = file_hash(single)
    objects.store_file(single, single_hash, link=True)
    calls = counting_hash_calls(monkeypatch)
    shutil.rmtree(d)
    placer.place_dir(digest.hash, d, ["copy"])
    placer.link_file(single_hash, project / "again", ["copy"])
    assert calls == []
    # Edited in place since (through the workspace file that is the object): found out all
    # the same, by its size (within one timestamp tick its mtime may not have moved).
    corrupt(objects.object_path(single_hash), b"single file, edited")
    with pytest.raises(CorruptObjectsError):
        placer.link_file(single_hash, project / "third", ["copy"])
    assert calls
