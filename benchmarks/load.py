"""Load: a huge directory output and a huge pipeline, wall time and peak RSS.

    python benchmarks/load.py stages [--stages 5000]   # status, no-op repro, dag --json
    python benchmarks/load.py tree [--files 1000000]   # hash, then commit as one output,
                                                       # at 1/10 and full size: linearity

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


def _make_tree(files: int) -> Path:
    """bench-data/load/tree-N: data/ holds N tiny files, 1,000 per directory; made once."""
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
    return root


TREE_STEPS = ("hash, empty memo", "hash, memo warm", "commit (store + lock)",
              "status after commit")


def _tree_times(files: int, runs: int) -> dict[str, tuple[float, float]]:
    """{step: (median wall s, peak RSS MiB)} for one tree. Before timing, the whole tree is
    read once (`hash --no-state`, untimed) so that every size starts from the same state:
    inodes, directories and contents in memory, as in compare_hash.py's 'reread'."""
    root = _make_tree(files)
    shutil.rmtree(root / ".pivotbuild", ignore_errors=True)
    timed([*pivotbuild(), "hash", "--no-state", "data"], root)
    results: dict[str, tuple[float, float]] = {}

    def measure(step: str, args: list[str], before=None, times: int = runs) -> None:
        samples = []
        for _ in range(times):
            if before:
                before()
            samples.append(timed([*pivotbuild(), *args], root))
        wall = sorted(w for w, _ in samples)[len(samples) // 2]
        results[step] = (wall, max(r for _, r in samples))
        print(f"{files} files, {step:<22} {wall:7.2f} s   peak RSS {results[step][1]:7.1f} MiB"
              f"   (median of {times})")

    def forget() -> None:
        shutil.rmtree(root / ".pivotbuild", ignore_errors=True)

    measure(TREE_STEPS[0], ["hash", "data"], before=forget)
    measure(TREE_STEPS[1], ["hash", "data"])
    measure(TREE_STEPS[2], ["commit"], before=forget, times=1 if files >= 500_000 else runs)
    measure(TREE_STEPS[3], ["status"])
    return results


def tree(files: int, runs: int) -> None:
    """The tree at a tenth of the size and at full size, the same way in one run: the time
    should scale linearly (target: full <= 1.2 x 10 x the tenth)."""
    small = _tree_times(files // 10, runs)
    full = _tree_times(files, runs)
    print(f"\nlinearity: time at {files} files / (10 x time at {files // 10})")
    for step in TREE_STEPS:
        ratio = full[step][0] / (10 * small[step][0])
        print(f"  {step:<22} {ratio:5.2f}x   {'PASS' if ratio <= 1.2 else 'MISS'} (<= 1.2x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("stages", "tree"))
    parser.add_argument("--stages", type=int, default=5000)
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3, help="medians of this many runs")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    if args.what == "stages":
        stages(args.stages)
    else:
        tree(args.files, args.runs)


if __name__ == "__main__":
    main()
