"""Directory hashing: manifest, invariance and sensitivity, symlink rules; both backends."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pivotbuild import hashing, manifest

# Names with the characters that break naive formats: spaces, backslashes,
# newlines, dots, dashes (which sort before '/'), non-ASCII.
NAME = st.text(
    alphabet=st.sampled_from(list("abcAB-_. \\\n\u00e9z0")), min_size=1, max_size=6
).filter(lambda n: n not in (".", ".."))


def _valid(tree: dict[tuple[str, ...], tuple[bytes, bool]]) -> bool:
    paths = set(tree)
    return not any(p[:i] in paths for p in paths for i in range(1, len(p)))


TREES = st.dictionaries(
    keys=st.lists(NAME, min_size=1, max_size=3).map(tuple),
    values=st.tuples(st.binary(max_size=300), st.booleans()),
    min_size=1,
    max_size=12,
).filter(_valid)

SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def materialise(root: Path, tree: dict, order_seed: int = 0) -> None:
    items = list(tree.items())
    random.Random(order_seed).shuffle(items)
    for parts, (content, executable) in items:
        path = root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(0o755 if executable else 0o644)


def tree_hash(backend, root: Path, jobs: int = 0) -> hashing.TreeDigest:
    result = backend.hash_tree(str(root), str(root), None, jobs)
    assert result.errors == [], result.errors
    return result


@SETTINGS
@given(tree=TREES, seed=st.integers(0, 1000))
def test_hash_independent_of_order_threads_and_location(backend, tree, seed):
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        materialise(Path(a) / "x", tree, 0)
        materialise(Path(b) / "deeper" / "y", tree, seed)
        first = tree_hash(backend, Path(a) / "x", jobs=1)
        second = tree_hash(backend, Path(b) / "deeper" / "y", jobs=4)
        assert first.hash == second.hash
        assert first.manifest == second.manifest
        assert first.hash == backend.hash_bytes(first.manifest) + ".dir"
        assert first.nfiles == len(tree)
        assert first.size == sum(len(c) for c, _ in tree.values())
        entries = manifest.parse(first.manifest)
        assert {tuple(e.path.split("/")): (e.size, e.executable) for e in entries} == {
            p: (len(c), x) for p, (c, x) in tree.items()
        }


def _outcome(parse, data):
    try:
        return parse(data)
    except manifest.ManifestError as exc:
        return str(exc)


_PATHS = st.lists(st.sampled_from(["a", "b", "/", ".", "..", "\\", "\\n", "\\t", "\0", " ", "é",
                                   "\xff"]), max_size=6).map("".join)
_LINES = st.tuples(st.sampled_from(["0" * 32, "ab" * 16, "AB" * 16, "0" * 31]),
                   st.sampled_from(["x", "-", "?"]), st.sampled_from(["0", "12", "012", ""]),
                   _PATHS).map(lambda t: " ".join(t).encode("utf-8", "surrogateescape"))


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_LINES, max_size=6), ordered=st.booleans(), final_newline=st.booleans())
def test_manifest_parse_agrees_with_its_line_by_line_reference(lines, ordered, final_newline):
    """parse() checks the whole body with two regular expressions and falls back to the loop
    over lines when they refuse it: the same entries, or the same error, either way."""
    if ordered:
        lines = sorted(set(lines), key=lambda line: line.split(b" ", 3)[-1])
    body = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    data = manifest.HEADER + body
    expected = _outcome(manifest._parse_lines, body) if data.endswith(b"\n") or not body else None
    got = _outcome(manifest.parse, data)
    if expected is None:
        assert got == "manifest is truncated (no final newline)"
    else:
        assert got == expected


@SETTINGS
@given(tree=TREES)
def test_core_and_python_build_identical_manifests(core, tree):
    with tempfile.TemporaryDirectory() as a:
        materialise(Path(a), tree)
        python = hashing.PythonBackend()
        assert tree_hash(core, Path(a)).manifest == tree_hash(python, Path(a)).manifest


@SETTINGS
@given(tree=TREES, pick=st.integers(0, 100), data=st.data())
def test_hash_changes_with_content_name_mode_and_set(backend, tree, pick, data):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        materialise(root, tree)
        base = tree_hash(backend, root).hash
        parts = sorted(tree)[pick % len(tree)]
        path = root.joinpath(*parts)
        content, executable = tree[parts]

        path.write_bytes(content + b"!")  # content
        assert tree_hash(backend, root).hash != base
        path.write_bytes(content)
        assert tree_hash(backend, root).hash == base

        path.chmod(0o644 if executable else 0o755)  # executable bit
        assert tree_hash(backend, root).hash != base
        path.chmod(0o755 if executable else 0o644)

        renamed = path.with_name(path.name + "~")  # name
        path.rename(renamed)
        assert tree_hash(backend, root).hash != base
        renamed.rename(path)

        extra = root / "zz-new-file"  # the set of files
        extra.write_bytes(b"")
        assert tree_hash(backend, root).hash != base
        extra.unlink()
        (root / "empty-dir" / "nested").mkdir(parents=True)  # empty dirs are not recorded
        assert tree_hash(backend, root).hash == base
        if len(tree) > 1:
            path.unlink()
            assert tree_hash(backend, root).hash != base


def test_manifest_format_is_documented_bytes(backend, tmp_path):
    (tmp_path / "b").write_bytes(b"bb")
    (tmp_path / "a-c").write_bytes(b"")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x y").write_bytes(b"1")
    (tmp_path / "a" / "x y").chmod(0o755)
    (tmp_path / "new\nline\\").write_bytes(b"z")
    result = tree_hash(backend, tmp_path)
    h = backend.hash_bytes
    assert result.manifest == (
        b"pivotbuild-manifest 1\n"
        + f"{h(b'')} - 0 a-c\n".encode()
        + f"{h(b'1')} x 1 a/x y\n".encode()
        + f"{h(b'bb')} - 2 b\n".encode()
        + f"{h(b'z')} - 1 new\\nline\\\\\n".encode()
    )


def test_symlinks_inside_are_followed_like_copies(backend, tmp_path):
    project = tmp_path / "p"
    (project / "data" / "real").mkdir(parents=True)
    (project / "data" / "real" / "f").write_bytes(b"content")
    (project / "elsewhere").mkdir()
    (project / "elsewhere" / "g").write_bytes(b"gg")
    (project / "data" / "link-to-file").symlink_to("real/f")
    (project / "data" / "link-to-dir").symlink_to("../elsewhere")
    copy = tmp_path / "copy"
    (copy / "real").mkdir(parents=True)
    (copy / "real" / "f").write_bytes(b"content")
    (copy / "link-to-file").write_bytes(b"content")
    (copy / "link-to-dir").mkdir()
    (copy / "link-to-dir" / "g").write_bytes(b"gg")
    linked = backend.hash_tree(str(project / "data"), str(project))
    assert linked.errors == []
    assert linked.hash == tree_hash(backend, copy).hash


@pytest.mark.parametrize(
    "make_link, problem",
    [
        (lambda d, outside: (d / "out").symlink_to(outside), "symlink points outside the project"),
        (lambda d, outside: (d / "dangling").symlink_to(d / "nothing"), "dangling symlink"),
        (lambda d, outside: (d / "self").symlink_to("self"), "symlink loop"),
        (lambda d, outside: (d / "up").symlink_to(".."), "symlink loop"),
        (lambda d, outside: os.mkfifo(d / "fifo"), "not a regular file"),
    ],
)
def test_bad_entries_are_named(backend, tmp_path, make_link, problem):
    project = tmp_path / "p"
    data = project / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "ok").write_bytes(b"fine")
    outside = tmp_path / "outside"
    outside.write_bytes(b"secret")
    make_link(data / "sub", outside)
    result = backend.hash_tree(str(data), str(project))
    assert result.hash is None
    assert len(result.errors) == 1
    rel, message = result.errors[0]
    assert rel.startswith("sub/") and message == problem


def test_skip_leaves_out_the_state_directory(backend, tmp_path):
    (tmp_path / "f").write_bytes(b"1")
    before = tree_hash(backend, tmp_path).hash
    (tmp_path / ".pivotbuild").mkdir()
    (tmp_path / ".pivotbuild" / "state.db").write_bytes(b"changes all the time")
    skipped = backend.hash_tree(
        str(tmp_path), str(tmp_path), None, 0, skip=str(tmp_path / ".pivotbuild")
    )
    assert skipped.hash == before


def test_manifest_parse_rejects_unsafe_paths():
    good = "0" * 32
    for bad in ["/abs", "../up", "a//b", "a/./b", "a/..", ""]:
        data = manifest.HEADER + f"{good} - 1 {bad}\n".encode()
        with pytest.raises(manifest.ManifestError):
            manifest.parse(data)
    with pytest.raises(manifest.ManifestError):
        manifest.parse(manifest.HEADER + f"{good} - 1 b\n{good} - 1 a\n".encode())
    with pytest.raises(manifest.ManifestError):
        manifest.parse(b"garbage")


@SETTINGS
@given(tree=TREES)
def test_walk_lists_every_file_with_its_stat_in_manifest_order(backend, tree):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        materialise(root, tree)
        (root / "empty").mkdir(exist_ok=True)
        entries = backend.walk(str(root), str(root))
        expected = sorted(tree, key=lambda parts: "/".join(parts).encode())
        assert [tuple(e.path.split("/")) for e in entries] == expected
        for e in entries:
            st = root.joinpath(*e.path.split("/")).stat()
            assert e.error is None
            assert (e.size, e.mtime_ns, e.ino, e.mode) == (
                st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode)


def test_walk_names_bad_entries(backend, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ok").write_bytes(b"1")
    (tmp_path / "d" / "gone").symlink_to("nowhere")
    entries = backend.walk(str(tmp_path / "d"), str(tmp_path))
    assert [(e.path, e.error) for e in entries] == [("gone", "dangling symlink"), ("ok", None)]
    with pytest.raises(OSError):
        backend.walk(str(tmp_path / "missing"), str(tmp_path))


# ---- PATH_MAX boundaries ----------------------------------------------------------------
# A path the kernel takes has at most 4095 bytes (PATH_MAX is 4096 with its NUL), a name at
# most 255. Deeper directories are made one relative step at a time (dir_fd), so building
# them never needs an absolute path longer than that. What does not fit is an entry with
# its whole relative name and ENAMETOOLONG, the same from both backends, never a crash.

TOO_LONG = os.strerror(errno.ENAMETOOLONG)
LONG_NAME = "z" * 255


def make_deep_dir(base: Path, length: int, fill: str = "a") -> Path:
    """A new directory below base whose absolute path has exactly ``length`` bytes, holding
    a file "f" ("x"), a directory "d" with a file "x", and a file with a 255-byte name."""
    path = os.fsencode(base)
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while len(path) < length:
            left = length - len(path)  # room for '/' and a name of at least one byte
            k = min(200, left - 1)
            k -= left - 1 - k == 1  # never leave room for a '/' alone
            os.mkdir(fill * k, dir_fd=fd)
            step = os.open(fill * k, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = step
            path += b"/" + os.fsencode(fill * k)
        for name, content in (("f", b"x"), (LONG_NAME, b"long")):
            _write_at(fd, name, content)
        os.mkdir("d", dir_fd=fd)
        sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        _write_at(sub, "x", b"in d")
        os.close(sub)
    finally:
        os.close(fd)
    return Path(os.fsdecode(path))


def _write_at(dir_fd: int, name: str, content: bytes) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dir_fd)
    try:
        os.write(fd, content)
    finally:
        os.close(fd)


@pytest.mark.parametrize("length", [4093, 4094, 4095])
def test_a_walked_directory_at_path_max_names_what_does_not_fit(backend, tmp_path, length):
    # 4093: "d" (4095 bytes) is entered, "f" (4095) fits, "d/x" (4097) does not;
    # 4094, 4095: nothing below fits (the 4095 case once crashed the core: memcpy of SIZE_MAX).
    root = make_deep_dir(tmp_path, length)
    assert len(os.fsencode(root)) == length
    result = backend.hash_tree(str(root), str(root))
    walked = [(e.path, e.error) for e in backend.walk(str(root), str(root))]
    assert result.hash is None
    if length == 4093:
        assert result.errors == [("d/x", TOO_LONG), (LONG_NAME, TOO_LONG)]
        assert walked == [("d/x", TOO_LONG), ("f", None), (LONG_NAME, TOO_LONG)]
    else:
        assert result.errors == [("d", TOO_LONG), ("f", TOO_LONG), (LONG_NAME, TOO_LONG)]
        assert walked == result.errors


def test_a_root_past_path_max_is_an_error_not_a_crash(backend, tmp_path):
    root = make_deep_dir(tmp_path, 4096)
    result = backend.hash_tree(str(root), str(root))
    assert (result.hash, result.errors) == (None, [("", TOO_LONG)])
    with pytest.raises(OSError) as raised:
        backend.walk(str(root), str(root))
    assert raised.value.errno == errno.ENAMETOOLONG
    at_limit = make_deep_dir(tmp_path, 4095, "b")
    slashed = backend.hash_tree(str(at_limit) + "/", str(at_limit))  # 4096 bytes, 4095 used
    assert [rel for rel, _ in slashed.errors] == ["d", "f", LONG_NAME]


def test_deep_entries_keep_their_whole_relative_names(backend, tmp_path):
    top = tmp_path / "top"
    top.mkdir()
    chains = [make_deep_dir(top, n, fill) for n, fill in zip((4093, 4094, 4095, 4096), "abcd")]
    rel = [os.fsdecode(os.fsencode(c)[len(os.fsencode(top)) + 1:]) for c in chains]
    walked = backend.walk(str(top), str(top))
    expected = [(f"{rel[0]}/d/x", TOO_LONG), (f"{rel[0]}/f", None), (f"{rel[0]}/{LONG_NAME}",
                                                                       TOO_LONG)]
    for r in rel[1:3]:
        expected += [(f"{r}/d", TOO_LONG), (f"{r}/f", TOO_LONG), (f"{r}/{LONG_NAME}", TOO_LONG)]
    expected.append((rel[3], TOO_LONG))  # the 4096-byte directory itself
    assert [(e.path, e.error) for e in walked] == expected
    assert walked[1].size == 1
    result = backend.hash_tree(str(top), str(top))
    assert result.errors == [(path, error) for path, error in expected if error]


def test_a_255_byte_name_and_empty_and_one_byte_files_are_ordinary(backend, tmp_path):
    for name, content in ((LONG_NAME, b"long"), ("empty", b""), ("one", b"1")):
        (tmp_path / name).write_bytes(content)
    result = tree_hash(backend, tmp_path)
    h = backend.hash_bytes
    assert result.manifest == (manifest.HEADER + f"{h(b'')} - 0 empty\n".encode()
                               + f"{h(b'1')} - 1 one\n".encode()
                               + f"{h(b'long')} - 4 {LONG_NAME}\n".encode())


def test_a_tree_deeper_than_any_recursion_limit_hashes(backend, tmp_path):
    # 1,500 levels fit in PATH_MAX; the core once called level 1,024 a loop, and the Python
    # walk recursed past its interpreter's limit.
    fds = [os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for _ in range(1500):
            os.mkdir("a", dir_fd=fds[-1])
            fds.append(os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        _write_at(fds[-1], "leaf", b"x")
        result = tree_hash(backend, tmp_path)
        [entry] = manifest.parse(result.manifest)
        assert (entry.path, entry.size) == ("a/" * 1500 + "leaf", 1)
        assert [e.path for e in backend.walk(str(tmp_path), str(tmp_path))] == [entry.path]
    finally:  # bottom up: shutil.rmtree (pytest's clean-up) recurses once per level
        with contextlib.suppress(FileNotFoundError):
            os.unlink("leaf", dir_fd=fds[-1])
        while len(fds) > 1:
            os.close(fds.pop())
            os.rmdir("a", dir_fd=fds[-1])
        os.close(fds[0])


# ---- directory stamps and the no-op check (check_tree) --------------------------------------

OLD_NS = 1_000_000_000 * 1_000_000_000  # 2001: far outside any racy window


def _age(root: Path) -> None:
    """Give every file and directory below root (and root) an old mtime, deepest first."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            os.utime(os.path.join(dirpath, name), ns=(OLD_NS, OLD_NS))
        os.utime(dirpath, ns=(OLD_NS, OLD_NS))


def _stamps(result: hashing.TreeDigest) -> list[tuple[str, int, int]]:
    return [d[:3] for d in result.dirs]


@SETTINGS
@given(tree=TREES)
def test_core_and_python_stamp_the_same_directories(core, tree):
    with tempfile.TemporaryDirectory() as a:
        materialise(Path(a), tree)
        python = hashing.PythonBackend()
        stamped = tree_hash(core, Path(a)).dirs
        assert stamped == tree_hash(python, Path(a)).dirs
        walked = ["", *sorted(os.path.relpath(d, a) for d, _, _ in os.walk(a) if d != a)]
        assert sorted(d[0] for d in stamped) == walked
        assert stamped[0][0] == ""  # the walked directory first


def test_check_tree_sees_every_kind_of_change(backend, tmp_path):
    root = tmp_path / "t"
    materialise(root, {("a",): (b"1", False), ("sub", "b"): (b"22", True),
                       ("sub", "deep", "c"): (b"333", False)})
    (root / "empty").mkdir()
    _age(root)
    result = tree_hash(backend, root)
    stamps = _stamps(result)
    assert [(rel, mtime) for rel, mtime, _ in stamps] == [
        ("", OLD_NS), ("empty", OLD_NS), ("sub", OLD_NS), ("sub/deep", OLD_NS)]
    assert all(trusted for *_, trusted in result.dirs)
    memo = result.snapshot
    assert backend.check_tree(str(root), memo, stamps) == (0, [hashing.OK] * 4)

    (root / "sub" / "b").chmod(0o644)  # the mode: a manifest's x flag
    assert backend.check_tree(str(root), memo, stamps)[0] == 1
    (root / "sub" / "b").chmod(0o755)
    os.utime(root / "sub" / "b", ns=(OLD_NS, OLD_NS))
    assert backend.check_tree(str(root), memo, stamps)[0] == 0
    (root / "a").write_bytes(b"9")  # same size, new mtime
    assert backend.check_tree(str(root), memo, stamps)[0] == 1
    os.utime(root / "a", ns=(OLD_NS, OLD_NS))
    (root / "empty" / "new").write_bytes(b"")  # a name added: only its directory moves
    changed, statuses = backend.check_tree(str(root), memo, stamps)
    assert (changed, statuses) == (0, [hashing.OK, hashing.STAT_CHANGED, hashing.OK, hashing.OK])
    (root / "sub" / "deep" / "c").unlink()
    (root / "sub" / "deep").rmdir()
    changed, statuses = backend.check_tree(str(root), memo, stamps)
    assert changed == 1 and statuses[2:] == [hashing.STAT_CHANGED, hashing.ERR_IO]
    assert backend.check_tree(str(root), memo[:-1], stamps) is None
    assert backend.check_tree(str(root), b"", stamps) is None


def test_check_tree_follows_symlinks_as_the_walk_does(backend, tmp_path):
    root = tmp_path / "t"
    materialise(root, {("real", "f"): (b"x", False)})
    (root / "link").symlink_to("real")
    _age(root)
    result = backend.hash_tree(str(root), str(tmp_path), None)
    assert result.errors == [] and result.nfiles == 2
    stamps = _stamps(result)
    assert [rel for rel, _, _ in stamps] == ["", "link", "real"]
    assert backend.check_tree(str(root), result.snapshot, stamps) == (0, [hashing.OK] * 3)
    other = tmp_path / "other"
    materialise(other, {("f",): (b"x", False)})
    (root / "link").unlink()
    (root / "link").symlink_to(other)  # retargeted: another directory, other files
    changed, statuses = backend.check_tree(str(root), result.snapshot, stamps)
    assert changed == 1 and statuses[1] == hashing.STAT_CHANGED
