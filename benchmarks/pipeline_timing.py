"""Timing whole commands for compare_pipeline.py, and the table of results with its targets.

A Cmd is one command line of one tool in one project; ``measure`` runs a case's commands
round-robin (an untimed warm-up round, then --runs timed rounds) after waiting for a quiet
machine; ``report`` prints medians and every target's ratio with PASS / MISS.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchenv import ENV, REPO, log
from sysload import Probe, wait_quiet

N_PARALLEL = 8  # stages in the parallel case


@dataclass
class Cmd:
    key: str
    tool: str
    argv: list[str]
    cwd: Path
    reset: Callable[[], None] | None = None  # before every run, untimed
    check_min_s: float = 0.0  # a run faster than this did not do the work: an error
    env: dict[str, str] = field(default_factory=dict)  # added to ENV for this command
    expect: str | None = None  # must appear in its output (stdout + stderr), else an error
    times: list[float] = field(default_factory=list)
    other_cpu: list[float] = field(default_factory=list)  # other processes' CPU s per run
    error: str | None = None
    out_tail: str = ""

    @property
    def shown(self) -> str:
        argv = list(self.argv)
        argv[0] = Path(argv[0]).name
        prefix = "".join(f"{k}={v} " for k, v in self.env.items())
        if argv[:2] == ["sh", "-c"]:
            return prefix + argv[2]
        return prefix + (shlex.join(argv) if len(argv) < 12
                         else shlex.join(argv[:4]) + f" ... ({len(argv) - 1} args)")

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times and not self.error else None


def once(c: Cmd) -> float | None:
    if c.reset:
        c.reset()
    os.sync()  # writeback of the last run's (or reset's) dirty pages is not this run's cost
    before = Probe.now()
    t0 = time.perf_counter()
    r = subprocess.run(c.argv, cwd=c.cwd, env={**ENV, **c.env} if c.env else ENV,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    secs = time.perf_counter() - t0
    c.other_cpu.append(Probe.now().since(before).other_cpu)
    c.out_tail = "\n".join(r.stdout.strip().splitlines()[-3:])
    if r.returncode != 0:
        c.error = f"exit {r.returncode}: {c.out_tail[-300:]}"
        return None
    if secs < c.check_min_s:
        c.error = f"finished in {secs:.2f} s < {c.check_min_s:.2f} s: it cannot have run everything"
        return None
    if c.expect is not None and c.expect not in r.stdout:
        c.error = f"its output lacks {c.expect!r} (not a no-op?): {c.out_tail[-300:]}"
        return None
    return secs


def measure(cmds: list[Cmd], runs: int, quiet_cores: float, quiet_timeout: float) -> None:
    cmds = [c for c in cmds if not c.error]
    if quiet_cores > 0 and not wait_quiet(quiet_cores, timeout=quiet_timeout, window=2.0):
        log(f"  (other processes stayed above {quiet_cores} cores; measuring anyway)")
    for r in range(runs + 1):  # round 0: untimed warm-up
        for c in cmds:
            if c.error:
                continue
            secs = once(c)
            if secs is not None and r > 0:
                c.times.append(secs)
            if r == 0:
                c.other_cpu.clear()
            if c.error:
                log(f"  {c.key}: {c.error}")
        log(f"  round {r}/{runs}: " + ", ".join(
            f"{c.key} {c.times[-1]:.3f}" for c in cmds if c.times and r > 0 and not c.error))


def skipped(key: str, tool: str, why: str) -> Cmd:
    return Cmd(key, tool, [tool], REPO, error=f"skipped: {why}")


LABELS = {
    "noop.pb.status": "{N}-file dep, no-op status",
    "noop.pb.status.full": "the same, full path",
    "noop.pb.repro": "{N}-file dep, no-op repro",
    "noop.pb.repro.full": "the same, full path",
    "noop.dvc.status": "{N}-file dep, no-op status",
    "noop.dvc.repro": "{N}-file dep, no-op repro",
    "noop.git.status": "the tree committed in git",
    "noop.find": "stat floor",
    "noop.pb.start": "start-up only",
    "noop.dvc.start": "start-up only",
    "stages.pb.repro": "{S}-stage no-op repro",
    "stages.pb.repro.full": "the same, full path",
    "stages.pb.status": "{S}-stage no-op status",
    "stages.pb.status.full": "the same, full path",
    "stages.dvc.repro": "{S}-stage no-op repro",
    "stages.make": "{S}-stage no-op",
    "stages.make.q": "{S}-stage no-op, make -q",
    "stages.ninja": "{S}-stage no-op, ninja -n",
    "cproject.pb.status": "C project no-op status",
    "cproject.pb.status.full": "the same, full path",
    "cproject.pb.repro": "C project no-op repro",
    "cproject.pb.repro.full": "the same, full path",
    "cproject.make": "C project no-op, make -q",
    "cproject.ninja": "C project no-op, ninja -n",
    "cproject.dvc.status": "C project no-op status",
    "cproject.pb.version": "pivotbuild --version",
    "cproject.python": "interpreter alone (-c pass)",
    "parallel.pb": "8 x sleep {T}, -j 2, forced",
    "parallel.make": "8 x sleep {T}, -j2, forced",
    "parallel.dvc": "8 x sleep {T}, sequential, forced",
    "commit.stages.pb": "{S} stages, nothing stale",
    "commit.stages.pb.all": "{S} stages, all named (forced)",
    "commit.stages.dvc": "{S} stages, all (forced)",
    "commit.tree.first.pb": "tree as output, empty cache+memo",
    "commit.tree.first.dvc": "tree as output, empty cache+state",
    "commit.tree.first.dvc.hardlink": "the same, cache.type hardlink",
    "commit.tree.cp": "copy floor: cp -r of the tree",
    "commit.tree.again.pb": "tree as output, unchanged",
    "commit.tree.again.dvc": "tree as output, unchanged",
}


SECONDS = "seconds"  # a TARGETS denominator: the numerator's median itself, in seconds


# (what, numerator, denominator key, None for the ideal or SECONDS, limit or None for
# information). Issue 3 and 4 targets first in each case, then issue 14's.
TARGETS = [
    ("no-op status / dvc status", "noop.pb.status", "noop.dvc.status", 0.1),
    ("no-op status / git status", "noop.pb.status", "noop.git.status", 4.0),
    ("no-op status / git status (issue 14)", "noop.pb.status", "noop.git.status", 1.2),
    ("no-op status, full path / git status", "noop.pb.status.full", "noop.git.status", None),
    ("no-op repro / dvc status", "noop.pb.repro", "noop.dvc.status", 0.1),
    ("no-op repro / git status", "noop.pb.repro", "noop.git.status", 4.0),
    ("no-op repro / dvc repro", "noop.pb.repro", "noop.dvc.repro", None),
    ("no-op status / find floor", "noop.pb.status", "noop.find", None),
    ("{S}-stage no-op repro / dvc repro", "stages.pb.repro", "stages.dvc.repro", 0.1),
    ("{S}-stage no-op repro / make", "stages.pb.repro", "stages.make", None),
    ("{S}-stage no-op repro, seconds", "stages.pb.repro", SECONDS, 0.15),
    ("{S}-stage no-op repro / full path", "stages.pb.repro", "stages.pb.repro.full", None),
    ("{S}-stage no-op repro / ninja -n", "stages.pb.repro", "stages.ninja", None),
    ("C project no-op status, seconds", "cproject.pb.status", SECONDS, 0.06),
    ("C project no-op status / make -q", "cproject.pb.status", "cproject.make", 15.0),
    ("C project no-op status / ninja -n", "cproject.pb.status", "cproject.ninja", None),
    ("C project no-op status / dvc status", "cproject.pb.status", "cproject.dvc.status", None),
    ("C project no-op status / full path", "cproject.pb.status", "cproject.pb.status.full",
     None),
    ("C project no-op repro, seconds", "cproject.pb.repro", SECONDS, 0.07),
    ("C project no-op repro / full path", "cproject.pb.repro", "cproject.pb.repro.full", None),
    ("pivotbuild --version, seconds", "cproject.pb.version", SECONDS, 0.03),
    ("pivotbuild --version, seconds (noop case)", "noop.pb.start", SECONDS, 0.03),
    ("8 x {T} s -j 2 / ideal {I} s", "parallel.pb", None, 1.15),
    ("make -B -j2 / ideal {I} s", "parallel.make", None, None),
    ("dvc repro -f / ideal {I} s", "parallel.dvc", None, None),
    ("commit {S} stages, nothing stale / dvc commit -f", "commit.stages.pb", "commit.stages.dvc",
     0.1),
    ("commit {S} stages named / dvc commit -f", "commit.stages.pb.all", "commit.stages.dvc", None),
    ("commit tree, first / dvc commit -f", "commit.tree.first.pb", "commit.tree.first.dvc", 0.1),
    ("commit tree, first / dvc commit -f, cache.type hardlink", "commit.tree.first.pb",
     "commit.tree.first.dvc.hardlink", None),
    ("commit tree, first / cp -r of the tree", "commit.tree.first.pb", "commit.tree.cp", None),
    ("commit tree, unchanged / dvc commit -f", "commit.tree.again.pb", "commit.tree.again.dvc",
     0.1),
]


def fmt(s: str, args: argparse.Namespace) -> str:
    return s.format(S=args.stages, N=args.small_files, T=f"{args.sleep:g}",
                    I=f"{N_PARALLEL * args.sleep / 2:g}")


def report(cmds: dict[str, Cmd], args: argparse.Namespace) -> list[dict]:
    print(f"\n{'what':36} {'tool':10} {'median s':>9} {'min':>8} {'max':>8}  command")
    for key, c in cmds.items():
        what = fmt(LABELS.get(key, key), args)
        if c.median is None:
            print(f"{what:36} {c.tool:10} {'-':>9} {'':>8} {'':>8}  {c.shown}  [{c.error}]")
        else:
            print(f"{what:36} {c.tool:10} {c.median:9.3f} {min(c.times):8.3f} "
                  f"{max(c.times):8.3f}  {c.shown}")
    rows = []
    print(f"\n{'pivotbuild vs':58} {'ratio':>8} {'target':>8}  result")
    for what, num, den, limit in TARGETS:
        a = cmds.get(num)
        if a is None:
            continue
        b = cmds.get(den) if den and den != SECONDS else None
        ideal = N_PARALLEL * args.sleep / 2
        ratio = None
        if a.median is not None and den == SECONDS:
            ratio = a.median
        elif a.median is not None and (den is None or (b and b.median)):
            ratio = a.median / (b.median if den else ideal)
        verdict = ("n/a" if ratio is None else "info" if limit is None
                   else "PASS" if ratio <= limit else "MISS")
        unit = " s" if den == SECONDS else "x"
        target = f"<={limit:g}{unit}" if limit is not None else ""
        shown = "-" if ratio is None else f"{ratio:.3f}{unit}"
        print(f"{fmt(what, args):58} {shown:>8} {target:>8}  {verdict}")
        rows.append({"what": fmt(what, args), "numerator": num, "denominator": den or "ideal",
                     "ratio": ratio, "target": limit, "result": verdict})
    return rows
