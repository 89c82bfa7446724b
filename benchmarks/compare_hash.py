"""`pivotbuild hash` against its peers, as whole processes, on a warm page cache.

The corpus (benchmarks/corpus.py) lives at PROJECT/data, with an empty
PROJECT/pivot.toml beside it so that `pivotbuild hash` keeps its memo at
PROJECT/.pivotbuild/state.db. Every command runs with cwd=PROJECT, once untimed
and then --runs times, the commands interleaved round-robin so that drift and
background load hit them all alike; the small part (data/small) and the large
part (data/large) are measured and tabled separately. Before a part is timed
its files are put in a known page-cache state (--cache, see pagecache.py), and
every row shows how much was read from disk meanwhile (0 = warm).

    a  pivotbuild hash DIR                  memo deleted before each run
    b  pivotbuild hash DIR                  again, nothing changed (memo warm)
    c  find | xargs -0 -n 2000 -P2 xxhsum -H2   the reference: ratios are to it
    d  find | xargs -0 -n 2000 -P2 b3sum, and b3sum FILES (large part: b3sum
       threads inside one file, so one process over all large files)
    e  a plain Python loop: os.walk + xxhash.xxh3_128, 1 MiB reads
    f  find -printf '%s %T@ %i\\n'            the stat-only floor
    g  PIVOTBUILD_PURE_PYTHON=1 pivotbuild hash DIR   the fallback, memo deleted
    s  pivotbuild hash --help               start-up alone, for reading the others
    a0 BASELINE hash DIR                    with --baseline: another build of pivotbuild
                                            (e.g. the previous commit's), memo deleted

Besides the wall-clock median, each row gives the median CPU seconds (user + system)
the command's processes used: on a shared machine CPU time moves less than wall time,
and its ratios say where the time goes. The commands run in benchenv.ENV: bytecode
cached (in bench-data/pycache), as on a user's machine; with PYTHONDONTWRITEBYTECODE=1
an editable install would compile its modules again on every run.

Targets: small a <= 0.85 x c; large a <= 0.7 x c and <= 0.6 x the faster b3sum;
no-op (small) b <= 3 x f.

    python benchmarks/compare_hash.py [PROJECT] [--runs 5] [--json OUT]
        [--small N --large K --large-mib M --seed S] [--parts small,large]
        [--cache reread|written|small|as-is] [--baseline PIVOTBUILD]
        [--quiet 0.25 --retries 3 --max-wait 30]

Default PROJECT: bench-data/<corpus tag> in the repository (git-ignored).
Quick run: --small 5000 --large 2 --large-mib 32 --runs 3 (under a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchenv import ENV, cpu_model
from corpus import CorpusParams, add_params_arguments, generate, params_from_args
from pagecache import STATES, pmd_share, prepare, read_all
from sysload import Probe, QuietGate

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
XARGS = "xargs -0 -n 2000 -P2"
NOISE_FLOOR_S = 0.05  # other CPU below this is clock-tick noise, never a reason to redo
# This VM pages out page cache left idle for about a minute: after a pause this long (waiting
# for other processes to calm down) the part's page-cache state is prepared again.
IDLE_REPREPARE_S = 20.0

PY_LOOP = r"""
import os, sys, xxhash
buf = bytearray(1 << 20)
view = memoryview(buf)
for root, dirs, files in os.walk(sys.argv[1]):
    dirs.sort()
    for name in sorted(files):
        h = xxhash.xxh3_128()
        with open(os.path.join(root, name), "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])
        h.hexdigest()
"""


@dataclass
class Command:
    key: str                      # a..g, as in the module docstring
    label: str
    argv: list[str]
    env: dict[str, str] | None = None
    reset_memo: bool = False      # delete PROJECT/.pivotbuild before each run
    samples: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # user + system seconds of each run
    disk_mib: list[float] = field(default_factory=list)  # read from disk during each run
    other_cpu: float = 0.0        # CPU seconds other processes used during the kept runs
    redone: int = 0               # runs thrown away because other processes were busy
    error: str | None = None

    @property
    def shown(self) -> str:
        if self.argv[:2] == ["sh", "-c"]:
            return self.argv[2]
        return shlex.join(self.argv)

    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples and not self.error else None

    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu and not self.error else None


def find_pivotbuild() -> list[str]:
    """The real console script (not a pyenv shim, which adds a bash + pyenv
    start-up to every run), else `python -m pivotbuild`."""
    beside = Path(sys.executable).parent / "pivotbuild"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [sys.executable, "-m", "pivotbuild"]


def pivotbuild_ready(pb: list[str]) -> str | None:
    """None if `pivotbuild hash` is usable, else why not."""
    try:
        r = subprocess.run([*pb, "hash", "--help"], check=False, capture_output=True, text=True,
                           timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if r.returncode != 0:
        return (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
    return None


def commands(part: str, files: list[str], pb: list[str], pb_error: str | None,
             baseline: list[str] | None = None) -> list[Command]:
    d = f"data/{part}"
    plain = dict(ENV)
    pure = dict(plain, PIVOTBUILD_PURE_PYTHON="1")
    find0 = f"find {d} -type f -print0"
    cmds = [
        Command("g", "pivotbuild hash, pure Python, empty memo", [*pb, "hash", d], pure,
                reset_memo=True),
        Command("a", "pivotbuild hash, empty memo", [*pb, "hash", d], plain, reset_memo=True),
        Command("b", "pivotbuild hash, memo warm (no-op)", [*pb, "hash", d], plain),
        Command("c", "xxhsum -H2, xargs -P2",
                ["sh", "-c", f"{find0} | {XARGS} xxhsum -H2 >/dev/null"]),
        Command("d", "b3sum, xargs -P2", ["sh", "-c", f"{find0} | {XARGS} b3sum >/dev/null"]),
    ]
    if part == "large":
        cmds.append(Command("d1", "b3sum FILES, one process",
                            ["sh", "-c", shlex.join(["b3sum", *files]) + " >/dev/null"]))
    cmds += [
        Command("e", "Python loop, xxhash package", [sys.executable, "-c", PY_LOOP, d]),
        Command("f", "find -printf (stat floor)",
                ["sh", "-c", f"find {d} -type f -printf '%s %T@ %i\\n' >/dev/null"]),
        Command("s", "pivotbuild hash --help (start-up only)", [*pb, "hash", "--help"], plain),
    ]
    if baseline:
        cmds.insert(1, Command("a0", "baseline hash, empty memo", [*baseline, "hash", d], plain,
                               reset_memo=True))
    for c in cmds:
        if c.argv[:len(pb)] == pb and pb_error:
            c.error = f"pivotbuild hash unavailable: {pb_error}"
        tool = {"c": "xxhsum", "d": "b3sum", "d1": "b3sum"}.get(c.key)
        if tool and not shutil.which(tool):
            c.error = f"{tool} not installed"
    return cmds


def run_once(c: Command, project: Path) -> tuple[float, float] | None:
    """Wall seconds and CPU seconds (user + system of the command's processes), or None."""
    if c.reset_memo:
        shutil.rmtree(project / ".pivotbuild", ignore_errors=True)
    env = c.env if c.env is not None else ENV
    t0 = time.perf_counter()
    proc = subprocess.Popen(c.argv, cwd=project, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        tail = (stderr.strip().splitlines() or [""])[-1][:120]
        c.error = f"exit {proc.returncode}: {tail}"
        return None
    return secs, usage.ru_utime + usage.ru_stime


def warm_cache(root: Path, state: str) -> None:
    """Put every file below root in the page cache, in the given state."""
    paths = sorted(os.path.join(d, n) for d, _dirs, names in os.walk(root) for n in names)
    prepare(paths, state)
    read_all(paths)


def check_file_hash(pb: list[str], project: Path, rel: str) -> str | None:
    """Compare `pivotbuild hash FILE` with `xxhsum -H2 FILE`; None if equal."""
    try:
        ours = subprocess.run([*pb, "hash", "--no-state", rel], check=False, cwd=project,
                              capture_output=True, text=True, timeout=600).stdout.split()
        ref = subprocess.run(["xxhsum", "-H2", rel], check=False, cwd=project,
                             capture_output=True, text=True, timeout=600).stdout.split()
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if not ours or not ref or ours[0] != ref[0]:
        return f"pivotbuild {ours[:1]} != xxhsum {ref[:1]} for {rel}"
    return None


def measure_part(part: str, project: Path, args: argparse.Namespace, gate: QuietGate,
                 pb: list[str], pb_error: str | None) -> list[Command]:
    files = sorted(str(p.relative_to(project)) for p in (project / "data" / part).iterdir())
    cmds = commands(part, files, pb, pb_error, args.baseline and shlex.split(args.baseline))
    runs = args.runs
    last_run = time.perf_counter()
    for r in range(runs + 1):  # round 0 is the untimed warm-up
        for c in cmds:
            for attempt in range(args.retries + 1):
                if c.error:
                    break
                if time.perf_counter() - last_run > IDLE_REPREPARE_S:
                    warm_cache(project / "data" / part, args.cache)
                before = Probe.now()
                timed = run_once(c, project)
                load = Probe.now().since(before)
                last_run = time.perf_counter()
                if timed is None or r == 0:
                    break
                if attempt < args.retries and gate.noisy(load, NOISE_FLOOR_S) and gate.wait():
                    c.redone += 1
                    continue
                c.samples.append(timed[0])
                c.cpu.append(timed[1])
                c.disk_mib.append(load.disk_mib)
                c.other_cpu += load.other_cpu
                break
        print(f"  {part}: round {r}/{runs} done", file=sys.stderr, flush=True)
    return cmds


def print_table(part: str, nbytes: int, nfiles: int, cmds: list[Command]) -> None:
    ref = next((c.median() for c in cmds if c.key == "c"), None)
    print(f"\n{part}: {nfiles} files, {nbytes / 1e9:.2f} GB")
    cref = next((c.cpu_median() for c in cmds if c.key == "c"), None)
    print(f"  {'':2} {'command':42} {'median s':>9} {'min s':>8} {'GB/s':>6} {'x xxhsum':>9}"
          f" {'cpu s':>6} {'x':>5} {'disk MiB':>8} {'other':>5} {'redo':>4}")
    for c in sorted(cmds, key=lambda c: c.key):
        if c.error:
            print(f"  {c.key:2} {c.label:42} {c.error}")
            continue
        med = c.median()
        gbs = f"{nbytes / med / 1e9:6.2f}" if c.key not in ("b", "f", "s") else f"{'-':>6}"
        ratio = f"{med / ref:9.2f}" if ref else f"{'-':>9}"
        cpu = c.cpu_median() or 0.0
        cratio = f"{cpu / cref:5.2f}" if cref else f"{'-':>5}"
        # under NOISE_FLOOR_S of other CPU in total, the ratio is clock-tick noise
        other = (f"{c.other_cpu / sum(c.samples):5.2f}" if c.other_cpu >= NOISE_FLOOR_S
                 else f"{'-':>5}")
        print(f"  {c.key:2} {c.label:42} {med:9.3f} {min(c.samples):8.3f} {gbs} {ratio}"
              f" {cpu:6.3f} {cratio} {max(c.disk_mib):8.0f} {other} {c.redone:4}")
    print("  cpu s: median user + system seconds of the command's processes; x: that over\n"
          "  xxhsum's; disk MiB: most read from disk in one run (0: the cache was warm);\n"
          "  other: cores busy with other processes in the kept runs ('-': too little to tell);\n"
          "  redo: runs measured again because other processes kept a core busy")


def ratio(cmds: list[Command], num: str, dens: tuple[str, ...]) -> float | None:
    by = {c.key: c.median() for c in cmds}
    den = [by[k] for k in dens if by.get(k)]
    if by.get(num) is None or not den:
        return None
    return by[num] / min(den)


def targets(results: dict[str, list[Command]]) -> list[dict]:
    spec = [  # part, what, numerator, denominators (the fastest is used), limit
        ("small", "empty memo vs xxhsum -P2", "a", ("c",), 0.85),
        ("large", "empty memo vs xxhsum -P2", "a", ("c",), 0.7),
        ("large", "empty memo vs faster b3sum", "a", ("d", "d1"), 0.6),
        ("small", "no-op (memo warm) vs find -printf", "b", ("f",), 3.0),
    ]
    out = []
    for part, what, num, dens, limit in spec:
        if part not in results:
            continue
        r = ratio(results[part], num, dens)
        verdict = "n/a" if r is None else ("PASS" if r <= limit else "MISS")
        out.append({"part": part, "target": what, "limit": limit, "ratio": r, "verdict": verdict})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("project", nargs="?",
                   help="project dir (corpus at PROJECT/data); default bench-data/<corpus tag>")
    add_params_arguments(p)
    p.add_argument("--runs", type=int, default=5, help="timed runs per command (median)")
    p.add_argument("--quiet", type=float, default=0.25,
                   help="a run during which other processes kept more than this many cores "
                        "busy is measured again (at most --retries times) once they calm "
                        "down; --max-wait caps the total seconds spent waiting")
    p.add_argument("--retries", type=int, default=3, help="see --quiet")
    p.add_argument("--max-wait", type=float, default=120.0, help="see --quiet")
    p.add_argument("--cache", choices=(*STATES, "as-is"), default="reread",
                   help="page-cache state of the corpus (see pagecache.py): reread (default;\n"
                        "evicted and read back, as a checkout that has sat for a while),\n"
                        "written (rewritten, as fresh outputs), small (read back without\n"
                        "readahead: 4 KiB folios, as on kernels without large folios),\n"
                        "as-is (only read once)")
    p.add_argument("--pivotbuild", metavar="CMD",
                   help="the pivotbuild to time (default: the console script beside this "
                        "Python, else python -m pivotbuild)")
    p.add_argument("--baseline", metavar="CMD",
                   help="another pivotbuild (e.g. a venv with the previous commit) timed in "
                        "the same runs as row a0")
    p.add_argument("--parts", default="small,large", help="comma-separated: small, large")
    p.add_argument("--json", metavar="OUT", help="save the results as JSON")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    parts = [x for x in args.parts.split(",") if x]
    if not set(parts) <= {"small", "large"}:
        p.error("--parts takes small and/or large")

    params: CorpusParams = params_from_args(args)
    project = Path(args.project or REPO / "bench-data" / params.tag()).resolve()
    project.mkdir(parents=True, exist_ok=True)
    if not (project / "pivot.toml").exists():
        (project / "pivot.toml").write_text("")
    t0 = time.perf_counter()
    manifest = generate(project / "data", params, verbose=True)
    os.sync()  # no writeback threads competing for the CPUs while we time
    print(f"corpus {project / 'data'} ready ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)

    pb = shlex.split(args.pivotbuild) if args.pivotbuild else find_pivotbuild()
    pb_error = pivotbuild_ready(pb)
    if args.baseline and (why := pivotbuild_ready(shlex.split(args.baseline))):
        p.error(f"--baseline {args.baseline}: {why}")
    if pb_error is None:
        pb_error = check_file_hash(pb, project, "data/large/large0.bin") if params.large else None
        if pb_error:
            pb_error = "wrong hash: " + pb_error
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}; pivotbuild: {shlex.join(pb)}; "
          f"runs: {args.runs} (median), page cache '{args.cache}'", flush=True)
    if pb_error:
        print(f"WARNING: {pb_error}", flush=True)

    results: dict[str, list[Command]] = {}
    gate = QuietGate(args.quiet, args.max_wait)
    for part in parts:
        t0 = time.perf_counter()
        warm_cache(project / "data" / part, args.cache)
        print(f"  {part}: page cache '{args.cache}' ({time.perf_counter() - t0:.1f} s)",
              file=sys.stderr, flush=True)
        if part == "large":
            shares = [pmd_share(p) for p in sorted((project / "data" / part).iterdir())]
            print(f"  large: share held in PMD-size folios: "
                  f"{', '.join(f'{s:.2f}' for s in shares)}", flush=True)
        results[part] = measure_part(part, project, args, gate, pb, pb_error)
        print_table(part, manifest[f"{part}_bytes"], manifest[f"{part}_files"], results[part])
    shutil.rmtree(project / ".pivotbuild", ignore_errors=True)

    if gate.waited:
        print(f"\nwaited {gate.waited:.0f} s in all for other processes to calm down"
              + (" (budget spent: later noisy runs were kept)" if gate.waited >= gate.budget
                 else ""))
    goals = targets(results)
    print("\ntargets")
    for g in goals:
        r = "-" if g["ratio"] is None else f"{g['ratio']:.2f}"
        print(f"  {g['part']:5} {g['target']:36} {r:>6} <= {g['limit']:<4}  {g['verdict']}")

    if args.json:
        doc = {
            "machine": {"nproc": os.cpu_count(), "cpu": cpu_model()},
            "params": manifest["params"], "corpus": manifest, "runs": args.runs,
            "cache": args.cache, "waited_s": gate.waited,
            "pivotbuild": pb, "pivotbuild_error": pb_error, "baseline": args.baseline,
            "parts": {part: [{"key": c.key, "label": c.label, "command": c.shown,
                              "samples": c.samples, "median": c.median(),
                              "cpu_samples": c.cpu, "cpu_median": c.cpu_median(),
                              "disk_mib": c.disk_mib, "other_cpu_s": c.other_cpu,
                              "redone": c.redone,
                              "min": min(c.samples) if c.samples else None, "error": c.error}
                             for c in cmds] for part, cmds in results.items()},
            "targets": goals,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
