"""Deterministic benchmark corpus: many small files plus a few large ones.

Layout under DIR::

    DIR/corpus.json                       parameters, counts, bytes (written last)
    DIR/small/dAA/dBB/dCC/f000000.bin     small files, about 100 per leaf folder
    DIR/large/large0.bin ...              large files

Small file sizes are log-uniform between 100 B and 256 KiB (mean about 33 KB, so
the default 100,000 files hold about 3.3 GB). Contents are incompressible and
depend only on the seed: small files are slices of a SHAKE-128 pool at seeded
offsets, each prefixed with its index so no two files are equal; large files
are SHAKE-128 streams of their own. Generating the same parameters into a DIR
that already holds them does nothing.

    python benchmarks/corpus.py DIR [--small N] [--large K] [--large-mib M] [--seed S]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

FORMAT = 1
MANIFEST = "corpus.json"
MIN_SIZE = 100
MAX_SIZE = 256 * 1024
FILES_PER_DIR = 100
DEPTH = 3
POOL_SIZE = 64 << 20
LARGE_BLOCK = 4 << 20


@dataclass(frozen=True)
class CorpusParams:
    small: int = 100_000
    large: int = 4
    large_mib: int = 256
    seed: int = 0

    def tag(self) -> str:
        """A short name for these parameters, usable as a directory name."""
        return f"s{self.small}-l{self.large}x{self.large_mib}-seed{self.seed}"


def small_sizes(n: int, seed: int) -> list[int]:
    """Sizes of the n small files: log-uniform in [MIN_SIZE, MAX_SIZE]."""
    rng = random.Random(f"sizes-{seed}")
    lo, hi = math.log(MIN_SIZE), math.log(MAX_SIZE)
    return [min(MAX_SIZE, max(MIN_SIZE, round(math.exp(rng.uniform(lo, hi))))) for _ in range(n)]


def fanout(n_files: int) -> int:
    """Branching factor per folder level so that leaves hold ~FILES_PER_DIR files."""
    leaves = max(1, math.ceil(n_files / FILES_PER_DIR))
    f = max(1, round(leaves ** (1 / DEPTH)))
    while f**DEPTH < leaves:
        f += 1
    return f


def small_relpath(i: int, fan: int) -> str:
    """Relative path (below DIR) of small file number i."""
    leaf = i // FILES_PER_DIR
    c = leaf % fan
    b = (leaf // fan) % fan
    a = leaf // (fan * fan)
    return f"small/d{a:02d}/d{b:02d}/d{c:02d}/f{i:06d}.bin"


def _pool(seed: int) -> bytes:
    return hashlib.shake_128(f"pivotbuild-corpus-pool-{seed}".encode()).digest(POOL_SIZE)


def _write_large(path: Path, index: int, size: int, seed: int) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        done, block = 0, 0
        while done < size:
            n = min(LARGE_BLOCK, size - done)
            key = f"pivotbuild-corpus-large-{seed}-{index}-{block}".encode()
            f.write(hashlib.shake_128(key).digest(n))  # releases the GIL: threads overlap
            done += n
            block += 1
    os.replace(tmp, path)


def read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def generate(root: str | os.PathLike[str], params: CorpusParams | None = None, *,
             verbose: bool = False) -> dict:
    """Make sure root holds the corpus for params; return its manifest.

    A corpus with other parameters (recognised by its manifest) is replaced;
    root's small/ and large/ are the only things removed.
    """
    params = params or CorpusParams()
    root = Path(root)
    old = read_manifest(root)
    if old is not None and old.get("format") == FORMAT and old.get("params") == asdict(params):
        return old
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)
    for sub in ("small", "large"):
        shutil.rmtree(root / sub, ignore_errors=True)

    t0 = time.perf_counter()
    sizes = small_sizes(params.small, params.seed)
    fan = fanout(params.small)
    pool = _pool(params.seed)
    rng = random.Random(f"offsets-{params.seed}")
    made: set[str] = set()
    small_bytes = 0
    for i, size in enumerate(sizes):
        rel = small_relpath(i, fan)
        parent = rel.rsplit("/", 1)[0]
        if parent not in made:
            (root / parent).mkdir(parents=True, exist_ok=True)
            made.add(parent)
        off = rng.randrange(0, POOL_SIZE - size)
        data = struct.pack("<Q", i) + pool[off:off + size - 8]
        with open(root / rel, "wb") as f:
            f.write(data)
        small_bytes += size
        if verbose and i and i % 20000 == 0:
            print(f"  {i} small files", file=sys.stderr)
    del pool

    large_dir = root / "large"
    large_dir.mkdir(exist_ok=True)
    large_size = params.large_mib << 20
    with ThreadPoolExecutor(max_workers=max(1, min(params.large, os.cpu_count() or 1))) as ex:
        futures = [ex.submit(_write_large, large_dir / f"large{k}.bin", k, large_size, params.seed)
                   for k in range(params.large)]
        for fut in futures:
            fut.result()

    manifest = {
        "format": FORMAT,
        "params": asdict(params),
        "small_files": params.small,
        "small_bytes": small_bytes,
        "large_files": params.large,
        "large_bytes": params.large * large_size,
        "fanout": fan,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, root / MANIFEST)
    return manifest


def add_params_arguments(p: argparse.ArgumentParser) -> None:
    d = CorpusParams()
    p.add_argument("--small", type=int, default=d.small, help="number of small files")
    p.add_argument("--large", type=int, default=d.large, help="number of large files")
    p.add_argument("--large-mib", type=int, default=d.large_mib, help="size of each large file")
    p.add_argument("--seed", type=int, default=d.seed)


def params_from_args(args: argparse.Namespace) -> CorpusParams:
    return CorpusParams(args.small, args.large, args.large_mib, args.seed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dir", help="where the corpus lives (created if missing)")
    add_params_arguments(p)
    args = p.parse_args(argv)
    params = params_from_args(args)
    before = read_manifest(Path(args.dir))
    m = generate(args.dir, params, verbose=True)
    what = "already present" if before == m else f"generated in {m['seconds']} s"
    print(f"{args.dir}: {m['small_files']} small files ({m['small_bytes'] / 1e9:.2f} GB), "
          f"{m['large_files']} x {params.large_mib} MiB large files; {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
