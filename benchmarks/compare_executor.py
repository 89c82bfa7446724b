"""The Dask executor beside the local one (issue 16): three cases, whole processes, medians.

    python benchmarks/compare_executor.py [--runs 3] [--workers 2] [--json OUT] [--work DIR]

One LocalCluster (``--workers`` process workers, one thread each, on 127.0.0.1) is started by
this script and given to ``repro --executor-address``; its start and stop are timed and
reported apart. Each project has a local-directory remote. Every repro is a subprocess timed
by its wall clock, ``-f`` so that every stage runs; each case is run ``--runs`` times (median
reported), local and dask runs interleaved. Beside each median: the other processes' CPU
(cores kept busy by something else, from /proc/stat: this machine is shared) during the
slowest run.

Cases and targets:

Besides the wall clock, each repro's *span* is read from ``history --json``: its stages' first
start to last end (dispatch, transfers and placing included; the interpreter's start, the
planning and the cluster connection not). The connection (``Client`` + the version check)
is reported apart, from $PIVOTBUILD_EXECUTOR_TIMINGS.

1. ``sleep``: 8 independent ``sleep 1`` stages, dask on the cluster against local ``-j2``;
   compute = span; target <= 1.15 x the ideal 8 x 1 s / 2 = 4 s.
2. ``chain``: a chain of 50 trivial stages (each copies the previous one's output); per-stage
   overhead = (dask span - local span) / 50; target <= 25 ms.
3. ``tree``: one stage writing a 10,000-file directory; dask against local, with the worker's
   hash + store + upload, the dispatch and the client's fetch + place (from
   $PIVOTBUILD_EXECUTOR_TIMINGS).

Scratch goes to --work (default bench-data/executor, git-ignored); the worker cache is
emptied before each dask run of the tree case (a cold worker), kept otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from sysload import Probe, wait_quiet

SLEEPS = 8
CHAIN = 50
TREE_FILES = 10_000


def pivotbuild() -> list[str]:
    beside = Path(sys.executable).parent / "pivotbuild"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "pivotbuild"]


def project(root: Path, stages: str) -> Path:
    if root.exists():
        shutil.rmtree(root)
    remote = root.parent / f"{root.name}-remote"
    if remote.exists():
        shutil.rmtree(remote)
    remote.mkdir(parents=True)
    root.mkdir(parents=True)
    (root / "pivot.toml").write_text(
        f'[project]\ndefault_remote = "r"\n\n[remotes.r]\nurl = "{remote}"\n\n{stages}')
    (root / "seed.txt").write_text("seed\n")
    return root


def sleeps() -> str:
    return "".join(f'[stages.s{i}]\ncmd = "sleep 1 && echo {i} > o{i}"\nouts = ["o{i}"]\n\n'
                   for i in range(SLEEPS))


def chain() -> str:
    text, prev = "", "seed.txt"
    for i in range(CHAIN):
        text += (f'[stages.c{i}]\ncmd = "cat {prev} > c{i}.txt"\ndeps = ["{prev}"]\n'
                 f'outs = ["c{i}.txt"]\n\n')
        prev = f"c{i}.txt"
    return text


def tree() -> str:
    return ('[stages.t]\ncmd = "mkdir -p out && cd out && i=0; while [ $i -lt '
            f'{TREE_FILES} ]; do echo file $i > f$i; i=$((i+1)); done"\n'
            'deps = ["seed.txt"]\nouts = ["out"]\n')


def span(cwd: Path, stages: int) -> float:
    """The last repro's stages, first start to last end, from `history --json` (the runs'
    start and duration, which include dispatch, fetching and placing outputs, not the
    commit's last step nor the process's start or the cluster connection)."""
    proc = subprocess.run([*pivotbuild(), "history", "--json"], cwd=cwd, capture_output=True,
                          text=True, check=True)
    runs = json.loads(proc.stdout)["runs"][-stages:]
    return (max(r["started_at"] + r["duration_s"] for r in runs)
            - min(r["started_at"] for r in runs))


def timed(args: list[str], cwd: Path, env: dict[str, str] | None = None
          ) -> tuple[float, float]:
    """(wall seconds, other processes' cores meanwhile); the command must succeed. Waits
    (at most 20 s) for the other processes to leave a core free first."""
    wait_quiet(1.0, timeout=20.0)
    start = Probe.now()
    proc = subprocess.run([*pivotbuild(), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False)
    load = Probe.now().since(start)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} in {cwd} failed:\n{proc.stderr[-3000:]}")
    return load.wall, load.other_cores


class Series:
    """Timings of one command over the runs: the median, and the load of the slowest."""

    def __init__(self) -> None:
        self.walls: list[float] = []
        self.loads: list[float] = []

    def add(self, wall: float, load: float) -> None:
        self.walls.append(wall)
        self.loads.append(load)

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    def shown(self) -> str:
        worst = self.loads[self.walls.index(max(self.walls))]
        return f"{self.median:7.3f} s  (runs {len(self.walls)}, other cores {worst:.2f})"

    def to_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "walls_s": self.walls, "other_cores": self.loads}


def _noop(x: int) -> int:
    return x


def noop_round_trip(address: str, count: int) -> float:
    """Median seconds of one submit-and-wait of a no-op task, one after the other: Dask's
    own dispatch cost on this machine at this moment (the floor under the chain case)."""
    import distributed

    times = []
    with distributed.Client(address) as client:
        client.submit(_noop, -1, pure=False).result()
        for i in range(count):
            t0 = time.perf_counter()
            client.submit(_noop, i, pure=False).result()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timings_of(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=HERE.parent / "bench-data" / "executor")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--cases", default="sleep,chain,tree")
    args = parser.parse_args()
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    worker_cache = work / "worker-cache"
    os.environ["PIVOTBUILD_WORKER_CACHE"] = str(worker_cache)
    timings_file = work / "timings.jsonl"
    env = {"PIVOTBUILD_EXECUTOR_TIMINGS": str(timings_file)}
    cases = args.cases.split(",")
    report: dict[str, Any] = {"runs": args.runs, "workers": args.workers}

    import distributed

    from pivotbuild.runners.dask import LOCAL_SCHEDULER_OPTIONS

    started = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                       processes=True, host="127.0.0.1",
                                       dashboard_address=None,
                                       scheduler_kwargs=LOCAL_SCHEDULER_OPTIONS,
                                       silence_logs=logging.CRITICAL)
    report["cluster_start_s"] = time.perf_counter() - started
    address = cluster.scheduler_address
    print(f"LocalCluster of {args.workers} workers started in {report['cluster_start_s']:.2f} s")
    dask = ["--executor-address", address]

    def both(name: str, stages: str, count: int, local_args: list[str],
             dask_args: list[str], before_dask: Callable[[], None] | None = None
             ) -> dict[str, Series]:
        """Series of walls and spans: local, dask, and dask's connection (from the timings
        file)."""
        local_root = project(work / f"{name}-local", stages)
        dask_root = project(work / f"{name}-dask", stages)
        timed(["repro", *local_args], local_root)  # first runs: untimed (caches, memo)
        timed(["repro", *dask, *dask_args], dask_root, env)
        out = {k: Series() for k in ("local", "dask", "local_span", "dask_span", "connect")}
        for _ in range(args.runs):
            out["local"].add(*timed(["repro", "-f", *local_args], local_root))
            out["local_span"].add(span(local_root, count), 0.0)
            if before_dask is not None:
                before_dask()
            timings_file.unlink(missing_ok=True)
            out["dask"].add(*timed(["repro", "-f", *dask, *dask_args], dask_root, env))
            out["dask_span"].add(span(dask_root, count), 0.0)
            connection = [t["connection"] for t in timings_of(timings_file)
                          if "connection" in t]
            out["connect"].add(connection[-1]["connect_s"] if connection else float("nan"),
                               0.0)
        return out

    def show(got: dict[str, Series]) -> None:
        for k in ("local", "dask"):
            print(f"   {k:6} wall {got[k].shown()}; stages' span "
                  f"{got[k + '_span'].median:.3f} s")
        print(f"   dask connect + version check {got['connect'].median:.3f} s")

    try:
        if "sleep" in cases:
            got = both("sleep", sleeps(), SLEEPS, ["-j2"], [])
            ideal = SLEEPS / 2
            print(f"\n1. {SLEEPS} x sleep 1, 2 at a time (ideal compute {ideal:.1f} s)")
            show(got)
            for k in ("local", "dask"):
                print(f"   {k:6} compute (span) = {got[k + '_span'].median / ideal:.3f} x ideal"
                      f" (target <= 1.15)")
            report["sleep"] = {k: v.to_dict() for k, v in got.items()}
        if "chain" in cases:
            got = both("chain", chain(), CHAIN, ["-j1"], ["-j1"])
            per_stage = (got["dask_span"].median - got["local_span"].median) / CHAIN
            print(f"\n2. chain of {CHAIN} trivial stages")
            show(got)
            print(f"   overhead per stage over local {per_stage * 1000:.1f} ms (spans; target "
                  f"<= 25 ms)")
            floor = noop_round_trip(address, CHAIN)
            print(f"   for scale: a Dask no-op task's round trip here, now: {floor * 1000:.1f} ms")
            report["chain"] = {k: v.to_dict() for k, v in got.items()}
            report["chain"]["per_stage_overhead_s"] = per_stage
            report["chain"]["noop_round_trip_s"] = floor
        if "tree" in cases:
            got = both("tree", tree(), 1, [], [],
                       before_dask=lambda: shutil.rmtree(worker_cache, ignore_errors=True))
            stage = [t for t in timings_of(timings_file) if t.get("stage") == "t"]
            print(f"\n3. one stage writing {TREE_FILES:,} files (cold worker cache)")
            show(got)
            if stage:
                w = stage[-1]["timings"]
                print(f"   last dask run: on the worker run {w['run_s']:.2f} s, hash + store + "
                      f"upload {w['upload_s']:.2f} s, scratch and the rest "
                      f"{w['total_s'] - w['run_s'] - w['upload_s'] - w['fetch_s']:.2f} s; "
                      f"dispatch {w['submit_to_result_s'] - w['total_s']:.2f} s; client fetch "
                      f"+ place {stage[-1]['bring_back_s']:.2f} s")
                report["tree_last_dask"] = stage[-1]
            report["tree"] = {k: v.to_dict() for k, v in got.items()}
    finally:
        started = time.perf_counter()
        cluster.close()
        report["cluster_stop_s"] = time.perf_counter() - started
        print(f"\nLocalCluster stopped in {report['cluster_stop_s']:.2f} s")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
