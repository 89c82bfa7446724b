"""Time the revision side of `metrics diff` / `params diff` on a 1,000-stage pipeline.

    python benchmarks/bench_revdiff.py [--stages 1000] [--metrics 10] [--repeat 30]
    python -m pytest benchmarks/bench_revdiff.py --benchmark-enable -q   # the same, in pytest

A git repository is made in a temporary directory with a project of N stages: N lock files
in ``.pivotbuild/locks`` (each with deps, outs and one param), a ``params.toml`` holding every
stage's params, and M metrics files (``cache = false`` outs, committed to git). One commit;
then the workspace's params and metrics are changed. One round is what the two commands do
besides parsing pivot.toml:

1. resolve HEAD (``git rev-parse``, one process);
2. list ``.pivotbuild/locks`` at HEAD (``git ls-tree``, one process);
3. read the N locks, the M metrics files and params.toml at HEAD (``git cat-file --batch``,
   ONE process for all of them);
4. gather the params keys the locks use (their ``params`` objects only; ``--validate``
   also runs the full lock validation of ``pivotbuild.lock`` on each, timed apart);
5. load, flatten and diff the metrics (HEAD from git, workspace from disk) and the params;
6. render both tables.

Each step is timed (wall clock); the table gives the median and the slowest round, and the
CPU time of a round (this process plus its git children), which a machine shared with other
work inflates far less than the wall clock. Nothing here is a pass/fail test of speed.

Then the whole commands, as a user runs them (``--commands``, the default): ``pivotbuild
metrics diff`` and ``pivotbuild params diff`` in the same repository (its ``pivot.toml``
declares the N stages, the M metrics outs with ``metric = true``), each timed as a process:
wall clock and CPU (the command and its git children, from the children's rusage). "warm":
the memos (``.pivotbuild/compare-targets``, ``compare-params``) valid; "params edited": a
value of params.toml changed before each run (its values are parsed again, pivot.toml is
not); "pivot.toml edited": a comment in pivot.toml changed before each run, so no memo and
no project cache (projectcache.py) holds: pivot.toml is loaded and validated, pydantic
imported, as on the first run after any edit of it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pivotbuild import metrics
from pivotbuild.gitrev import open_revision
from pivotbuild.hashing import get_backend
from pivotbuild.lock import Lock, LockedDep, LockedOut, parse_lock

GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, env={**os.environ, **GIT_ENV}, check=True,
                   capture_output=True)


def _metrics_json(i: int, shift: float) -> str:
    return (f'{{"acc": {0.8 + shift + i / 1000}, "loss": {{"train": {0.3 - shift}, '
            f'"val": {0.35 - shift}}}, "per_class": [{0.7 + shift}, {0.9 - shift}]}}\n')


def make_project(root: Path, stages: int, n_metrics: int) -> list[str]:
    """The repository described in the module docstring; returns the metrics paths."""
    h = get_backend().hash_bytes
    (root / ".pivotbuild" / "locks").mkdir(parents=True)
    (root / "metrics").mkdir()
    _git(root, "init", "-q")
    params = []
    metric_paths = [f"metrics/m{i:02}.json" for i in range(n_metrics)]
    for i in range(stages):
        params.append(f"[stage{i:04}]\nlr = {0.001 * (i % 7 + 1)}\nseed = {i}\n")
        outs = [LockedOut(f"out/s{i:04}.bin", h(f"o{i}".encode()), 100 + i)]
        if i < n_metrics:
            text = _metrics_json(i, 0.0)
            (root / metric_paths[i]).write_text(text)
            outs.append(LockedOut(metric_paths[i], h(text.encode()), len(text), cache=False))
        deps = [LockedDep(f"src/s{i:04}.py", h(f"s{i}".encode()), 2000),
                LockedDep(f"out/s{i - 1:04}.bin" if i else "data/raw.csv",
                          h(f"d{i}".encode()), 100)]
        lock = Lock(stage=f"stage{i:04}", cmd=[f"python src/s{i:04}.py"], deps=deps,
                    outs=outs, params={f"stage{i:04}.lr": 0.001 * (i % 7 + 1)},
                    input_hash=h(f"in{i}".encode()))
        (root / ".pivotbuild" / "locks" / f"stage{i:04}.json").write_text(lock.to_json())
    (root / "params.toml").write_text("".join(params))
    (root / "pivot.toml").write_text(pivot_toml(stages, metric_paths))
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "baseline")
    # The workspace moves on: every 10th stage's lr, every metrics file.
    changed = "".join(p.replace("lr = ", "lr = 1") if i % 10 == 0 else p
                      for i, p in enumerate(params))
    (root / "params.toml").write_text(changed)
    for i, path in enumerate(metric_paths):
        (root / path).write_text(_metrics_json(i, 0.05))
    return metric_paths


def pivot_toml(stages: int, metric_paths: list[str]) -> str:
    """The pipeline the locks were written for: a chain of N stages, one param each, the
    first M with a metrics out kept in git."""
    tables = []
    for i in range(stages):
        dep = f"out/s{i - 1:04}.bin" if i else "data/raw.csv"
        metric = (f', {{ path = "{metric_paths[i]}", cache = false, metric = true }}'
                  if i < len(metric_paths) else "")
        tables.append(f'[stages.stage{i:04}]\ncmd = "python src/s{i:04}.py"\n'
                      f'deps = ["src/s{i:04}.py", "{dep}"]\nparams = ["stage{i:04}.lr"]\n'
                      f'outs = ["out/s{i:04}.bin"{metric}]\n')
    return "".join(tables)


def _command_line() -> list[str]:
    """How a user starts pivotbuild: the launcher beside this interpreter, if installed."""
    launcher = Path(sys.executable).with_name("pivotbuild")
    return [str(launcher)] if launcher.is_file() else [sys.executable, "-m", "pivotbuild"]


def time_command(root: Path, args: list[str], case: str, run: int = 0) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and its git children) of one run. ``case``:
    "warm" as it is; "params edited": a params value changed first (a new value each run);
    "pivot.toml edited": its last line, a comment, changed first (a new one each run)."""
    import resource

    if case == "pivot.toml edited":
        toml = root / "pivot.toml"
        text = toml.read_text()
        if text.endswith("\n") and "\n# edit " in text:
            text = text[:text.rindex("# edit ")]
        toml.write_text(f"{text}# edit {run}\n")
    elif case == "params edited":
        params = root / "params.toml"
        text = params.read_text()
        start = text.index("seed = ") + len("seed = ")
        end = text.index("\n", start)
        params.write_text(f"{text[:start]}{1000 + run}{text[end:]}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([*_command_line(), *args], cwd=root, capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"pivotbuild {' '.join(args)} failed: {proc.stderr.decode()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def commands_table(root: Path, repeat: int) -> None:
    print(f"\nwhole commands, {repeat} runs each ({' '.join(_command_line())}):")
    print(f"{'command':<30}{'wall median':>12}{'wall min':>10}{'CPU median':>12}{'CPU min':>9}"
          "  (ms)")
    for args in (["metrics", "diff"], ["params", "diff"]):
        for case in ("warm", "params edited", "pivot.toml edited"):
            if case == "params edited" and args[0] == "metrics":
                continue
            time_command(root, args, "warm")  # the memos written, the page cache warm
            runs = [time_command(root, args, case, n) for n in range(repeat)]
            walls = [w * 1000 for w, _ in runs]
            cpus = [c * 1000 for _, c in runs]
            name = f"{' '.join(args)} ({case})"
            print(f"{name:<30}{statistics.median(walls):>12.0f}{min(walls):>10.0f}"
                  f"{statistics.median(cpus):>12.0f}{min(cpus):>9.0f}")


def one_round(root: Path, metric_paths: list[str], validate: bool = False
              ) -> tuple[dict[str, float], dict[str, Any]]:
    """One metrics diff + params diff against HEAD; (seconds per step, the two documents)."""
    times: dict[str, float] = {}
    clock = time.perf_counter
    cpu_start = os.times()

    def step(name: str, fn: Callable[[], Any]) -> Any:
        start = clock()
        value = fn()
        times[name] = clock() - start
        return value

    rev = step("rev-parse", lambda: open_revision(root, "HEAD"))
    entries = step("ls-tree locks", lambda: [e for e in rev.list_dir(".pivotbuild/locks")
                                             if e.path.endswith(".json")])
    names = [e.path for e in entries]
    # The locks by object id (from ls-tree), the few other files by path: one process.
    files = step("cat-file batch", lambda: rev.read_files([*entries, *metric_paths,
                                                           "params.toml"]))
    keys = step("lock params", lambda: metrics.param_keys_from_lock_files(
        {n: files[n] for n in names}, "params.toml"))
    if validate:
        step("(validate locks)", lambda: [parse_lock(files[n] or b"", n[n.rfind("/") + 1:-5])
                                          for n in names])

    def metrics_diff() -> dict[str, Any]:
        old = metrics.show({p: files[p] for p in metric_paths}, rev.label)
        new = metrics.show({p: (root / p).read_bytes() for p in metric_paths})
        return metrics.diff(old, new)

    mdoc = step("metrics diff", metrics_diff)

    def params_diff() -> dict[str, Any]:
        used = keys["params.toml"]
        old = {"params.toml": metrics.load_params("params.toml", files["params.toml"] or b"",
                                                  used, rev.label)}
        new = {"params.toml": metrics.load_params(
            "params.toml", (root / "params.toml").read_bytes(), used)}
        return metrics.params_diff(old, new)

    pdoc = step("params diff", params_diff)
    step("render", lambda: (metrics.render_diff_text(mdoc, rev.rev),
                            metrics.render_diff_text(pdoc, rev.rev, kind="Param")))
    times["total"] = sum(v for k, v in times.items() if not k.startswith("("))
    end = os.times()
    times["total CPU"] = sum(end[:4]) - sum(cpu_start[:4])  # this process and its git children
    return times, {"metrics": mdoc, "params": pdoc, "locks": len(names)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=1000)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--gc", action="store_true",
                        help="pack the repository (git gc) before timing: objects packed, as "
                             "in most clones, instead of 1,000 fresh loose objects")
    parser.add_argument("--validate", action="store_true",
                        help="also time pivotbuild.lock's full validation of every lock")
    parser.add_argument("--no-commands", dest="commands", action="store_false",
                        help="time only the steps in-process, not the two whole commands")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_revdiff-") as tmp:
        root = Path(tmp) / "proj"
        root.mkdir()
        metric_paths = make_project(root, args.stages, args.metrics)
        if args.gc:
            _git(root, "gc", "-q")
        rounds = []
        for _ in range(args.repeat):
            times, docs = one_round(root, metric_paths, args.validate)
            rounds.append(times)
        assert docs["locks"] == args.stages
        n_metric_rows = sum(len(v) for v in docs["metrics"].values())
        n_param_rows = sum(len(v) for v in docs["params"].values())
        report_steps(args, rounds, n_metric_rows, n_param_rows)
        if args.commands:
            commands_table(root, min(args.repeat, 10))
    return 0


def report_steps(args: argparse.Namespace, rounds: list[dict[str, float]], n_metric_rows: int,
                 n_param_rows: int) -> None:
    objects = "packed objects" if args.gc else "loose objects"
    print(f"{args.stages} locks + {args.metrics} metrics files + params.toml read from HEAD "
          f"({objects}), {args.repeat} rounds; {n_metric_rows} metric and {n_param_rows} "
          f"param rows changed")
    print(f"{'step':<16}{'median ms':>10}{'max ms':>10}")
    for name in rounds[0]:
        values = [r[name] * 1000 for r in rounds]
        print(f"{name:<16}{statistics.median(values):>10.1f}{max(values):>10.1f}")


def test_revdiff(benchmark: Any, tmp_path: Path) -> None:  # pytest-benchmark
    root = tmp_path / "proj"
    root.mkdir()
    metric_paths = make_project(root, 1000, 10)
    _times, docs = benchmark(one_round, root, metric_paths)
    assert docs["locks"] == 1000 and len(docs["metrics"]) == 10


if __name__ == "__main__":
    sys.exit(main())
