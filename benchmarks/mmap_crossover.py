"""read() vs mmap in the core, per file size, on a warm page cache.

For each size (16 KiB ... 256 MiB) a set of files of exactly that size is made
under --dir, put in a known page-cache state (--cache: just written, evicted and
read back, or read back in 4 KiB folios; mmap's cost depends on the folio size,
see pagecache.py), then hashed with ``lib.pb_hash_files`` with read() forced
(mmap threshold 2**63), with mmap forced (threshold 1 and PB_MAP_ALWAYS), and as
the core chooses by default ("auto": from the default threshold up, each 16 MiB
window mapped if the page cache holds it in PMD-size folios, else read), with 1
and 2 threads. Each run hashes at least --min-mib MiB (the batch is repeated)
and the median of --runs runs is reported, the variants interleaved within a run
so drift hits them alike. Prints GB/s, the winner of read and mmap per size and
the crossover: the smallest size from which mmap wins at every larger size.

``--simd`` adds the instruction-set table: XXH3-128 of a 96 KiB buffer in cache
through ``lib.pb_hash_buffer`` and of the largest files (default threshold), in
each page-cache state, for each of sse2, avx2 and avx512.

    python benchmarks/mmap_crossover.py [--dir DIR] [--runs 7] [--cache both|all|STATE]
        [--simd] [--json OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchenv import cpu_model
from corebatch import FileBatch, mmap_threshold, simd
from pagecache import STATES, prepare
from pivotbuild._core import ffi, lib
from sysload import Probe, QuietGate

KIB, MIB = 1 << 10, 1 << 20
READ_ONLY = 2**63  # threshold no file reaches: always read()
MMAP_ALL = 1       # every non-empty file is mapped (with PB_MAP_ALWAYS)
DEFAULT_THRESHOLD = lib.pb_get_mmap_threshold()
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "bench-data" / "crossover"
SIMD_NAMES = ("sse2", "avx2", "avx512")
THREADS = (1, 2)


def fmt_size(n: int) -> str:
    for unit, div in (("MiB", MIB), ("KiB", KIB)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def sizes(lo: int, hi: int, step: int) -> list[int]:
    out, s = [], lo
    while s <= hi:
        out.append(s)
        s *= step
    return out


def _make_file(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        done, block = 0, 0
        while done < size:
            n = min(4 * MIB, size - done)
            f.write(hashlib.shake_128(f"{path.name}-{block}".encode()).digest(n))
            done += n
            block += 1
    os.replace(tmp, path)


def file_set(root: Path, size: int, budget: int) -> list[Path]:
    """Distinct files of one size: enough to total `budget` bytes (more than the
    L3 cache, so the small sizes do not hash from CPU cache), at least 2, at most 4096."""
    count = max(2, min(4096, budget // size))
    d = root / f"{size}"
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / f"f{i:04d}.bin" for i in range(count)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        list(ex.map(lambda p: _make_file(p, size), paths))
    return paths


def spread(paths: list[Path], n: int) -> list[Path]:
    """n entries cycling over paths, shifted by one every 8 entries (the pool's
    chunk) so that two threads working side by side hash different files: two
    threads mapping one file at once contend on its locks, a case that real
    batches (distinct files) do not have."""
    return [paths[(i + i // 8) % len(paths)] for i in range(n)]


def time_batch(batch: FileBatch, threshold: int, threads: int, repeat: int,
               map_mode: int = lib.PB_MAP_AUTO) -> tuple[float, int]:
    """Seconds to hash the batch `repeat` times, and the bytes hashed."""
    old_mode = lib.pb_get_map_mode()
    lib.pb_set_map_mode(map_mode)
    try:
        with mmap_threshold(threshold):
            t0 = time.perf_counter()
            for _ in range(repeat):
                batch.hash(threads)
            secs = time.perf_counter() - t0
    finally:
        lib.pb_set_map_mode(old_mode)
    return secs, batch.total_size() * repeat


# name -> (threshold, map mode): read() forced, mmap forced, the core's own choice
VARIANTS = {
    "read": (READ_ONLY, lib.PB_MAP_AUTO),
    "mmap": (MMAP_ALL, lib.PB_MAP_ALWAYS),
    "auto": (DEFAULT_THRESHOLD, lib.PB_MAP_AUTO),
}


def crossover(rows: list[dict], threads: int) -> int | None:
    """Smallest size from which mmap is faster at every size up to the largest."""
    best = None
    for row in reversed(rows):
        if row[f"mmap_{threads}t"] > row[f"read_{threads}t"]:
            best = row["size"]
        else:
            break
    return best


def measure_size(args: argparse.Namespace, gate: QuietGate, paths: list[Path], size: int) -> dict:
    """One row: median GB/s of read, mmap and auto with 1 and 2 threads."""
    # Repeating paths is fine for large files (they do not fit in cache
    # anyway); it gives both threads work: the pool hands out 8 files at a time.
    n = max(16, len(paths))
    batch = FileBatch(spread(paths, n))
    repeat = max(1, -(-args.min_mib * MIB // (n * size)))
    for threshold, mode in VARIANTS.values():  # fault in code and buffers
        time_batch(batch, threshold, 2, 1, mode)
    samples: dict[str, list[float]] = {}
    kept = redone = 0
    disk = other = wall = 0.0
    while kept < args.runs:
        before = Probe.now()
        run: dict[str, float] = {}
        for t in THREADS:
            for name, (threshold, mode) in VARIANTS.items():
                secs, nbytes = time_batch(batch, threshold, t, repeat, mode)
                run[f"{name}_{t}t"] = nbytes / secs / 1e9
        load = Probe.now().since(before)
        disk += load.disk_mib
        if gate.noisy(load) and redone < 3 * args.runs and gate.wait():
            redone += 1  # something else had a core: measure again now that it is quiet
            continue
        kept += 1
        other += load.other_cpu
        wall += load.wall
        for key, value in run.items():
            samples.setdefault(key, []).append(value)
    row: dict = {"size": size, "files": len(paths), "batch": n, "repeat": repeat,
                 "disk_mib": disk, "other_cores": other / wall if wall else 0.0,
                 "redone": redone}
    for key, values in samples.items():
        row[key] = statistics.median(values)
    row["samples"] = samples
    return row


def run_crossover(args: argparse.Namespace, gate: QuietGate, state: str) -> dict:
    root = Path(args.dir)
    size_list = sizes(args.min_size * KIB, args.max_size * MIB, args.step)
    sets = {size: file_set(root, size, args.budget_mib * MIB) for size in size_list}
    print(f"\nread() vs mmap, page cache '{state}' (see pagecache.py), median of {args.runs} "
          f"runs, each >= {args.min_mib} MiB; simd={ffi.string(lib.pb_simd_name()).decode()}")
    head = f"{'size':>9} {'files':>6} |"
    for t in THREADS:
        head += (f" {'read ' + str(t) + 'T':>8} {'mmap ' + str(t) + 'T':>8}"
                 f" {'auto ' + str(t) + 'T':>8} {'winner':>6} |")
    print(head + f" {'disk':>5} {'other':>5} {'redo':>4}")
    rows = []
    for size in size_list:
        prepare(sets[size], state)  # just before timing: nothing ages in between
        row = measure_size(args, gate, sets[size], size)
        rows.append(row)
        line = f"{fmt_size(size):>9} {row['files']:>6} |"
        for t in THREADS:
            r, m, a = row[f"read_{t}t"], row[f"mmap_{t}t"], row[f"auto_{t}t"]
            line += f" {r:8.2f} {m:8.2f} {a:8.2f} {'mmap' if m > r else 'read':>6} |"
        print(f"{line} {row['disk_mib']:5.0f} {row['other_cores']:5.2f} {row['redone']:4}",
              flush=True)
    print("GB/s; winner: of read and mmap; auto: what the core does by default (from the\n"
          "default threshold up, mapped where the page cache holds PMD-size folios)\n"
          "disk: MiB read from disk while timing (0: the cache was warm); other: cores\n"
          "busy with other processes in the kept runs; redo: runs measured again because\n"
          f"other processes used more than {args.quiet} core meanwhile")
    result = {"state": state, "rows": rows, "crossover": {}}
    for t in THREADS:
        c = crossover(rows, t)
        result["crossover"][f"{t}t"] = c
        print(f"crossover, {t} thread{'s' if t > 1 else ''}: "
              + (f"mmap wins from {fmt_size(c)} up" if c else "mmap never wins at the top"))
    print(f"(core default threshold: {fmt_size(lib.pb_get_mmap_threshold())})")
    return result


def run_simd(args: argparse.Namespace, states: list[str]) -> dict:
    buf_len = 96 * KIB
    buf = ffi.new("uint8_t[]", os.urandom(buf_len))
    out = ffi.new("uint8_t[16]")
    calls = 20000

    def per_call(length: int) -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            lib.pb_hash_buffer(buf, length, out)
        return (time.perf_counter() - t0) / calls

    big = args.max_size * MIB
    paths = file_set(Path(args.dir), big, args.budget_mib * MIB)
    batch1 = FileBatch(paths)
    batch2 = FileBatch(spread(paths, 16))
    threshold = lib.pb_get_mmap_threshold()
    available = [n for n in SIMD_NAMES if lib.pb_set_simd(n.encode()) == 0]
    lib.pb_set_simd(b"auto")
    result: dict = {n: {} for n in available}

    for name in available:
        with simd(name):
            raw, net = [], []
            for _ in range(args.runs):
                empty = per_call(0)
                full = per_call(buf_len)
                raw.append(buf_len / full / 1e9)
                net.append(buf_len / max(full - empty, 1e-12) / 1e9)
            result[name]["buffer"] = statistics.median(raw)
            result[name]["buffer_net"] = statistics.median(net)
    for state in states:
        prepare(paths, state)
        samples: dict[str, list[float]] = {}
        for _ in range(args.runs):  # instruction sets interleaved within a run
            for name in available:
                with simd(name):
                    for key, batch, t in (("1t", batch1, 1), ("2t", batch2, 2)):
                        secs, nbytes = time_batch(batch, threshold, t, 1)
                        samples.setdefault(f"{name} {key}", []).append(nbytes / secs / 1e9)
        for name in available:
            for key in ("1t", "2t"):
                result[name][f"{state}_{key}"] = statistics.median(samples[f"{name} {key}"])

    print(f"\nXXH3-128 per instruction set (median of {args.runs}). 96K: {calls} calls of "
          f"pb_hash_buffer on 96 KiB in cache;\n(-call): minus an empty call's cost (cffi, GIL). "
          f"Files: {len(paths)} x {fmt_size(big)} (1T) and 16 of them (2T), default threshold "
          f"({fmt_size(threshold)}), page cache {' / '.join(states)}")
    print_simd(result, states)
    return result


def print_simd(result: dict, states: list[str]) -> None:
    head = f"{'simd':>7} | {'96K GB/s':>9} {'(-call)':>8} |"
    for state in states:
        head += f" {state + ' 1T':>11} {state + ' 2T':>11} |"
    print(head)
    for name, row in result.items():
        line = f"{name:>7} | {row['buffer']:9.2f} {row['buffer_net']:8.2f} |"
        for state in states:
            line += f" {row[f'{state}_1t']:11.2f} {row[f'{state}_2t']:11.2f} |"
        print(line)
    for name in SIMD_NAMES:
        if name not in result:
            print(f"{name:>7} | not supported by this CPU")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", default=str(DEFAULT_DIR), help="where the test files are kept")
    p.add_argument("--runs", type=int, default=7, help="runs per measurement (median)")
    p.add_argument("--min-size", type=int, default=16, help="smallest size, KiB")
    p.add_argument("--max-size", type=int, default=256, help="largest size, MiB")
    p.add_argument("--step", type=int, default=2, choices=(2, 4), help="size ratio between rows")
    p.add_argument("--min-mib", type=int, default=256, help="MiB hashed per run, at least")
    p.add_argument("--budget-mib", type=int, default=64,
                   help="distinct bytes per size (>= L3 size keeps small files out of cache)")
    p.add_argument("--quiet", type=float, default=0.25,
                   help="redo a run (at most 3 x --runs times per size) once it is quiet "
                        "again, when other processes kept more than this many cores busy "
                        "during it; --max-wait caps the total seconds spent waiting")
    p.add_argument("--max-wait", type=float, default=120.0, help="see --quiet")
    p.add_argument("--cache", choices=(*STATES, "both", "all"), default="both",
                   help="page-cache state of the files when timed (see pagecache.py); "
                        "both: written and reread; all: every state")
    p.add_argument("--simd", action="store_true", help="also print the instruction-set table")
    p.add_argument("--simd-only", action="store_true", help="only the instruction-set table")
    p.add_argument("--json", metavar="OUT", help="save the results as JSON")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")

    states = {"both": ["written", "reread"], "all": list(STATES)}.get(args.cache, [args.cache])
    result: dict = {"cpu": cpu_model(), "nproc": os.cpu_count(), "runs": args.runs}
    if not args.simd_only:
        gate = QuietGate(args.quiet, args.max_wait)
        result["crossover"] = [run_crossover(args, gate, state) for state in states]
        result["waited_s"] = gate.waited
        if gate.waited:
            print(f"\nwaited {gate.waited:.0f} s in all for other processes to calm down")
    if args.simd or args.simd_only:
        result["simd"] = run_simd(args, states)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
