"""What discovering Python imports and tracing reads cost a command (issue 18).

    python benchmarks/bench_discover.py [--runs 15] [--python PATH] [--files 10000]
                                        [--no-bytecode] [--json OUT]

Two measurements, each as whole processes started the way a stage's commands start
(``/bin/sh -c CMD``), plain and instrumented runs interleaved, medians of ``--runs``:

- discover: ``python main.py`` where main.py imports 200 small project modules (a package of
  200 files of ~10 lines each), without and with ``discover = ["python"]``'s recorder
  (pivotbuild/discover/ first on PYTHONPATH, its variables set). Target: <= 20 ms added.
- audit: ``cat files/* > /dev/null`` over ``--files`` small files, plain, under the preload
  tracer (pivotbuild/_pbtrace.so), and under strace (the fallback), as ratios to plain.

Python writes and reuses bytecode caches as it does for a user (PYTHONDONTWRITEBYTECODE is
removed from the commands' environment; ``--no-bytecode`` keeps it, so that every run compiles
the 200 modules and the recorder again). Wall time is what a user waits; CPU time (user +
system of the command and everything it waited for, from wait4) is steadier on a shared
machine. Both are printed, with the load average at the start.
Nothing here asserts on time. The data is made in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pivotbuild import audit, discovered

MODULE = '''"""Module {i}: a little of everything a small project module has."""
import os

VALUE = {i}


def twice(x):
    return 2 * x + VALUE


class Thing{i}:
    name = os.path.basename(__file__)
'''


def run_once(command: str, cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``/bin/sh -c command``."""
    start = time.perf_counter()
    proc = subprocess.Popen(["/bin/sh", "-c", command], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {command}")
    return wall, usage.ru_utime + usage.ru_stime


def measure(variants: dict[str, tuple[str, dict[str, str]]], cwd: Path, runs: int,
            before_each: dict[str, object] | None = None) -> dict[str, dict[str, float]]:
    """Median wall and CPU per variant, runs interleaved (one of each, ``runs`` times)."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for name, (command, env) in variants.items():  # one warm-up each
        run_once(command, cwd, env)
    for _ in range(runs):
        for name, (command, env) in variants.items():
            if before_each and name in before_each:
                before_each[name]()  # type: ignore[operator]
            samples[name].append(run_once(command, cwd, env))
    return {name: {"wall_ms": 1000 * statistics.median(w for w, _ in s),
                   "cpu_ms": 1000 * statistics.median(c for _, c in s)}
            for name, s in samples.items()}


def bench_discover(work: Path, python: str, runs: int, bytecode: bool) -> dict[str, object]:
    root = work / "discover"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    for i in range(200):
        (root / "pkg" / f"m{i:03d}.py").write_text(MODULE.format(i=i))
    (root / "main.py").write_text("".join(f"import pkg.m{i:03d}\n" for i in range(200)))
    record = work / "discover.rec"
    dropped = {"PYTHONPATH"} | ({"PYTHONDONTWRITEBYTECODE"} if bytecode else set())
    base = {k: v for k, v in os.environ.items() if k not in dropped}
    hooked = {**base, **discovered.environ(record, root, base)}
    command = f"{python} main.py"
    result = measure({"plain": (command, base), "discover": (command, hooked)}, root, runs,
                     {"discover": lambda: record.unlink(missing_ok=True)})
    found = discovered.read([record], root)
    assert len(found) == 202, found  # 200 modules, the package, the script
    plain, disc = result["plain"], result["discover"]
    return {**result, "added_wall_ms": disc["wall_ms"] - plain["wall_ms"],
            "added_cpu_ms": disc["cpu_ms"] - plain["cpu_ms"], "modules": 200, "python": python,
            "bytecode": bytecode}


def bench_audit(work: Path, files: int, runs: int) -> dict[str, object]:
    root = work / "audit"
    (root / "files").mkdir(parents=True)
    for i in range(files):
        (root / "files" / f"f{i:05d}.txt").write_text(f"{i}\n")
    command = "cat files/* > /dev/null"
    base = dict(os.environ)
    variants: dict[str, tuple[str, dict[str, str]]] = {"plain": (command, base)}
    tracers = {}
    for name, how in (("preload", {}), ("strace", {"library": None})):
        if name == "preload" and not audit.LIBRARY.is_file():
            print("pivotbuild/_pbtrace.so is not built: no preload figures", file=sys.stderr)
            continue
        if name == "strace" and audit.find_strace() is None:
            print("no usable strace: no strace figures", file=sys.stderr)
            continue
        t = audit.tracer(root, work / f"{name}.trace", cwd=root, **how)  # type: ignore[arg-type]
        tracers[name] = t
        variants[name] = (t.command(command), t.environ(base))
    before = {name: (lambda t=t: audit.tracer(  # a fresh trace file before each run
        root, t.trace_file, cwd=root, **({} if t.method == audit.PRELOAD else {"library": None})))
        for name, t in tracers.items()}
    result = measure(variants, root, runs, before)
    for name, t in tracers.items():
        seen = audit.read_trace(t.trace_file, root).paths
        assert len([p for p in seen if p.startswith("files/")]) == files, (name, len(seen))
    plain = result["plain"]
    ratios = {f"{name}_ratio_wall": result[name]["wall_ms"] / plain["wall_ms"]
              for name in tracers}
    ratios |= {f"{name}_ratio_cpu": result[name]["cpu_ms"] / plain["cpu_ms"] for name in tracers}
    return {**result, **ratios, "files": files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--no-bytecode", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-discover-") as tmp:
        work = Path(tmp)
        disc = bench_discover(work, args.python, args.runs, not args.no_bytecode)
        aud = bench_audit(work, args.files, args.runs)
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"({os.cpu_count()} cores); medians of {args.runs} runs")
    caches = "bytecode cached" if disc["bytecode"] else "no bytecode caches"
    print(f"discover, {disc['modules']} project modules ({disc['python']}, {caches}):")
    for name in ("plain", "discover"):
        r = disc[name]
        print(f"  {name:9s} wall {r['wall_ms']:8.1f} ms   cpu {r['cpu_ms']:8.1f} ms")
    print(f"  added     wall {disc['added_wall_ms']:8.1f} ms   cpu {disc['added_cpu_ms']:8.1f} ms")
    print(f"audit, cat of {aud['files']} files:")
    for name in ("plain", "preload", "strace"):
        if name in aud:
            r = aud[name]
            ratio = "" if name == "plain" else (
                f"   x{aud[f'{name}_ratio_wall']:.2f} wall, x{aud[f'{name}_ratio_cpu']:.2f} cpu")
            print(f"  {name:9s} wall {r['wall_ms']:8.1f} ms   cpu {r['cpu_ms']:8.1f} ms{ratio}")
    if args.json:
        args.json.write_text(json.dumps({"load": load, "runs": args.runs, "discover": disc,
                                         "audit": aud}, indent=2))


if __name__ == "__main__":
    main()
