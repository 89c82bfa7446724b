"""Load: a huge directory output and a huge pipeline, wall time and peak RSS.

    python benchmarks/load.py stages [--stages 5000]   # status, no-op repro, dag --json
    python benchmarks/load.py tree [--files 1000000]   # hash, then commit as one output

Each command runs as its own process; peak RSS is the child's ru_maxrss. Scratch data
goes to bench-data/load/ (git-ignored).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRATCH = HERE.parent / "bench-data" / "load"


def pivotbuild() -> list[str]:
    beside = Path(sys.executable).parent / "pivotbuild"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "pivotbuild"]


def timed(args: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one child process (wait4's rusage); it must succeed."""
    start = time.monotonic()
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {err.decode(errors='replace')[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def stages(count: int) -> None:
    root = SCRATCH / f"stages-{count}"
    if not (root / ".pivotbuild" / "locks").is_dir():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        lines = []
        for i in range(count):
            # chains of 10 with a fan-in every 100 stages: edges as well as nodes
            dep = f"o{i - 1}" if i % 10 else "seed"
            extra = f', "o{i - 50}"' if i % 100 == 0 and i >= 50 else ""
            lines.append(f'[stages.s{i:05d}]\ncmd = "cat {dep} > o{i}"\n'
                         f'deps = ["{dep}"{extra}]\nouts = ["o{i}"]\n')
        (root / "pivot.toml").write_text("".join(lines))
        (root / "seed").write_text("seed\n")
        print(f"first repro of {count} stages (untimed setup)...", file=sys.stderr)
        wall, _ = timed([*pivotbuild(), "repro", "-j", "2"], root)
        print(f"  took {wall:.1f} s", file=sys.stderr)
    for label, args in (("status", ["status"]), ("no-op repro", ["repro"]),
                        ("dag --json", ["dag", "--json"])):
        runs = [timed([*pivotbuild(), *args], root) for _ in range(3)]
        wall = sorted(r[0] for r in runs)[1]
        rss = max(r[1] for r in runs)
        print(f"{count} stages, {label:<12} median {wall:6.2f} s   peak RSS {rss:7.1f} MiB")


def tree(files: int) -> None:
    root = SCRATCH / f"tree-{files}"
    data = root / "data"
    if not (root / "ready").exists():
        shutil.rmtree(root, ignore_errors=True)
        data.mkdir(parents=True)
        print(f"writing {files} small files (untimed setup)...", file=sys.stderr)
        per_dir = 1000
        for d in range(0, files, per_dir):
            sub = data / f"d{d // per_dir:04d}"
            sub.mkdir()
            for i in range(d, min(d + per_dir, files)):
                (sub / f"f{i:07d}").write_bytes(b"%d\n" % i)
        (root / "pivot.toml").write_text('[stages.gen]\ncmd = "true"\nouts = ["data"]\n')
        (root / "ready").write_text("")
        subprocess.run(["sync"], check=False)
    shutil.rmtree(root / ".pivotbuild", ignore_errors=True)
    for label, args in (("hash, empty memo", ["hash", "data"]),
                        ("hash, memo warm", ["hash", "data"]),
                        ("commit (store + lock)", ["commit"]),
                        ("status after commit", ["status"])):
        wall, rss = timed([*pivotbuild(), *args], root)
        print(f"{files} files, {label:<22} {wall:7.2f} s   peak RSS {rss:7.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("stages", "tree"))
    parser.add_argument("--stages", type=int, default=5000)
    parser.add_argument("--files", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    if args.what == "stages":
        stages(args.stages)
    else:
        tree(args.files)


if __name__ == "__main__":
    main()
