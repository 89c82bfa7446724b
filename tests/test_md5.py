"""md5_bytes / md5_files (DVC's hashes for import-dvc) over both backends: equal to hashlib,
and DVC 2's md5-dos2unix at the edges of the core's 256 KiB reads and DVC's 1 MiB chunks."""

from __future__ import annotations

import hashlib
import os
import random

import pytest

CHUNK = 1 << 20


def reference_dos2unix(data: bytes) -> str:
    """DVC 2's rule written plainly: per 1 MiB chunk, sniff 512 bytes, CRLF -> LF if text."""
    text_bytes = bytes(range(32, 127)) + b"\n\r\t\f\b"
    digest = hashlib.md5()
    for off in range(0, len(data), CHUNK):
        chunk = data[off:off + CHUNK]
        sniff = chunk[:512]
        text = b"\x00" not in sniff and (
            not sniff or len(sniff.translate(None, text_bytes)) / len(sniff) <= 0.30)
        digest.update(chunk.replace(b"\r\n", b"\n") if text else chunk)
    return digest.hexdigest()


def test_md5_bytes_equals_hashlib_at_every_padding_length(backend):
    rng = random.Random(5)
    for n in [*range(200), 1000, 4096, 65537]:
        data = rng.randbytes(n)
        assert backend.md5_bytes(data) == hashlib.md5(data).hexdigest(), n


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, (256 << 10) - 1, (256 << 10) + 1,
                                  CHUNK, CHUNK + 1, 3 * CHUNK + 5])
def test_md5_files_raw_and_dos2unix(backend, tmp_path, size):
    rng = random.Random(size)
    # text with CRLFs everywhere, and a CR on the last byte of each 256 KiB read and 1 MiB chunk
    data = bytearray(rng.choice(b"abc \r\n") for _ in range(size))
    for edge in range(256 << 10, size, 256 << 10):
        data[edge - 1:edge + 1] = b"\r\n"
    path = tmp_path / "f"
    path.write_bytes(bytes(data))
    raw, d2u = backend.md5_files([(str(path), False), (str(path), True)], jobs=2)
    assert (raw.hash, raw.size, raw.error) == (hashlib.md5(data).hexdigest(), size, None)
    assert (d2u.hash, d2u.size) == (reference_dos2unix(bytes(data)), size)


def test_dos2unix_leaves_binary_chunks_alone_per_chunk(backend, tmp_path):
    # chunk 1 is binary (a NUL in its first 512 bytes), chunk 2 text: only chunk 2 changes
    data = b"\x00" + b"a\r\n" * (CHUNK // 3) + b"ab" + b"b\r\n" * 1000
    path = tmp_path / "mixed"
    path.write_bytes(data)
    (got,) = backend.md5_files([(str(path), True)])
    expected = hashlib.md5(data[:CHUNK] + data[CHUNK:].replace(b"\r\n", b"\n")).hexdigest()
    assert got.hash == expected == reference_dos2unix(data)


def test_errors_are_per_item(backend, tmp_path):
    good = tmp_path / "good"
    good.write_bytes(b"x")
    items = [(str(tmp_path / "missing"), False), (str(tmp_path), False), (str(good), False)]
    missing, directory, ok = backend.md5_files(items)
    assert missing.hash is None and missing.error == os.strerror(2)
    assert directory.hash is None and directory.error
    assert ok.hash == hashlib.md5(b"x").hexdigest() and ok.error is None
    assert backend.md5_files([]) == []


def test_many_files_in_one_batch(backend, tmp_path):
    paths = []
    for i in range(300):
        p = tmp_path / f"{i:03}.txt"
        p.write_bytes(b"line\r\n" * i)
        paths.append(str(p))
    found = backend.md5_files([(p, i % 2 == 1) for i, p in enumerate(paths)], jobs=3)
    for i, item in enumerate(found):
        data = b"line\r\n" * i
        want = reference_dos2unix(data) if i % 2 else hashlib.md5(data).hexdigest()
        assert (item.path, item.hash) == (paths[i], want)
