"""Pipelines side by side: pivotbuild against DVC, GNU Make, Ninja and git, as whole processes.

One run generates equivalent projects for each tool under WORK (default
bench-data/pipelines, git-ignored; pipeline_projects.py), times every command as
a subprocess (wall clock; one untimed warm-up, then --runs timed runs, the tools
of a case interleaved round-robin; pipeline_timing.py) and prints medians, ratios
and PASS/MISS per target.

    noop      one stage `find data -type f | wc -l > count.txt` whose dep is the
              100,000-file tree (data/, hardlinked from the corpus):
              pivotbuild status / repro (fast path, and full path with
              PIVOTBUILD_NO_FASTPATH=1), dvc status / dvc repro, git status (the
              same tree added and committed in a git repository), find -printf
              (the stat-only floor, for reading the others), --version of both
    stages    no-op of a 1,000-stage pipeline (groups of 10: a root, a chain of
              4, a fan-out of 4, a fan-in; every 10th group starts a new chain of
              groups): pivotbuild repro / status (fast and full path), dvc repro,
              make, make -q, ninja -n (a generated build.ninja)
    cproject  (issue 14) Brotli's C library and tool, benchmarks/cproject_real/
              (36 translation units + a link; its own Makefile and build.ninja,
              pivot.toml and dvc.yaml from cproject_gen.py), each tool building its
              own copy: pivotbuild status / repro (fast and full path), make -q,
              ninja -n, dvc status, pivotbuild --version and `python -c pass`
    parallel  8 independent stages `sleep 1 && cp src out`, all forced:
              pivotbuild repro -f -j 2, make -B -j2, dvc repro -f (DVC runs
              stages one at a time; reported, no target)
    commit    (issue 4) pivotbuild commit vs dvc commit -f on the 1,000-stage
              pipeline with nothing stale, and on one stage whose output is the
              100,000-file tree (a real copy): first with an empty cache and
              memo (.pivotbuild/ or .dvc/cache + DVC's state deleted before each
              run), then unchanged; `cp -r` of the tree is timed beside them as the
              floor for anything that copies it into a cache

Targets (issues 3 and 4): noop status and repro <= 0.1 x dvc status and
<= 4 x git status; stages <= 0.1 x dvc repro; parallel <= 1.15 x the ideal
(8 x sleep / 2 = 4 s); commit <= 0.1 x dvc commit -f, each case. Issue 14 (the
no-op fast path): noop status <= 1.2 x git status; stages repro <= 0.15 s;
cproject status <= 0.06 s and <= 15 x make -q, repro <= 0.07 s;
pivotbuild --version <= 0.03 s. pivotbuild's fast path answers a no-op from
.pivotbuild/snapshot, which the first full-path status after a build leaves (the
setup runs one, 2 s after the build); after timing, each case asks
PIVOTBUILD_FASTPATH_TRACE=1 whether the fast path answered and prints the answer.

DVC is installed into a throwaway virtualenv (--dvc-venv, default
bench-data/dvc-venv) with `pip install dvc`, reused when present; its repos are
`git init` + `dvc init` with analytics and update checks off and DVC's state
kept inside the repo (core.site_cache_dir) so it can be emptied. Both tools run
with their default cache link types. A peer that cannot be found or installed is
skipped with a note (Ninja: Debian package ninja-build).

    python benchmarks/compare_pipeline.py [--runs 5] [--json OUT]
        [--small-files 100000] [--stages 1000] [--sleep 1.0]
        [--cases noop,stages,cproject,parallel,commit] [--work DIR] [--quiet-cores 0.3]

Quick smoke run (a few minutes, DVC already installed; the C project is compiled
once per tool and its builds are reused by later runs):
    python benchmarks/compare_pipeline.py --small-files 2000 --stages 50 --runs 3 --sleep 0.25

The 100,000-file tree is bench-data/s100000-l4x256-seed0/data/small when that
corpus is there (benchmarks/corpus.py), else it is generated into WORK with
corpus.py (--large 0). Trees are linked or copied into WORK once and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cproject_gen
from benchenv import BENCH_DATA, ENV, REPO, BenchError, cpu_model, git_init, log, run
from pagecache import read_all
from pipeline_projects import (
    Stage,
    cproject_copy,
    cproject_digest,
    dvc_forget,
    dvc_init,
    fresh,
    many_stages,
    pivot_forget,
    rmtree,
    source_tree,
    sources,
    tree_project,
    write_dvc,
    write_make,
    write_ninja,
    write_pivot,
)
from pipeline_timing import LABELS, N_PARALLEL, Cmd, fmt, measure, report, skipped

CASES = ("noop", "stages", "cproject", "parallel", "commit")

# ---- tools ----------------------------------------------------------------------------------

@dataclass
class Tools:
    pivotbuild: list[str]
    dvc: str | None
    make: str | None
    git: str | None
    ninja: str | None
    notes: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)


def find_pivotbuild() -> list[str]:
    """The console script beside this Python (a pyenv shim on PATH would add a bash and a
    pyenv start-up to every run), else `python -m pivotbuild`."""
    beside = Path(sys.executable).parent / "pivotbuild"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [sys.executable, "-m", "pivotbuild"]


def ensure_dvc(venv: Path, notes: list[str]) -> str | None:
    dvc = venv / "bin" / "dvc"
    if not (dvc.is_file() and os.access(dvc, os.X_OK)):
        log(f"installing DVC into {venv} (python -m venv; pip install dvc)")
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "dvc"], check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            notes.append(f"DVC skipped: installing it into {venv} failed ({exc})")
            return None
    try:
        run([str(dvc), "--version"], cwd=REPO)
    except (OSError, BenchError) as exc:
        notes.append(f"DVC skipped: {dvc} does not start ({exc})")
        return None
    return str(dvc)


def find_tools(args: argparse.Namespace) -> Tools:
    notes: list[str] = []
    tools = Tools(find_pivotbuild(), ensure_dvc(Path(args.dvc_venv), notes),
                  shutil.which("make"), shutil.which("git"), shutil.which("ninja"), notes)
    if tools.make is None:
        notes.append("make skipped: not on PATH")
    if tools.ninja is None:
        notes.append("ninja skipped: not on PATH (Debian: apt-get install ninja-build)")
    if tools.git is None:
        notes.append("git skipped: not on PATH (DVC needs it too)")
        if tools.dvc:
            notes.append("DVC skipped: it needs git")
            tools.dvc = None
    for name, argv in (("pivotbuild", [*tools.pivotbuild, "--version"]),
                       ("dvc", [tools.dvc, "--version"] if tools.dvc else None),
                       ("make", [tools.make, "--version"] if tools.make else None),
                       ("git", [tools.git, "--version"] if tools.git else None),
                       ("ninja", [tools.ninja, "--version"] if tools.ninja else None)):
        if argv:
            out = run(argv, cwd=REPO, check=False).stdout.strip().splitlines()
            tools.versions[name] = out[0] if out else "?"
    return tools


# ---- issue 14: the fast path beside the full path ------------------------------------------

# pivotbuild's full path (click, pydantic, networkx, pivot.toml validated and expanded),
# timed beside the fast path that answers a no-op from .pivotbuild/snapshot (issue 14).
FULL_PATH = {"PIVOTBUILD_NO_FASTPATH": "1"}


def pb_noops(case: str, tools: Tools, proj: Path, commands: tuple[str, ...] = ("status", "repro")
             ) -> list[Cmd]:
    """`pivotbuild status` / `repro` in proj, each through the fast path and the full path;
    a run that does not report a no-op is an error."""
    cmds = []
    for command in commands:
        expect = "Everything is up to date." if command == "status" else " 0 ran, "
        cmds.append(Cmd(f"{case}.pb.{command}", "pivotbuild", [*tools.pivotbuild, command],
                        proj, expect=expect))
        cmds.append(Cmd(f"{case}.pb.{command}.full", "pivotbuild",
                        [*tools.pivotbuild, command], proj, env=FULL_PATH, expect=expect))
    return cmds


def fast_path_notes(case: str, tools: Tools, proj: Path,
                    commands: tuple[str, ...] = ("status", "repro")) -> None:
    """Ask pivotbuild (PIVOTBUILD_FASTPATH_TRACE=1) whether its fast path answered each
    command in proj, and keep its answer among the notes: a fast-path row means nothing
    if the fast path was not taken."""
    for command in commands:
        r = subprocess.run([*tools.pivotbuild, command], cwd=proj,
                           env={**ENV, "PIVOTBUILD_FASTPATH_TRACE": "1"},
                           capture_output=True, text=True, check=False)
        said = [ln for ln in r.stderr.splitlines() if ln.startswith("pivotbuild: fast path")]
        what = said[-1].removeprefix("pivotbuild: ") if said else "no trace (an older build?)"
        tools.notes.append(f"{case}: `pivotbuild {command}` after the timed runs: {what}")


# ---- cases ----------------------------------------------------------------------------------

def wait_racy() -> None:
    """Files written in the last 2 s are not trusted by stat memos (pivotbuild, git, DVC):
    let setup's files age before the warm-up run records them as clean."""
    time.sleep(2.2)


def case_noop(tools: Tools, args: argparse.Namespace, work: Path) -> list[Cmd]:
    pb = tools.pivotbuild
    src, rels = source_tree(args.small_files, work)
    base = work / f"noop-s{args.small_files}"
    stage = Stage("count", "find data -type f | wc -l > count.txt", ["data"], ["count.txt"])
    cmds: list[Cmd] = []

    p = base / "pivotbuild"
    tree_project(p, src, rels, "link")
    write_pivot(p, [stage])
    log(f"noop: pivotbuild repro in {p}")
    run([*pb, "repro"], p)

    d = base / "dvc"
    if tools.dvc:
        tree_project(d, src, rels, "link")
        dvc_init(tools.dvc, tools.git, d)
        write_dvc(d, [stage])
        log(f"noop: dvc repro in {d}")
        run([tools.dvc, "repro"], d)

    g = base / "git"
    if tools.git:
        marker = g.with_name("git.repo-ok")
        want = f"{src} {len(rels)}\n"
        if not marker.is_file() or marker.read_text() != want or not (g / ".git").is_dir():
            marker.unlink(missing_ok=True)
            tree_project(g, src, rels, "link")
            git_init(tools.git, g)
            log(f"noop: git add + commit of {len(rels)} files in {g} (once)")
            run([tools.git, "add", "data"], g)
            run([tools.git, "commit", "-q", "-m", "the tree"], g)
            marker.write_text(want)

    log("noop: reading the tree into the page cache")
    read_all(str(p / "data" / r) for r in rels)
    wait_racy()
    if run([*pb, "status", "-q"], p, check=False).returncode != 0:
        raise BenchError(f"pivotbuild status in {p} is not up to date after repro")

    cmds += pb_noops("noop", tools, p)
    if tools.dvc:
        cmds.append(Cmd("noop.dvc.status", "dvc", [tools.dvc, "status"], d))
        cmds.append(Cmd("noop.dvc.repro", "dvc", [tools.dvc, "repro"], d))
    else:
        cmds += [skipped("noop.dvc.status", "dvc", "DVC unavailable"),
                 skipped("noop.dvc.repro", "dvc", "DVC unavailable")]
    if tools.git:
        cmds.append(Cmd("noop.git.status", "git", [tools.git, "status"], g))
    else:
        cmds.append(skipped("noop.git.status", "git", "git unavailable"))
    cmds.append(Cmd("noop.find", "find",
                    ["sh", "-c", "find data -type f -printf '%s %T@ %i\\n' >/dev/null"], p))
    cmds.append(Cmd("noop.pb.start", "pivotbuild", [*pb, "--version"], p))
    if tools.dvc:
        cmds.append(Cmd("noop.dvc.start", "dvc", [tools.dvc, "--version"], d))
    log("noop: timing")
    measure(cmds, args.runs, args.quiet_cores, args.quiet_timeout)
    fast_path_notes("noop", tools, p)
    if tools.dvc and "up to date" not in run([tools.dvc, "status"], d).stdout:
        raise BenchError(f"dvc status in {d} is not up to date after the no-op runs")
    if run([*pb, "status", "-q"], p, check=False).returncode != 0:
        raise BenchError(f"pivotbuild status in {p} is not up to date after the no-op runs")
    return cmds






@dataclass
class StagesProjects:
    stages: list[Stage]
    pb: Path
    dvc: Path | None
    make: Path | None
    ninja: Path | None


def setup_stages(tools: Tools, args: argparse.Namespace, work: Path) -> StagesProjects:
    stages = many_stages(args.stages)
    base = work / f"stages-{args.stages}"
    pb = tools.pivotbuild
    p = fresh(base / "pivotbuild")
    sources(p, stages)
    write_pivot(p, stages)
    log(f"stages: pivotbuild repro of {len(stages)} stages in {p}")
    run([*pb, "-q", "repro"], p)
    d = m = n = None
    if tools.dvc:
        # DVC's first repro of a large pipeline takes many minutes: a project that an earlier
        # run completed for the same pipeline and DVC version is reused as it is.
        d = base / "dvc"
        marker = base / "dvc.setup-ok"
        probe = d / "probe"
        fresh(probe)
        write_dvc(probe, stages)
        want = f"{tools.versions.get('dvc')}\n{(probe / 'dvc.yaml').read_text()}"
        rmtree(probe)
        if marker.is_file() and marker.read_text() == want and (d / "dvc.lock").is_file():
            log(f"stages: reusing the DVC project {d} (delete {marker} to rebuild it)")
        else:
            marker.unlink(missing_ok=True)
            fresh(d)
            sources(d, stages)
            dvc_init(tools.dvc, tools.git, d)
            write_dvc(d, stages)
            log(f"stages: dvc repro of {len(stages)} stages in {d} (DVC runs them one at a time)")
            t0 = time.perf_counter()
            run([tools.dvc, "repro"], d)
            log(f"  took {time.perf_counter() - t0:.0f} s")
            marker.write_text(want)
    if tools.make:
        m = fresh(base / "make")
        sources(m, stages)
        write_make(m, stages)
        run([tools.make, "-s", "-j2"], m)
    if tools.ninja:
        n = fresh(base / "ninja")
        sources(n, stages)
        write_ninja(n, stages)
        run([tools.ninja, "-j2"], n)
    wait_racy()
    if run([*pb, "status", "-q"], p, check=False).returncode != 0:
        raise BenchError(f"pivotbuild status in {p} is not up to date after repro")
    return StagesProjects(stages, p, d, m, n)


def case_stages(tools: Tools, args: argparse.Namespace, sp: StagesProjects) -> list[Cmd]:
    pb = tools.pivotbuild
    cmds = pb_noops("stages", tools, sp.pb)
    cmds.append(Cmd("stages.dvc.repro", "dvc", [tools.dvc, "repro"], sp.dvc) if sp.dvc
                else skipped("stages.dvc.repro", "dvc", "DVC unavailable"))
    cmds.append(Cmd("stages.make", "make", [tools.make], sp.make) if sp.make
                else skipped("stages.make", "make", "make unavailable"))
    cmds.append(Cmd("stages.make.q", "make", [tools.make, "-q"], sp.make) if sp.make
                else skipped("stages.make.q", "make", "make unavailable"))
    cmds.append(Cmd("stages.ninja", "ninja", [tools.ninja, "-n"], sp.ninja,
                    expect="no work to do") if sp.ninja
                else skipped("stages.ninja", "ninja", "ninja unavailable"))
    log("stages: timing")
    measure(cmds, args.runs, args.quiet_cores, args.quiet_timeout)
    fast_path_notes("stages", tools, sp.pb)
    if sp.dvc and "up to date" not in run([tools.dvc, "status"], sp.dvc).stdout:
        raise BenchError(f"dvc status in {sp.dvc} is not up to date after the no-op runs")
    if sp.make and run([tools.make, "-q"], sp.make, check=False).returncode != 0:
        raise BenchError("make -q says the Makefile project is not up to date")
    if run([*pb, "status", "-q"], sp.pb, check=False).returncode != 0:
        raise BenchError("pivotbuild's many-stage project is not up to date after the no-op runs")
    return cmds






def case_cproject(tools: Tools, args: argparse.Namespace, work: Path) -> list[Cmd]:
    """Brotli's C sources (cproject_real/): each tool builds its own copy (-j 2; DVC one
    stage at a time), then the no-ops are timed."""
    pb = tools.pivotbuild
    if shutil.which(cproject_gen.CC) is None:
        raise BenchError(f"cproject: no C compiler `{cproject_gen.CC}` on PATH")
    base = work / "cproject"
    digest = cproject_digest()
    sources_only = ("c", "LICENSE")
    p = base / "pivotbuild"
    cproject_copy(p, sources_only, digest)
    try:
        ts, per_unit = cproject_gen.tables(p)
    except (OSError, RuntimeError) as exc:
        raise BenchError(f"cproject: listing the units' headers failed: {exc}") from None
    ours, gcc_lists = cproject_gen.header_counts(ts, per_unit)
    tools.notes.append(
        f"cproject: {len(per_unit)} compile stages in {len(ts)} foreach tables + link; their "
        f"deps list {ours} headers in all (each table: the union of its units' headers), "
        f"gcc's depfiles for Make and Ninja {gcc_lists}")
    (p / "pivot.toml").write_text(cproject_gen.pivot_toml(ts))
    # A snapshot an earlier pivotbuild left is not this build's to trust.
    (p / ".pivotbuild" / "snapshot").unlink(missing_ok=True)
    log(f"cproject: pivotbuild repro -j 2 in {p}")
    run([*pb, "-q", "repro", "-j", "2"], p)
    m = n = d = None
    if tools.make:
        m = base / "make"
        cproject_copy(m, (*sources_only, "Makefile"), digest)
        log(f"cproject: make -j2 in {m}")
        run([tools.make, "-s", "-j2"], m)
    if tools.ninja:
        n = base / "ninja"
        cproject_copy(n, (*sources_only, "build.ninja"), digest)
        log(f"cproject: ninja -j2 in {n}")
        run([tools.ninja, "-j2"], n)
    if tools.dvc:
        d = base / "dvc"
        cproject_copy(d, sources_only, digest)
        if not (d / ".dvc").is_dir():
            dvc_init(tools.dvc, tools.git, d)
        (d / "dvc.yaml").write_text(cproject_gen.dvc_yaml(ts))
        log(f"cproject: dvc repro in {d} (one stage at a time)")
        run([tools.dvc, "repro"], d)
    wait_racy()
    # The first status after the build plans every stage on the full path and leaves the
    # snapshot the fast path answers from.
    if run([*pb, "status", "-q"], p, check=False).returncode != 0:
        raise BenchError(f"pivotbuild status in {p} is not up to date after repro")

    cmds = pb_noops("cproject", tools, p)
    cmds.append(Cmd("cproject.make", "make", [tools.make, "-q"], m) if m
                else skipped("cproject.make", "make", "make unavailable"))
    cmds.append(Cmd("cproject.ninja", "ninja", [tools.ninja, "-n"], n, expect="no work to do")
                if n else skipped("cproject.ninja", "ninja", "ninja unavailable"))
    cmds.append(Cmd("cproject.dvc.status", "dvc", [tools.dvc, "status"], d, expect="up to date")
                if d else skipped("cproject.dvc.status", "dvc", "DVC unavailable"))
    cmds.append(Cmd("cproject.pb.version", "pivotbuild", [*pb, "--version"], p))
    cmds.append(Cmd("cproject.python", "python", [sys.executable, "-c", "pass"], p))
    log("cproject: timing")
    measure(cmds, args.runs, args.quiet_cores, args.quiet_timeout)
    fast_path_notes("cproject", tools, p)
    if run([*pb, "status", "-q"], p, check=False).returncode != 0:
        raise BenchError(f"pivotbuild status in {p} is not up to date after the no-op runs")
    return cmds


def case_parallel(tools: Tools, args: argparse.Namespace, work: Path) -> list[Cmd]:
    stages = [Stage(f"p{k}", f"sleep {args.sleep:g} && cp src/p{k}.txt out/p{k}",
                    [f"src/p{k}.txt"], [f"out/p{k}"]) for k in range(N_PARALLEL)]
    ideal = N_PARALLEL * args.sleep / 2
    base = work / "parallel"
    pb = tools.pivotbuild
    p = fresh(base / "pivotbuild")
    sources(p, stages)
    write_pivot(p, stages)
    cmds = [Cmd("parallel.pb", "pivotbuild", [*pb, "repro", "-f", "-j", "2"], p,
                check_min_s=ideal * 0.98)]
    if tools.make:
        m = fresh(base / "make")
        sources(m, stages)
        write_make(m, stages)
        cmds.append(Cmd("parallel.make", "make", [tools.make, "-B", "-j2"], m,
                        check_min_s=ideal * 0.98))
    else:
        cmds.append(skipped("parallel.make", "make", "make unavailable"))
    if tools.dvc:
        d = fresh(base / "dvc")
        sources(d, stages)
        dvc_init(tools.dvc, tools.git, d)
        write_dvc(d, stages)
        cmds.append(Cmd("parallel.dvc", "dvc", [tools.dvc, "repro", "-f"], d,
                        check_min_s=N_PARALLEL * args.sleep * 0.98))
    else:
        cmds.append(skipped("parallel.dvc", "dvc", "DVC unavailable"))
    log(f"parallel: timing (ideal {ideal:g} s)")
    measure(cmds, args.runs, args.quiet_cores, args.quiet_timeout)
    return cmds


def case_commit(tools: Tools, args: argparse.Namespace, work: Path,
                sp: StagesProjects) -> list[Cmd]:
    pb = tools.pivotbuild
    # (1) the many-stage pipeline, nothing stale
    names = [s.name for s in sp.stages]
    cmds = [Cmd("commit.stages.pb", "pivotbuild", [*pb, "commit"], sp.pb),
            Cmd("commit.stages.pb.all", "pivotbuild", [*pb, "commit", *names], sp.pb)]
    cmds.append(Cmd("commit.stages.dvc", "dvc", [tools.dvc, "commit", "-f"], sp.dvc) if sp.dvc
                else skipped("commit.stages.dvc", "dvc", "DVC unavailable"))
    log("commit: many stages, nothing stale: timing")
    measure(cmds, args.runs, args.quiet_cores, args.quiet_timeout)
    out = run([*pb, "commit"], sp.pb).stdout
    if "nothing to commit" not in out.lower():
        raise BenchError(f"pivotbuild commit in {sp.pb} committed something: {out.strip()}")

    # (2) one stage whose output is the tree (a real copy per tool)
    src, rels = source_tree(args.small_files, work)
    base = work / f"commit-s{args.small_files}"
    stage = Stage("gen", "sh gen.sh", ["gen.sh"], ["data"])
    script = "# would write data/; the benchmark commits the copy that is there\nexit 1\n"
    p = base / "pivotbuild"
    tree_project(p, src, rels, "copy")
    write_pivot(p, [stage])
    (p / "gen.sh").write_text(script)
    d = None
    if tools.dvc:
        d = base / "dvc"
        tree_project(d, src, rels, "copy")
        dvc_init(tools.dvc, tools.git, d)
        write_dvc(d, [stage])
        (d / "gen.sh").write_text(script)
    wait_racy()
    projects = [p] + ([d] if d else [])

    def warm() -> None:
        for proj in projects:
            read_all(str(proj / "data" / r) for r in rels)

    def pb_first() -> None:
        pivot_forget(p)
        warm()

    first = [Cmd("commit.tree.first.pb", "pivotbuild", [*pb, "commit", "gen"], p, reset=pb_first)]
    if d:
        dvc = tools.dvc

        def dvc_link_type(kind: str | None) -> None:
            if kind:
                run([dvc, "config", "--local", "cache.type", kind], d)
            else:
                run([dvc, "config", "--local", "--unset", "cache.type"], d, check=False)

        def dvc_first_hardlink() -> None:
            dvc_forget(d)
            dvc_link_type("hardlink")
            warm()

        def dvc_first() -> None:
            dvc_forget(d)
            dvc_link_type(None)
            warm()
        # pivotbuild's default prefers reflink, then hardlink: DVC's default is reflink, then
        # copy. DVC with cache.type hardlink is timed too (the default one runs last in each
        # round, so the unchanged case below starts from DVC's default).
        first.append(Cmd("commit.tree.first.dvc.hardlink", "dvc", [dvc, "commit", "-f", "gen"],
                         d, reset=dvc_first_hardlink))
        first.append(Cmd("commit.tree.first.dvc", "dvc", [dvc, "commit", "-f", "gen"], d,
                         reset=dvc_first))
    else:
        first.append(skipped("commit.tree.first.dvc", "dvc", "DVC unavailable"))
    floor = base / "cp-floor"

    def cp_first() -> None:
        rmtree(floor)
        warm()
    first.append(Cmd("commit.tree.cp", "cp", ["cp", "-r", "data", str(floor)], p, reset=cp_first))
    log("commit: the tree as one stage's output, empty cache and memo: timing")
    measure(first, args.runs, args.quiet_cores, args.quiet_timeout)

    again = [Cmd("commit.tree.again.pb", "pivotbuild", [*pb, "commit", "gen"], p)]
    again.append(Cmd("commit.tree.again.dvc", "dvc", [tools.dvc, "commit", "-f", "gen"], d)
                 if d else skipped("commit.tree.again.dvc", "dvc", "DVC unavailable"))
    warm()
    log("commit: the tree unchanged: timing")
    measure(again, args.runs, args.quiet_cores, args.quiet_timeout)
    rmtree(floor)
    if run([*pb, "status", "-q"], p, check=False).returncode != 0:
        raise BenchError(f"pivotbuild status in {p} is not up to date after commit")
    return first + again + cmds


# ---- main -----------------------------------------------------------------------------------

def source_digest() -> str:
    """A digest of pivotbuild's sources (Python and C), to tell whether they changed while
    the benchmark ran (other work may edit the checkout meanwhile)."""
    import hashlib
    h = hashlib.sha256()
    for path in sorted([*(REPO / "pivotbuild").rglob("*.py"), *(REPO / "csrc").rglob("*.[ch]")]):
        if "__pycache__" in path.parts:
            continue
        h.update(str(path.relative_to(REPO)).encode() + b"\0")
        try:
            h.update(path.read_bytes())
        except OSError:
            pass
    return h.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5, help="timed runs per command (median)")
    p.add_argument("--small-files", type=int, default=100_000, help="files in the tree")
    p.add_argument("--stages", type=int, default=1000, help="stages in the many-stage pipeline")
    p.add_argument("--sleep", type=float, default=1.0, help="seconds each parallel stage sleeps")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma list of {','.join(CASES)}")
    p.add_argument("--work", default=str(BENCH_DATA / "pipelines"), help="scratch directory")
    p.add_argument("--dvc-venv", default=str(BENCH_DATA / "dvc-venv"))
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    p.add_argument("--quiet-cores", type=float, default=0.3,
                   help="before each case wait until other processes use at most this many "
                        "cores (0: do not wait)")
    p.add_argument("--quiet-timeout", type=float, default=120.0, help="longest wait, seconds")
    args = p.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    if bad := set(cases) - set(CASES):
        p.error(f"unknown case(s): {', '.join(sorted(bad))}")
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)

    load_start = os.getloadavg()
    digest_start = source_digest()
    tools = find_tools(args)
    for note in tools.notes:
        log(f"NOTE: {note}")
    cmds: dict[str, Cmd] = {}
    t0 = time.perf_counter()
    try:
        if "noop" in cases:
            cmds.update((c.key, c) for c in case_noop(tools, args, work))
        sp = None
        if "stages" in cases or "commit" in cases:
            sp = setup_stages(tools, args, work)
        if "stages" in cases:
            cmds.update((c.key, c) for c in case_stages(tools, args, sp))
        if "cproject" in cases:
            cmds.update((c.key, c) for c in case_cproject(tools, args, work))
        if "parallel" in cases:
            cmds.update((c.key, c) for c in case_parallel(tools, args, work))
        if "commit" in cases:
            cmds.update((c.key, c) for c in case_commit(tools, args, work, sp))
    except BenchError as exc:
        log(f"ERROR: {exc}")
        return 1
    load_end = os.getloadavg()
    digest_end = source_digest()
    if digest_end != digest_start:
        tools.notes.append(f"pivotbuild's sources CHANGED during this run ({digest_start} -> "
                           f"{digest_end}): the cases measured different code")

    order = [k for k in LABELS if k in cmds]
    cmds = {k: cmds[k] for k in order}
    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}; load average at start "
          f"{load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}, at end "
          f"{load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}; "
          f"{args.runs} timed runs each; whole run {time.perf_counter() - t0:.0f} s")
    print("versions: " + "; ".join(f"{k} {v}" for k, v in tools.versions.items())
          + f"; pivotbuild sources {digest_start}")
    for note in tools.notes:
        print(f"NOTE: {note}")
    rows = report(cmds, args)
    if args.json:
        doc = {
            "machine": {"nproc": os.cpu_count(), "cpu": cpu_model(),
                        "loadavg_start": load_start, "loadavg_end": load_end},
            "args": vars(args), "versions": tools.versions, "notes": tools.notes,
            "pivotbuild_sources": {"start": digest_start, "end": digest_end},
            "commands": {k: {"tool": c.tool, "what": fmt(LABELS.get(k, k), args),
                             "argv": c.shown, "cwd": str(c.cwd), "times": c.times,
                             "median": c.median, "other_cpu_s": c.other_cpu, "error": c.error}
                         for k, c in cmds.items()},
            "ratios": rows,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if all(r["result"] != "MISS" for r in rows) else 3


if __name__ == "__main__":
    sys.exit(main())
