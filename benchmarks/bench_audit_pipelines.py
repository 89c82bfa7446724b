"""What `discover = ["python"]` and `repro --audit` cost the example pipelines (issue 18).

    python benchmarks/bench_audit_pipelines.py [--runs 7] [--jobs 1] [--json OUT]
                                                [--examples datapipe,cbuild]

Each example (examples/datapipe, examples/cbuild) is copied into a temporary directory three
times and run with ``pivotbuild -q repro -f -j JOBS`` (every stage re-runs, committing as a
user's repro does):

- plain: the example as it is;
- discover: a copy whose every stage table has ``discover = ["python"]`` (in cbuild no
  stage starts Python: that row shows what the setting costs a stage that does not use it);
- audit: the example as it is, with ``--audit`` (every command under the read tracer).

The three are interleaved (plain, discover, audit; ``--runs`` times, after one warm-up each)
and their medians (and the fastest run, the least disturbed) given with ratios to plain. Wall time is what a user waits; CPU time (user
+ system of pivotbuild and its commands, from wait4) is steadier on a shared machine. The load
average at the start and, per variant, the median number of cores other processes kept busy
while it ran (benchmarks/sysload.py) say how far to trust the figures. Every lock of a discover copy
must have its ``discovered`` list (empty in both examples: their scripts are declared deps
and import only the standard library), and an audit run must name no undeclared read (the
examples declare everything): the script checks both and stops if not.
Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.sysload import Probe

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("plain", "discover", "audit")


def with_discover(toml: str) -> str:
    """pivot.toml with ``discover = ["python"]`` as the first key of every stage table."""
    return re.sub(r"^(\[stages\.[^\]]+\]\n)", r'\1discover = ["python"]\n', toml,
                  flags=re.MULTILINE)


def prepare(example: str, work: Path) -> dict[str, Path]:
    """A copy of the example per variant, each run once (so every later run is a forced
    re-run of a committed project)."""
    roots = {}
    for variant in VARIANTS:
        root = work / f"{example}-{variant}"
        shutil.copytree(REPO / "examples" / example, root,
                        ignore=shutil.ignore_patterns(".pivotbuild", "__pycache__"))
        if variant == "discover":
            toml = root / "pivot.toml"
            toml.write_text(with_discover(toml.read_text()))
        roots[variant] = root
    return roots


def command(variant: str, jobs: int) -> list[str]:
    extra = ["--audit", "--json"] if variant == "audit" else []
    return [sys.executable, "-m", "pivotbuild", "-q", "repro", "-f", "-j", str(jobs), *extra]


def run_once(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float, str]:
    """(wall s, CPU s of pivotbuild and its commands, other processes' cores, stdout) of one
    pivotbuild run."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        probe = Probe.now()
        start = time.perf_counter()
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        load = Probe.now().since(probe)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args)} in {cwd} failed ({proc.returncode}):\n"
                             f"{err.read().decode(errors='replace')}")
        return wall, usage.ru_utime + usage.ru_stime, load.other_cores, out.read().decode()


def check(example: str, roots: dict[str, Path], audit_out: str) -> None:
    """Each lock of the discover copy has a discovered list; the audit named nothing."""
    stages = json.loads(audit_out)["stages"]
    named = {s["name"]: s["undeclared_reads"] for s in stages if s["undeclared_reads"]}
    if named:
        raise SystemExit(f"{example}: the audit named undeclared reads: {named}")
    locks = sorted((roots["discover"] / ".pivotbuild" / "locks").glob("*.json"))
    found = {p.stem: json.loads(p.read_text()).get("discovered") for p in locks}
    if not found or any(v is None for v in found.values()):
        raise SystemExit(f"{example}: a discover lock has no 'discovered' list: {found}")


def bench(example: str, work: Path, runs: int, jobs: int) -> dict[str, object]:
    roots = prepare(example, work)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    samples: dict[str, list[tuple[float, float, float]]] = {v: [] for v in VARIANTS}
    last_audit = ""
    for variant in VARIANTS:  # first run (commits), then one warm-up
        for _ in range(2):
            last = run_once(command(variant, jobs), roots[variant], env)
            if variant == "audit":
                last_audit = last[3]
    check(example, roots, last_audit)
    for _ in range(runs):
        for variant in VARIANTS:
            wall, cpu, other, out = run_once(command(variant, jobs), roots[variant], env)
            samples[variant].append((wall, cpu, other))
            if variant == "audit":
                last_audit = out
    check(example, roots, last_audit)
    result: dict[str, object] = {}
    for variant, s in samples.items():
        result[variant] = {"wall_ms": 1000 * statistics.median(w for w, _, _ in s),
                           "cpu_ms": 1000 * statistics.median(c for _, c, _ in s),
                           "min_wall_ms": 1000 * min(w for w, _, _ in s),
                           "other_cores": statistics.median(o for _, _, o in s)}
    plain = result["plain"]
    assert isinstance(plain, dict)
    for variant in ("discover", "audit"):
        row = result[variant]
        assert isinstance(row, dict)
        row["ratio_wall"] = row["wall_ms"] / plain["wall_ms"]
        row["ratio_cpu"] = row["cpu_ms"] / plain["cpu_ms"]
        row["ratio_min_wall"] = row["min_wall_ms"] / plain["min_wall_ms"]
    stage_count = len(list((roots["plain"] / ".pivotbuild" / "locks").glob("*.json")))
    return {**result, "stages": stage_count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--examples", default="datapipe,cbuild")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    load = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        for example in args.examples.split(","):
            results[example] = bench(example, Path(tmp), args.runs, args.jobs)
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"({os.cpu_count()} cores); repro -f -j {args.jobs}; medians of {args.runs} runs")
    for example, res in results.items():
        print(f"{example} ({res['stages']} stages):")
        for variant in VARIANTS:
            r = res[variant]
            assert isinstance(r, dict)
            ratio = "" if variant == "plain" else (
                f"   x{r['ratio_wall']:.2f} wall, x{r['ratio_cpu']:.2f} cpu, "
                f"x{r['ratio_min_wall']:.2f} min")
            print(f"  {variant:9s} wall {r['wall_ms']:7.1f} ms   cpu {r['cpu_ms']:7.1f} ms   "
                  f"min {r['min_wall_ms']:7.1f} ms   others {r['other_cores']:.2f} cores{ratio}")
    if args.json:
        args.json.write_text(json.dumps({"load": load, "runs": args.runs, "jobs": args.jobs,
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
