"""Switching a DVC project to pivotbuild: `import-dvc` on a 100,000-file directory output, and
the first no-op `pivotbuild repro` after it beside `dvc repro` on the same project.

The project (under WORK, default bench-data/import-dvc, git-ignored) is made by real DVC:
`git init` + `dvc init` (pipeline_projects.dvc_init), then `dvc repro` of

    make   python3 gen.py out N     deps gen.py                    outs out/ (N files, 100
                                                                    directories, 64-4,095 random
                                                                    bytes each, seeded)
    count  find out -type f | wc -l > count.txt   deps out         outs count.txt

so dvc.lock holds DVC's own md5s and `.dvc/cache` its `.dir` listing. Then, --runs times,
each run starting from the DVC project as DVC left it (pivot.toml, .pivotbuild/ and *.pvt
removed; pivotbuild's cache is inside .pivotbuild/, so it starts empty):

    import-dvc       `pivotbuild import-dvc`: convert, check every file of out/ against
                     DVC's listing (md5 in the C core, one batch), commit both stages
                     (hash with XXH3, store out/'s files in pivotbuild's cache, write locks)
    repro (first)    the first `pivotbuild repro` after that import (nothing to run; whether
                     the no-op fast path answered it is recorded)
    repro (again)    a second one
    dvc repro        `dvc repro` on the same project, nothing to run (timed between the
                     pivotbuild runs, before the next import)
    dvc status       the same for `dvc status`

and in-process, on the same out/: the md5 check alone (hashes.check_path against DVC's
cached listing, which is what import-dvc does) with the C core and with the pure-Python
fallback (PIVOTBUILD_PURE_PYTHON=1: hashlib, one file after another), the page cache warm.

    python benchmarks/compare_import_dvc.py [--files 100000] [--runs 3] [--work DIR]
        [--dvc-venv bench-data/dvc-venv] [--json OUT] [--quiet-cores 0.5]
        [--quiet-timeout 300]

DVC comes from --dvc-venv (`pip install dvc` into it if missing, as compare_pipeline.py
does). Wall clock of whole processes, median (min-max) of the runs. Each timed command
starts once other processes keep at most --quiet-cores busy (or after --quiet-timeout of
waiting); the most they used during each command's runs is printed beside it (sysload.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchenv import BENCH_DATA, ENV, BenchError, cpu_model, log, run
from pipeline_projects import dvc_init
from sysload import Probe, wait_quiet

GEN = """\
import os, random, sys
out, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(0)
for i in range(n):
    d = os.path.join(out, f"{i % 100:02}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{i:06}.bin"), "wb") as f:
        f.write(rng.randbytes(rng.randrange(64, 4096)))
"""

DVC_YAML = """\
stages:
  make:
    cmd: python3 gen.py out {n}
    deps:
    - gen.py
    outs:
    - out
  count:
    cmd: find out -type f | wc -l > count.txt
    deps:
    - out
    outs:
    - count.txt
"""

MD5_CHECK = """\
import json, sys, time
from pathlib import Path
from pivotbuild.dvc.hashes import LockedPath, Md5Memo, check_path
from pivotbuild.hashing import get_backend
root = Path(sys.argv[1])
entry = json.loads(sys.argv[2])
started = time.perf_counter()
problem = check_path(root, LockedPath(**entry), Md5Memo())
print(json.dumps({"seconds": time.perf_counter() - started, "problem": problem,
                  "backend": get_backend().name}))
"""


def find_pivotbuild() -> list[str]:
    beside = Path(sys.executable).parent / "pivotbuild"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [sys.executable, "-m", "pivotbuild"]


def find_dvc(venv: Path) -> str:
    dvc = venv / "bin" / "dvc"
    if not dvc.exists():
        log(f"installing DVC into {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "dvc"], check=True)
    return str(dvc)


QUIET = {"cores": 0.5, "timeout": 300.0}  # set from the command line
OTHER: dict[str, list[float]] = {}  # cores other processes kept busy, per timed command


def timed(argv: list[str], cwd: Path, env: dict[str, str] | None = None,
          output: list[str] | None = None, label: str = "") -> float:
    """Wall seconds of one run, started once other processes use at most QUIET cores (or
    QUIET timeout passed); what it printed is appended to ``output``, and the cores others
    used meanwhile to OTHER[label]."""
    wait_quiet(QUIET["cores"], timeout=QUIET["timeout"])
    before = Probe.now()
    started = time.perf_counter()
    r = subprocess.run(argv, cwd=cwd, env=env or ENV, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, check=False)
    took = time.perf_counter() - started
    OTHER.setdefault(label or argv[-1], []).append(Probe.now().since(before).other_cores)
    if r.returncode != 0:
        tail = "\n".join(r.stdout.strip().splitlines()[-15:])
        raise BenchError(f"`{' '.join(argv)}` exited {r.returncode}:\n{tail}")
    if output is not None:
        output.append(r.stdout)
    return took


def make_project(work: Path, dvc: str, files: int) -> tuple[Path, float]:
    """The DVC project, made (and `dvc repro`ed) once and reused; the first repro's time."""
    proj = work / f"dvc-{files}"
    done = proj / ".bench-done"
    if done.exists():
        return proj, float(done.read_text())
    shutil.rmtree(proj, ignore_errors=True)
    proj.mkdir(parents=True)
    dvc_init(dvc, "git", proj)
    (proj / "gen.py").write_text(GEN)
    (proj / "dvc.yaml").write_text(DVC_YAML.format(n=files))
    log(f"dvc repro: making {files:,} files and caching them (once)")
    took = timed([dvc, "repro", "-q"], proj)
    run(["git", "add", "-A"], proj)
    run(["git", "commit", "-q", "-m", "dvc project"], proj)
    done.write_text(f"{took}")
    return proj, took


def reset_pivotbuild(proj: Path) -> None:
    (proj / "pivot.toml").unlink(missing_ok=True)
    shutil.rmtree(proj / ".pivotbuild", ignore_errors=True)
    for pvt in proj.glob("*.pvt"):
        pvt.unlink()


def summary(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def show(label: str, s: dict[str, float]) -> str:
    return f"| {label} | {s['median']:.3f} s ({s['min']:.3f}-{s['max']:.3f}) |"



def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--work", type=Path, default=BENCH_DATA / "import-dvc")
    p.add_argument("--dvc-venv", type=Path, default=BENCH_DATA / "dvc-venv")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--quiet-cores", type=float, default=0.5,
                   help="start each timed command once others use at most this many cores")
    p.add_argument("--quiet-timeout", type=float, default=300.0,
                   help="... or after this many seconds of waiting")
    args = p.parse_args()
    QUIET.update(cores=args.quiet_cores, timeout=args.quiet_timeout)

    pb = find_pivotbuild()
    dvc = find_dvc(args.dvc_venv)
    proj, first_dvc_repro = make_project(args.work, dvc, args.files)
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    out = next(o for o in lock["stages"]["make"]["outs"] if o["path"] == "out")
    entry = {"path": "out", "md5": out["md5"], "hash_name": "md5"}
    times: dict[str, list[float]] = {k: [] for k in (
        "import-dvc", "pivotbuild repro (first)", "pivotbuild repro (again)",
        "pivotbuild status", "dvc repro", "dvc status")}
    md5: dict[str, list[float]] = {"core": [], "python": []}
    fast: list[bool] = []
    log(f"load average {loadavg()} at the start; {args.runs} runs")
    for i in range(args.runs):
        reset_pivotbuild(proj)
        times["dvc repro"].append(timed([dvc, "repro", "-q"], proj, label="dvc repro"))
        times["dvc status"].append(timed([dvc, "status", "-q"], proj, label="dvc status"))
        times["import-dvc"].append(timed([*pb, "-q", "import-dvc"], proj, label="import-dvc"))
        said: list[str] = []  # did the no-op fast path answer the first repro?
        times["pivotbuild repro (first)"].append(timed(
            [*pb, "-q", "repro"], proj, {**ENV, "PIVOTBUILD_FASTPATH_TRACE": "1"}, said,
            label="pivotbuild repro (first)"))
        fast.append("fast path answered" in said[0])
        times["pivotbuild repro (again)"].append(timed([*pb, "-q", "repro"], proj,
                                                       label="pivotbuild repro (again)"))
        times["pivotbuild status"].append(timed([*pb, "-q", "status"], proj,
                                                label="pivotbuild status"))
        for backend, extra in (("core", {}), ("python", {"PIVOTBUILD_PURE_PYTHON": "1"})):
            wait_quiet(QUIET["cores"], timeout=QUIET["timeout"])
            r = subprocess.run([sys.executable, "-c", MD5_CHECK, str(proj), json.dumps(entry)],
                               env={**ENV, **extra}, capture_output=True, text=True, check=True)
            found = json.loads(r.stdout)
            if found["problem"] is not None or found["backend"] != backend:
                raise BenchError(f"md5 check with {backend}: {found}")
            md5[backend].append(found["seconds"])
        log(f"run {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
    # what the first repro did: nothing ran
    check = subprocess.run([*pb, "status", "--json"], cwd=proj, env=ENV, capture_output=True,
                           text=True, check=True)
    statuses = {s["name"]: s["status"] for s in json.loads(check.stdout)["stages"]}

    result = {
        "files": args.files, "runs": args.runs, "cpu": cpu_model(), "cores": os.cpu_count(),
        "load_at_end": loadavg(), "first_dvc_repro_s": first_dvc_repro,
        "times": {k: summary(v) for k, v in times.items()},
        "md5_check_in_process": {k: summary(v) for k, v in md5.items()},
        "status_after": statuses, "first_repro_fast_path": fast,
        "other_cores": OTHER,
    }
    print(f"{args.files:,} files in out/, {args.runs} runs, {cpu_model()}, "
          f"{os.cpu_count()} cores, load average {loadavg()} at the end")
    print(f"(the first `dvc repro`, which made and cached them: {first_dvc_repro:.1f} s)\n")
    print("| command | wall time, median (min-max) | other processes (cores, max) |\n"
          "|---|---|---|")
    for k, v in result["times"].items():
        print(show(k, v) + f" {max(OTHER.get(k, [0.0])):.2f} |")
    for k, v in result["md5_check_in_process"].items():
        print(show(f"md5 check of out/ against DVC's listing, {k}", v) + " |")
    print(f"\npivotbuild status after: {statuses}; the no-op fast path answered the first "
          f"repro after the import in {sum(fast)} of {len(fast)} runs")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"error: {exc}")
        sys.exit(1)
