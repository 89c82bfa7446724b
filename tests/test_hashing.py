"""File hashing: known answers and equality with xxhsum -H2, over both backends."""

from __future__ import annotations

import os
import random
import shutil
import subprocess

import pytest
import xxhash

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
