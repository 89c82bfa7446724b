"""pytest-benchmark benchmarks of the compiled core, called directly through cffi.

    python3 -m pytest benchmarks/bench_core.py --benchmark-enable -q

The tree is 2,000 small files (log-uniform 100 B .. 256 KiB, about 66 MB, from
benchmarks/corpus.py), made once per session in a temporary directory; after the
first round everything is in the page cache. Nothing here asserts on time.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import xxhash
from corebatch import FileBatch, snapshot
from corpus import CorpusParams, generate
from pivotbuild._core import ffi, lib

N_FILES = 2000
BUF_LEN = 96 * 1024


class Tree:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.c_root = os.fsencode(root)
        self.c_bound = os.fsencode(os.path.realpath(root))
        self.paths = sorted(str(p) for p in root.rglob("*") if p.is_file())

    def walk(self):  # -> pb_tree *
        t = lib.pb_tree_walk(self.c_root, self.c_bound, ffi.NULL)
        if t == ffi.NULL:
            raise OSError(ffi.errno, "pb_tree_walk failed", str(self.root))
        return t


@pytest.fixture(scope="session")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    root = tmp_path_factory.mktemp("core-tree")
    generate(root / "data", CorpusParams(small=N_FILES, large=0, large_mib=0, seed=1))
    t = Tree(root / "data" / "small")
    assert len(t.paths) == N_FILES
    return t


@pytest.fixture(scope="session")
def batch(tree: Tree) -> FileBatch:
    b = FileBatch(tree.paths)
    b.hash(2)  # warm the page cache, and check the core against the xxhash package
    for i in (0, N_FILES // 2, N_FILES - 1):
        assert b.hexdigest(i) == xxhash.xxh3_128(Path(tree.paths[i]).read_bytes()).hexdigest()
    return b


@pytest.fixture(scope="session")
def memo(tree: Tree, batch: FileBatch) -> bytes:
    t = tree.walk()
    try:
        assert lib.pb_tree_hash(t, ffi.NULL, 0, 2) == 0
        return snapshot(t)
    finally:
        lib.pb_tree_free(t)


def test_hash_buffer_96k(benchmark) -> None:
    data = os.urandom(BUF_LEN)
    buf = ffi.new("uint8_t[]", data)
    out = ffi.new("uint8_t[16]")
    benchmark.extra_info["simd"] = ffi.string(lib.pb_simd_name()).decode()
    benchmark(lib.pb_hash_buffer, buf, BUF_LEN, out)
    assert bytes(ffi.buffer(out)) == xxhash.xxh3_128(data).digest()


@pytest.mark.parametrize("threads", [1, 2])
def test_hash_files_2000(benchmark, batch: FileBatch, threads: int) -> None:
    benchmark(batch.hash, threads)
    benchmark.extra_info["bytes"] = batch.total_size()


def test_tree_walk_2000(benchmark, tree: Tree, batch: FileBatch) -> None:
    def walk() -> int:
        t = tree.walk()
        n = t.n
        lib.pb_tree_free(t)
        return n

    assert benchmark(walk) == N_FILES


def _hash_tree(t, memo_buf, memo_len: int, threads: int) -> int:
    try:
        assert lib.pb_tree_hash(t, memo_buf, memo_len, threads) == 0
        return t.nread
    finally:
        lib.pb_tree_free(t)


@pytest.mark.parametrize("threads", [1, 2])
def test_tree_hash_empty_memo(benchmark, tree: Tree, batch: FileBatch, threads: int) -> None:
    # the walk is setup, not timed: only pb_tree_hash is measured
    nread = benchmark.pedantic(_hash_tree, setup=lambda: ((tree.walk(), ffi.NULL, 0, threads), {}),
                               rounds=15, iterations=1, warmup_rounds=1)
    assert nread == N_FILES


def test_tree_hash_full_memo(benchmark, tree: Tree, memo: bytes) -> None:
    memo_buf = ffi.from_buffer(memo)
    nread = benchmark.pedantic(
        _hash_tree, setup=lambda: ((tree.walk(), memo_buf, len(memo), 2), {}),
        rounds=30, iterations=1, warmup_rounds=1)
    assert nread == 0  # every file came from the memo
