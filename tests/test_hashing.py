"""File hashing: known answers and equality with xxhsum -H2, over both backends."""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess

import pytest
import xxhash

from pivotbuild import hashing
from tests.test_tree import LONG_NAME, TOO_LONG, make_deep_dir

MIB = 1 << 20
SIZES = [0, 1, 15, 16, 17, 128, 240, 241, 4096, MIB - 1, MIB, MIB + 1]

needs_xxhsum = pytest.mark.skipif(
    shutil.which("xxhsum") is None and not os.environ.get("CI"),
    reason="xxhsum (Debian package xxhash) not installed",
)


def _content(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def _xxhsum(paths: list[str]) -> dict[str, str]:
    out = subprocess.run(["xxhsum", "-H2", *paths], check=True, capture_output=True, text=True)
    result = {}
    for line in out.stdout.splitlines():
        digest, path = line.split("  ", 1)
        result[path] = digest
    return result


def test_known_answers(backend):
    # Published/independently computed XXH3-128 values (canonical form).
    assert backend.hash_bytes(b"") == "99aa06d3014798d86001c324468d497f"
    assert backend.hash_bytes(b"a") == "a96faf705af16834e6c632b61e964e1f"


def test_buffer_matches_xxhash_package(backend):
    for size in SIZES:
        data = _content(size)
        assert backend.hash_bytes(data) == xxhash.xxh3_128_hexdigest(data), size


@needs_xxhsum
def test_files_match_xxhsum(backend, tmp_path):
    paths = []
    for size in SIZES:
        path = tmp_path / f"f{size}"
        path.write_bytes(_content(size))
        paths.append(str(path))
    expected = _xxhsum(paths)
    results = backend.hash_files(paths, jobs=2)
    for result, size in zip(results, SIZES):
        assert result.error is None
        assert result.hash == expected[result.path], size
        assert result.size == size


@needs_xxhsum
@pytest.mark.parametrize("threshold", [1, 4096, 1 << 62])
def test_core_read_and_mmap_paths_agree_with_xxhsum(core, tmp_path, threshold):
    """Force mmap for everything, a low crossover, and read() for everything."""
    lib = core._lib
    saved = lib.pb_get_mmap_threshold()
    sizes = [*SIZES, 3 * MIB + 5, int(saved) * 2 + 3]
    paths = []
    for size in sizes:
        path = tmp_path / f"g{size}"
        path.write_bytes(_content(size, seed=3))
        paths.append(str(path))
    expected = _xxhsum(paths)
    lib.pb_set_mmap_threshold(threshold)
    try:
        results = core.hash_files(paths, jobs=2)
    finally:
        lib.pb_set_mmap_threshold(saved)
    assert [r.hash for r in results] == [expected[p] for p in paths]


def test_core_every_simd_variant_agrees(core):
    lib = core._lib
    data = _content(200_003)
    expected = xxhash.xxh3_128_hexdigest(data)
    names = [b"sse2", b"avx2", b"avx512"]
    try:
        for name in names:
            if lib.pb_set_simd(name) != 0:
                continue  # this CPU lacks it
            assert core.hash_bytes(data) == expected, name
    finally:
        lib.pb_set_simd(b"auto")


# ---- large files: mapped where the page cache allows, read elsewhere ----------------------
# Files from the mmap threshold (2 MiB) up are hashed 16 MiB window by window, one mapping per
# 256 MiB; a window the page cache holds in PMD-size (2 MiB) folios is hashed from the mapping,
# any other is read() (mapping 4 KiB folios costs more than copying them: csrc/pb_hash.c).


def _fresh(path, size: int, seed: int) -> bytes:
    """Write size seeded bytes to path (flushed: the kernel may drop them at once)."""
    chunk = 16 * MIB  # randbytes takes at most 256 MiB at a time
    data = b"".join(_content(min(chunk, size - at), seed + at) for at in range(0, size, chunk))
    with open(path, "wb") as f:
        f.write(data)
        os.fsync(f.fileno())
    return data


def _reread_small(path) -> None:
    """Drop path from the page cache, then read it back without readahead: every page in its
    own 4 KiB folio, which no PMD entry can map."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        while os.read(fd, 1 << 20):
            pass
    finally:
        os.close(fd)


def _pmd_share(path) -> float:
    """How much of path a fresh mapping maps with PMD entries, from /proc/self/smaps: the
    kernel's own account, independent of the core's probe."""
    import mmap

    real = os.path.realpath(path)
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE | mmap.MAP_POPULATE,
                      prot=mmap.PROT_READ)
        try:
            fields, inside = {}, False
            with open("/proc/self/smaps") as smaps:
                for line in smaps:
                    parts = line.split()
                    if not parts[0].endswith(":"):
                        inside = len(parts) >= 6 and parts[-1] == real
                    elif inside and parts[0] in ("Rss:", "FilePmdMapped:"):
                        fields[parts[0]] = int(parts[1])
        finally:
            m.close()
    return fields.get("FilePmdMapped:", 0) / fields["Rss:"] if fields.get("Rss:") else 0.0


@pytest.mark.parametrize("size", [2 * MIB + 1, 16 * MIB, 16 * MIB + 4097, 40 * MIB + 7])
def test_large_files_across_windows_hash_alike(backend, tmp_path, size):
    path = tmp_path / "big"
    data = _fresh(path, size, seed=size % 1000)
    [result] = backend.hash_files([str(path)])
    assert (result.hash, result.size) == (xxhash.xxh3_128_hexdigest(data), size)


@pytest.mark.parametrize("always", [False, True])
def test_core_large_file_in_small_folios_is_read_unless_mapping_is_forced(core, tmp_path,
                                                                         always):
    path = tmp_path / "big"
    size = 40 * MIB + 7
    expect = xxhash.xxh3_128_hexdigest(_fresh(path, size, seed=5))
    _reread_small(path)
    assert _pmd_share(path) == 0.0  # the state this test is about
    saved = core.map_always
    core.set_map_always(always)
    try:
        before = core.bytes_mapped()
        [result] = core.hash_files([str(path)])
        mapped = core.bytes_mapped() - before
    finally:
        core.set_map_always(saved)
    assert (result.hash, result.size) == (expect, size)
    assert mapped == (size if always else 0)


def test_core_maps_a_large_file_held_in_pmd_size_folios(core, tmp_path):
    path = tmp_path / "big"
    size = 40 * MIB + 7
    expect = xxhash.xxh3_128_hexdigest(_fresh(path, size, seed=6))
    share = _pmd_share(path)
    if share < 0.99:
        pytest.skip(f"this kernel or file system keeps a written file in small folios "
                    f"({share:.0%} PMD-mapped): nothing to map")
    before = core.bytes_mapped()
    [result] = core.hash_files([str(path)])
    assert (result.hash, result.size) == (expect, size)
    assert core.bytes_mapped() - before == size


@pytest.mark.slow
def test_a_file_larger_than_one_mapping_hashes_alike_every_way(backend, tmp_path):
    """257 MiB + 3: two mappings (256 MiB each at most), the second one short."""
    path = tmp_path / "huge"
    size = 257 * MIB + 3
    expect = xxhash.xxh3_128_hexdigest(_fresh(path, size, seed=8))
    ways = [(None, None)]
    if backend.name == "core":
        ways = [(backend.mmap_threshold, False), (backend.mmap_threshold, True), (1 << 62, False)]
    for threshold, always in ways:
        if threshold is not None:
            saved = (backend.mmap_threshold, backend.map_always)
            backend.set_mmap_threshold(threshold)
            backend.set_map_always(always)
        try:
            [result] = backend.hash_files([str(path)])
        finally:
            if threshold is not None:
                backend.set_mmap_threshold(saved[0])
                backend.set_map_always(saved[1])
        assert (result.hash, result.size) == (expect, size), (threshold, always)


def test_core_tuning_wrappers_check_what_the_core_answers(core, tmp_path):
    saved = (core.simd, core.mmap_threshold, core.map_always)
    try:
        with pytest.raises(ValueError, match="not available"):
            core.set_simd("mmx")
        with pytest.raises(ValueError, match="negative"):
            core.set_mmap_threshold(-1)
        core.set_simd("sse2")
        assert core.simd == "sse2"
        core.set_mmap_threshold(4096)
        core.set_map_always(True)
        assert (core.mmap_threshold, core.map_always) == (4096, True)
    finally:
        core.set_simd("auto")
        core.set_mmap_threshold(saved[1])
        core.set_map_always(saved[2])
    src = tmp_path / "src"
    src.write_bytes(b"abc")
    copied = core.files_copied()
    [result] = core.copy_files([(str(src), str(tmp_path / "dst"), 0o444, 0, None)])
    assert result.status == hashing.OK and core.files_copied() == copied + 1


def test_errors_are_per_file(backend, tmp_path):
    good = tmp_path / "good"
    good.write_bytes(b"data")
    secret = tmp_path / "secret"
    secret.write_bytes(b"x")
    secret.chmod(0)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    paths = [str(tmp_path / "missing"), str(good), str(fifo), str(secret)]
    results = backend.hash_files(paths, jobs=2)
    assert results[0].error == "No such file or directory"
    assert results[1].hash == xxhash.xxh3_128_hexdigest(b"data")
    assert results[2].error == "not a regular file"
    if os.geteuid() != 0:  # root reads anything
        assert results[3].error == "Permission denied"


def test_thread_count_does_not_change_results(backend, tmp_path):
    paths = []
    for i in range(50):
        path = tmp_path / f"f{i}"
        path.write_bytes(_content(i * 997, seed=i))
        paths.append(str(path))
    one = [r.hash for r in backend.hash_files(paths, jobs=1)]
    many = [r.hash for r in backend.hash_files(paths, jobs=7)]
    assert one == many == [xxhash.xxh3_128_hexdigest(_content(i * 997, seed=i)) for i in range(50)]


# ---- copying with the content hashed on the way, and renaming into place ------------------


@pytest.mark.parametrize("size", [0, 1, 4096, 256 * 1024, 256 * 1024 + 1, 3 * MIB])
def test_copy_files_copies_and_hashes(backend, tmp_path, size):
    src = tmp_path / "src"
    src.write_bytes(_content(size, seed=size))
    expect = xxhash.xxh3_128_hexdigest(src.read_bytes())
    flags = hashing.COPY_CHECK | hashing.COPY_KEEP_EXEC
    [result] = backend.copy_files([(str(src), str(tmp_path / "dst"), 0o444, flags, expect)])
    assert (result.status, result.hash, result.size, result.error) == (hashing.OK, expect, size,
                                                                        None)
    assert (tmp_path / "dst").read_bytes() == src.read_bytes()
    assert (tmp_path / "dst").stat().st_mode & 0o777 == 0o444


def test_copy_files_keeps_the_exec_bit_only_when_asked(backend, tmp_path):
    src = tmp_path / "tool"
    src.write_bytes(b"#!/bin/sh\n")
    src.chmod(0o755)
    items = [(str(src), str(tmp_path / "kept"), 0o444, hashing.COPY_KEEP_EXEC, None),
             (str(src), str(tmp_path / "plain"), 0o444, 0, None)]
    assert [r.status for r in backend.copy_files(items)] == [hashing.OK, hashing.OK]
    assert (tmp_path / "kept").stat().st_mode & 0o777 == 0o555
    assert (tmp_path / "plain").stat().st_mode & 0o777 == 0o444


def test_copy_files_rejects_a_wrong_hash_and_reports_errors(backend, tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"tampered")
    taken = tmp_path / "taken"
    taken.write_bytes(b"already here")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    items = [
        (str(src), str(tmp_path / "bad"), 0o444, hashing.COPY_CHECK, "0" * 32),
        (str(tmp_path / "missing"), str(tmp_path / "m"), 0o444, 0, None),
        (str(src), str(taken), 0o444, 0, None),  # never written over: O_EXCL
        (str(fifo), str(tmp_path / "f"), 0o444, 0, None),
    ]
    bad, missing, exists, not_regular = backend.copy_files(items, jobs=2)
    assert bad.status == hashing.COPY_MISMATCH and bad.hash == xxhash.xxh3_128_hexdigest(
        b"tampered")
    assert not (tmp_path / "bad").exists()
    assert missing.status == hashing.ERR_IO and missing.error == "No such file or directory"
    assert exists.status == hashing.ERR_IO and exists.error == "File exists"
    assert taken.read_bytes() == b"already here"
    assert not_regular.status == hashing.ERR_NOT_REGULAR and not (tmp_path / "f").exists()


@pytest.mark.parametrize("size", [0, 1, 4096, 5000, 256 * 1024 + 1, 3 * MIB])
def test_unnamed_copies_get_their_names_only_when_published(backend, tmp_path, size):
    """COPY_UNNAMED: nothing appears in the directory until publish_files names the copy;
    COPY_DIRECT (whole blocks around the page cache, the tail through it) keeps every byte."""
    src = tmp_path / "src"
    src.write_bytes(_content(size, seed=size))
    src.chmod(0o755)
    expect = xxhash.xxh3_128_hexdigest(src.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    flags = hashing.COPY_CHECK | hashing.COPY_KEEP_EXEC | hashing.COPY_UNNAMED | \
        hashing.COPY_DIRECT
    [result] = backend.copy_files([(str(src), str(out / "obj"), 0o444, flags, expect)])
    assert (result.status, result.hash, result.size) == (hashing.OK, expect, size)
    assert result.fd >= 0 and list(out.iterdir()) == []
    assert backend.publish_files([(result.fd, str(out / "obj"))]) == [(hashing.OK, 0)]
    with pytest.raises(OSError):
        os.fstat(result.fd)  # closed
    assert (out / "obj").read_bytes() == src.read_bytes()
    assert (out / "obj").stat().st_mode & 0o777 == 0o555 and (out / "obj").stat().st_nlink == 1


def test_unnamed_copies_never_replace_and_leave_nothing_when_wrong(backend, tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"content")
    (tmp_path / "taken").write_bytes(b"already here")
    flags = hashing.COPY_CHECK | hashing.COPY_UNNAMED
    good = xxhash.xxh3_128_hexdigest(b"content")
    items = [(str(src), str(tmp_path / "taken"), 0o444, flags, good),
             (str(src), str(tmp_path / "bad"), 0o444, flags, "0" * 32),
             (str(src), str(tmp_path / "no-such-dir" / "obj"), 0o444, flags, good)]
    copied, bad, nowhere = backend.copy_files(items, jobs=2)
    assert bad.status == hashing.COPY_MISMATCH and bad.fd == -1
    assert nowhere.status == hashing.ERR_IO and nowhere.error == "No such file or directory"
    assert backend.publish_files([(copied.fd, str(tmp_path / "taken"))]) == [
        (hashing.LINK_PRESENT, 0)]
    assert (tmp_path / "taken").read_bytes() == b"already here"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "taken"]


def test_move_files_never_replaces(backend, tmp_path):
    for name in ("a", "b", "object2"):
        (tmp_path / name).write_bytes(name.encode())
    items = [(str(tmp_path / "a"), str(tmp_path / "object1")),
             (str(tmp_path / "b"), str(tmp_path / "object2")),
             (str(tmp_path / "missing"), str(tmp_path / "object3"))]
    moved, present, missing = backend.move_files(items, jobs=2)
    assert moved == (hashing.OK, 0) and (tmp_path / "object1").read_bytes() == b"a"
    assert present == (hashing.LINK_PRESENT, 0) and not (tmp_path / "b").exists()
    assert (tmp_path / "object2").read_bytes() == b"object2"
    assert missing[0] == hashing.ERR_IO and not (tmp_path / "object3").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["object1", "object2"]


# ---- PATH_MAX boundaries (4095 bytes is the longest path the kernel takes) ----------------


def test_files_at_path_max_hash_and_past_it_are_named_errors(backend, tmp_path):
    deep = make_deep_dir(tmp_path, 4093)  # holds "f" ("x"): a 4095-byte path
    beyond = make_deep_dir(tmp_path, 4094, "b")  # its "f" is 4096 bytes
    paths = [f"{deep}/f", f"{beyond}/f", f"{tmp_path}/{LONG_NAME}z"]
    assert [len(os.fsencode(p)) for p in paths[:2]] == [4095, 4096]
    fits, too_long, name_too_long = backend.hash_files(paths, jobs=2)
    assert (fits.hash, fits.size, fits.error) == (xxhash.xxh3_128_hexdigest(b"x"), 1, None)
    assert (too_long.hash, too_long.error) == (None, TOO_LONG)
    assert (name_too_long.hash, name_too_long.error) == (None, TOO_LONG)


def test_store_operations_at_path_max(backend, tmp_path):
    deep = make_deep_dir(tmp_path, 4093)
    src, fits, past = f"{deep}/f", f"{deep}/o", f"{deep}/oo"  # 4095, 4095, 4096 bytes
    too_long = (hashing.ERR_IO, errno.ENAMETOOLONG)
    assert backend.link_files([(src, fits, 0o444), (src, past, 0o444)]) == [(hashing.OK, 0),
                                                                           too_long]
    x = xxhash.xxh3_128_hexdigest(b"x")
    copied, refused, unreadable = backend.copy_files(
        [(src, f"{deep}/p", 0o444, hashing.COPY_CHECK, x), (src, f"{deep}/pp", 0o444, 0, None),
         (f"{deep}/oo", f"{deep}/q", 0o444, 0, None)])
    assert (copied.status, copied.hash) == (hashing.OK, x)
    assert (refused.status, refused.err) == too_long
    assert (unreadable.status, unreadable.err) == too_long
    # jobs=1: the second move takes p away, so the first must run first (with threads the
    # second could win, and the first would then fail ENOENT before its name is checked).
    assert backend.move_files([(f"{deep}/p", f"{deep}/qq"), (f"{deep}/p", f"{deep}/q")],
                              jobs=1) == [too_long, (hashing.OK, 0)]
    assert [r.hash for r in backend.hash_files([f"{deep}/q", fits])] == [x, x]
