"""cffi build script for the compiled hashing core (API mode).

The C declarations come from csrc/pivothash.h (between its PB_CDEF markers), so
the API is written once. setup.py runs this through ``cffi_modules``; a failed
build is tolerated there and pivotbuild falls back to the ``xxhash`` package.
"""

from __future__ import annotations

import re
from pathlib import Path

from cffi import FFI

CSRC = Path(__file__).resolve().parent.parent / "csrc"
SOURCES = ["pb_hash.c", "pb_pool.c", "pb_tree.c", "pb_store.c", "pb_md5.c", "pb_xxh_sse2.c",
           "pb_xxh_avx2.c", "pb_xxh_avx512.c"]


def _cdef_from_header() -> str:
    text = (CSRC / "pivothash.h").read_text()
    match = re.search(r"/\* PB_CDEF_BEGIN \*/(.*)/\* PB_CDEF_END \*/", text, re.DOTALL)
    if match is None:
        raise RuntimeError("csrc/pivothash.h has no PB_CDEF_BEGIN/END block")
    # cffi's parser wants plain declarations: drop comments.
    body = re.sub(r"/\*.*?\*/", "", match.group(1), flags=re.DOTALL)
    return body


ffibuilder = FFI()
ffibuilder.cdef(_cdef_from_header())
ffibuilder.set_source(
    "pivotbuild._core",
    '#include "pivothash.h"',
    sources=[f"csrc/{name}" for name in SOURCES],
    include_dirs=["csrc"],
    extra_compile_args=["-O3", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
