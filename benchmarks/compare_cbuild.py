"""A real C build three ways: pivotbuild against `make -j2` and `ninja -j2` on Brotli (issue 13).

benchmarks/cproject_real/ holds Brotli's 36 translation units with a Makefile (gcc -MMD -MP,
`-include`), a build.ninja (`deps = gcc`) and a pivot.toml (a glob foreach, a depfile, a
group reference, the link in a pool of one). Each tool builds its own copy under WORK
(default bench-data/cbuild), and every case times the three tools round-robin, --runs times
(medians; ratios from the same run), with the load other processes put on the machine
meanwhile (sysload.py) printed beside each case:

    full      a build from nothing, -j2 (pivotbuild: no .pivotbuild/ either, so no cache)
    header    one header gets a line that changes the objects of its includers (a used
              static constant inside its include guard): which units each tool recompiles,
              checked against the units whose `cc -MM` lists the header, and the link
    comment   the same header gets a comment: its includers recompile everywhere;
              pivotbuild finds their objects byte-identical and skips the link
    source    one .c gets a used static constant: one compile and the link
    noop      nothing changed: pivotbuild repro, make, ninja (and make -q, ninja -n,
              pivotbuild status -q)

Each edit is new (its run number is in it, on top of the original file), so pivotbuild's run
cache never answers a timed run; after a case the file is put back and rebuilt, untimed. After the cases,
`pivotbuild compdb` writes compile_commands.json, which is checked with clang-tidy -p
(Debian package clang-tidy) when it is installed: every unit must compile under it, and one
unit without it must not (the database's flags are what make it compile).

CPU seconds (the tool and everything it waited for) are printed beside the wall medians.
On a machine that other work keeps busy, wall times favour pivotbuild when the kernel's
autogrouping is on (printed): pivotbuild runs each command in a session of its own, so two
compiles get two sessions' share of the CPU, where make's and ninja's share one. Compare
wall times on a quiet machine; the CPU seconds do not depend on it.

Targets (issue 13): full <= 1.05 x make -j2; header: the recompiled set equals make's,
ninja's and cc -MM's; comment: link skipped, objects byte-identical; source <= 1.2 x ninja.

    python benchmarks/compare_cbuild.py [--runs 5] [--cases full,header,comment,source,noop]
        [--header c/dec/huffman.h] [--source c/dec/decode.c] [--work DIR] [--json OUT]
        [--quiet-cores 0.5]
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
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchenv import BENCH_DATA, ENV, BenchError, cpu_model, log
from sysload import Load, Probe, wait_quiet

SOURCE = Path(__file__).resolve().parent / "cproject_real"
TOOLS = ("pivotbuild", "make", "ninja")
PIVOTBUILD = [sys.executable, "-m", "pivotbuild"]
CPPFLAGS = ["-Ic/include"]
PROGRAM = "bin/brotli"
_MAKE_CC = re.compile(r"\s-c\s+(c/\S+\.c)\b")
_NINJA_CC = re.compile(r"CC build/(\S+)\.o$")


@dataclass
class Outcome:
    """One timed build: wall time, the load meanwhile, and what it compiled and linked."""

    wall: float
    load: Load
    cpu: float  # CPU seconds of the tool and everything it waited for (compilers included)
    compiled: set[str] = field(default_factory=set)  # sources, c/dir/name.c
    linked: bool = False


@dataclass
class Case:
    name: str
    runs: dict[str, list[Outcome]] = field(default_factory=lambda: {t: [] for t in TOOLS})
    notes: list[str] = field(default_factory=list)

    def median(self, tool: str) -> float:
        return statistics.median(o.wall for o in self.runs[tool])

    def cpu(self, tool: str) -> float:
        return statistics.median(o.cpu for o in self.runs[tool])

    def other_cores(self) -> float:
        loads = [o.load.other_cores for runs in self.runs.values() for o in runs]
        return statistics.median(loads) if loads else 0.0


# ---- the three copies ---------------------------------------------------------------------


def prepare(work: Path) -> dict[str, Path]:
    """A fresh copy of cproject_real per tool (sources, Makefile, build.ninja, pivot.toml)."""
    roots = {}
    for tool in TOOLS:
        root = work / tool
        if root.exists():
            shutil.rmtree(root)
        shutil.copytree(SOURCE, root, ignore=shutil.ignore_patterns(
            "build", "bin", ".pivotbuild", ".ninja_*", "compile_commands.json"))
        roots[tool] = root
    return roots


def reset(tool: str, root: Path) -> None:
    """Back to a tree that has never been built (pivotbuild: no cache, locks or memo)."""
    for name in ("build", "bin", ".pivotbuild", ".ninja_log", ".ninja_deps"):
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def build(tool: str, root: Path, plain: bool = False) -> Outcome:
    """Run the tool's -j2 build once, timed; what it compiled and whether it linked.
    ``plain``: pivotbuild without --json (its no-op fast path answers only plain commands),
    and nothing parsed from its output."""
    argv = {"pivotbuild": [*PIVOTBUILD, "repro", "-j2", *([] if plain else ["--json"])],
            "make": ["make", "-j2"], "ninja": ["ninja", "-j2"]}[tool]
    start = Probe.now()
    proc = subprocess.run(argv, cwd=root, env=ENV, capture_output=True, text=True, check=False)
    end = Probe.now()
    load = end.since(start)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise BenchError(f"{tool} build in {root} exited {proc.returncode}:\n{tail}")
    outcome = Outcome(load.wall, load, end.own - start.own)
    if tool == "pivotbuild" and plain:
        pass
    elif tool == "pivotbuild":
        for stage in json.loads(proc.stdout)["stages"]:
            if stage["action"] != "run":
                continue
            if stage["name"] == "link":
                outcome.linked = True
            elif stage["name"].startswith("cc@"):
                outcome.compiled.add("c/" + stage["name"][3:].replace(".", "/") + ".c")
    elif tool == "make":
        for line in proc.stdout.splitlines():
            found = _MAKE_CC.search(line)
            if found:
                outcome.compiled.add(found.group(1))
            elif f"-o {PROGRAM}" in line:
                outcome.linked = True
    else:
        for line in proc.stdout.splitlines():
            found = _NINJA_CC.search(line.strip())
            if found:
                outcome.compiled.add(f"c/{found.group(1)}.c")
            elif line.strip().endswith(f"LINK {PROGRAM}"):
                outcome.linked = True
    return outcome


def check_program(root: Path) -> None:
    out = subprocess.run([str(root / PROGRAM), "--version"], capture_output=True, text=True,
                         check=False).stdout
    if not out.startswith("brotli "):
        raise BenchError(f"{root / PROGRAM} --version printed {out!r}")


def objects(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in (root / "build").rglob("*.o")}


def includers(root: Path, header: str) -> set[str]:
    """The units whose `cc -MM` lists the header (paths normalised: gcc writes
    c/dec/../common/x.h)."""
    found = set()
    for unit in sorted(str(p.relative_to(root)) for p in (root / "c").rglob("*.c")):
        proc = subprocess.run(["cc", "-MM", *CPPFLAGS, unit], cwd=root, capture_output=True,
                              text=True, check=True)
        words = proc.stdout.replace("\\\n", " ").split()[1:]
        if header in {os.path.normpath(w) for w in words}:
            found.add(unit)
    return found


# ---- edits --------------------------------------------------------------------------------


def inside_guard(text: str, line: str) -> str:
    """``line`` inserted before the header's last #endif (its include guard)."""
    at = text.rstrip().rfind("#endif")
    if at < 0:
        raise BenchError("the header has no #endif to insert before")
    return text[:at] + line + "\n" + text[at:]


def edit_for(case: str, run: int, path: str, text: str) -> str:
    if case == "header":
        return inside_guard(text, f"__attribute__((used)) static const int "
                                  f"pb_bench_header_{run} = {run};")
    if case == "comment":
        return text + f"/* pivotbuild benchmark comment {run} */\n"
    if case == "source":
        return text + f"__attribute__((used)) static const int pb_bench_source_{run} = {run};\n"
    raise ValueError(case)


# ---- timing -------------------------------------------------------------------------------


def wait_for_quiet(max_cores: float) -> None:
    if max_cores > 0 and not wait_quiet(max_cores, timeout=20.0):
        log(f"  (other processes kept more than {max_cores} cores busy for 20 s; timing anyway)")


def run_full(case: Case, roots: dict[str, Path], runs: int, quiet: float) -> None:
    for r in range(runs):
        for tool in rotated(r):
            reset(tool, roots[tool])
            wait_for_quiet(quiet)
            outcome = build(tool, roots[tool])
            check_program(roots[tool])
            case.runs[tool].append(outcome)
            log(f"  full  run {r + 1}/{runs} {tool:<10} {outcome.wall:7.2f} s "
                f"(compiled {len(outcome.compiled)}, other cores {outcome.load.other_cores:.2f})")


def run_edit(case: Case, roots: dict[str, Path], path: str, runs: int, quiet: float) -> None:
    """Run r writes the file as it was plus edit r (a change from run r - 1's edit, so no
    rebuild in between is needed); afterwards the file is put back and rebuilt, untimed."""
    originals = {tool: (roots[tool] / path).read_text() for tool in TOOLS}
    for r in range(runs):
        for tool in rotated(r):
            root = roots[tool]
            before = objects(root)
            (root / path).write_text(edit_for(case.name, r, path, originals[tool]))
            wait_for_quiet(quiet)
            outcome = build(tool, root)
            check_program(root)
            if case.name == "comment" and tool == "pivotbuild":
                after = objects(root)
                changed = sorted(o for o in after if after[o] != before.get(o))
                if changed:
                    case.notes.append(f"run {r + 1}: objects changed by a comment: {changed}")
            case.runs[tool].append(outcome)
            log(f"  {case.name:<7} run {r + 1}/{runs} {tool:<10} {outcome.wall:7.2f} s "
                f"(compiled {len(outcome.compiled)}, linked {outcome.linked}, "
                f"other cores {outcome.load.other_cores:.2f})")
    for tool in TOOLS:
        (roots[tool] / path).write_text(originals[tool])
        build(tool, roots[tool])


def run_noop(case: Case, roots: dict[str, Path], runs: int, quiet: float) -> None:
    for r in range(runs):
        for tool in rotated(r):
            wait_for_quiet(quiet)
            outcome = build(tool, roots[tool], plain=True)
            if outcome.compiled or outcome.linked:
                case.notes.append(f"{tool}: a no-op built something: {outcome}")
            case.runs[tool].append(outcome)
    for label, argv, tool in (("make -q", ["make", "-q"], "make"),
                              ("ninja -n", ["ninja", "-n"], "ninja"),
                              ("pivotbuild status", [*PIVOTBUILD, "status", "-q"], "pivotbuild")):
        walls = []
        for _ in range(runs):
            start = time.perf_counter()
            code = subprocess.run(argv, cwd=roots[tool], env=ENV, capture_output=True,
                                  check=False).returncode
            walls.append(time.perf_counter() - start)
            if code != 0:
                case.notes.append(f"{label} exited {code} (not up to date?)")
        case.notes.append(f"{label}: median {statistics.median(walls):.3f} s")


def autogroup() -> str:
    """The kernel's scheduler autogrouping: when on, every session gets an equal share of a
    busy CPU, and pivotbuild starts each command in a session of its own, where make's and
    ninja's commands share their tool's (see the docstring)."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
    except OSError:
        return "?"


def rotated(run: int) -> list[str]:
    """The tools in a different order each run (no tool always first or last)."""
    k = run % len(TOOLS)
    return [*TOOLS[k:], *TOOLS[:k]]


# ---- compdb -------------------------------------------------------------------------------


def check_compdb(root: Path) -> list[str]:
    """compile_commands.json from `pivotbuild compdb`, checked (and clang-tidy -p run)."""
    proc = subprocess.run([*PIVOTBUILD, "compdb"], cwd=root, env=ENV, capture_output=True,
                          text=True, check=True)
    entries = json.loads(proc.stdout)
    (root / "compile_commands.json").write_text(proc.stdout)
    units = sorted(str(p.relative_to(root)) for p in (root / "c").rglob("*.c"))
    notes = [f"compdb: {len(entries)} entries, valid JSON; files "
             + ("= the 36 units" if sorted(e["file"] for e in entries) == units
                else "DIFFER from the units")]
    tidy = shutil.which("clang-tidy")
    if tidy is None:
        return [*notes, "clang-tidy: not installed (apt-get install clang-tidy)"]
    version = subprocess.run([tidy, "--version"], capture_output=True, text=True,
                             check=False).stdout.split("version")[-1].split()[0]
    failed = []
    for unit in units:
        r = subprocess.run([tidy, "-p", str(root), "--checks=-*,clang-analyzer-core.*",
                            "--quiet", unit], cwd=root, capture_output=True, text=True,
                           check=False)
        if r.returncode != 0 or "error:" in r.stdout + r.stderr:
            failed.append(unit)
    probe = "c/enc/encode.c"  # without the database: no -Ic/include, so it cannot compile
    bare = subprocess.run([tidy, "--checks=-*,clang-analyzer-core.*", "--quiet", probe, "--"],
                          cwd=root, capture_output=True, text=True, check=False)
    without = "fails" if bare.returncode != 0 else "compiles (unexpected)"
    notes.append(f"clang-tidy {version} -p: {len(units) - len(failed)}/{len(units)} units "
                 f"compile with the database{'; failed: ' + ', '.join(failed) if failed else ''}"
                 f"; {probe} without it {without}")
    return notes


# ---- report -------------------------------------------------------------------------------


def report(cases: list[Case], expected: set[str], header: str, source: str) -> dict:
    doc: dict = {"cpu": cpu_model(), "cores": os.cpu_count(), "cases": {},
                 "sched_autogroup": autogroup()}
    print(f"\nC build side by side: Brotli (36 units + link), {cpu_model()}, "
          f"{os.cpu_count()} cores; medians of {len(cases[0].runs['make'])} runs")
    print(f"{'case':<8} {'pivotbuild':>11} {'make -j2':>9} {'ninja -j2':>10} "
          f"{'pb/make':>8} {'pb/ninja':>9}  {'CPU s pb / make / ninja':>24}  other cores  target")
    for case in cases:
        pb, mk, nj = (case.median(t) for t in TOOLS)
        target = {"full": f"<= 1.05 x make: {'PASS' if pb <= 1.05 * mk else 'MISS'}",
                  "source": f"<= 1.2 x ninja: {'PASS' if pb <= 1.2 * nj else 'MISS'}"
                  }.get(case.name, "")
        if case.name in ("header", "comment"):
            sets = {t: {frozenset(o.compiled) for o in case.runs[t]} for t in TOOLS}
            same = all(s == {frozenset(expected)} for s in sets.values())
            target = f"sets = cc -MM's ({len(expected)} units): {'PASS' if same else 'MISS'}"
            if not same:
                case.notes.append(f"recompiled: { {t: sorted(map(sorted, s)) for t, s in sets.items()} }")
            links = {t: sorted({o.linked for o in case.runs[t]}) for t in TOOLS}
            case.notes.append(f"linked: {links}")
            if case.name == "comment":
                skipped = links["pivotbuild"] == [False]
                target += f"; pivotbuild link skipped: {'PASS' if skipped else 'MISS'}"
        cpu = " / ".join(f"{case.cpu(t):.2f}" for t in TOOLS)
        print(f"{case.name:<8} {pb:>10.2f}s {mk:>8.2f}s {nj:>9.2f}s {pb / mk:>8.2f} "
              f"{pb / nj:>9.2f}  {cpu:>24}  {case.other_cores():>11.2f}  {target}")
        doc["cases"][case.name] = {
            "median_s": {t: round(case.median(t), 3) for t in TOOLS},
            "cpu_median_s": {t: round(case.cpu(t), 3) for t in TOOLS},
            "runs_s": {t: [round(o.wall, 3) for o in case.runs[t]] for t in TOOLS},
            "other_cores_median": round(case.other_cores(), 2),
            "target": target, "notes": case.notes}
    for case in cases:
        for note in case.notes:
            print(f"  {case.name}: {note}")
    print(f"  header edited: {header}; source edited: {source}; "
          f"kernel.sched_autogroup_enabled = {autogroup()}")
    return doc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cases", default="full,header,comment,source,noop")
    parser.add_argument("--header", default="c/dec/huffman.h")
    parser.add_argument("--source", default="c/dec/decode.c")
    parser.add_argument("--work", type=Path, default=BENCH_DATA / "cbuild")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quiet-cores", type=float, default=0.5,
                        help="before each timed build, wait (up to 20 s) until other "
                             "processes use at most this many cores (0: do not wait)")
    args = parser.parse_args()
    for tool in ("make", "ninja", "cc"):
        if shutil.which(tool) is None:
            log(f"compare_cbuild: {tool} not found (ninja: Debian package ninja-build)")
            return 2
    wanted = args.cases.split(",")
    roots = prepare(args.work)
    expected = includers(roots["make"], args.header)
    log(f"{args.header}: included by {len(expected)} units per cc -MM: {sorted(expected)}")
    cases = []
    try:
        full = Case("full")
        run_full(full, roots, args.runs if "full" in wanted else 1, args.quiet_cores)
        if "full" in wanted:
            cases.append(full)
        for name, path in (("header", args.header), ("comment", args.header),
                           ("source", args.source)):
            if name in wanted:
                case = Case(name)
                run_edit(case, roots, path, args.runs, args.quiet_cores)
                if name == "source":
                    for tool in TOOLS:
                        sets = {frozenset(o.compiled) for o in case.runs[tool]}
                        if sets != {frozenset({path})}:
                            case.notes.append(f"{tool} recompiled {sorted(map(sorted, sets))}")
                cases.append(case)
        if "noop" in wanted:
            case = Case("noop")
            run_noop(case, roots, args.runs, args.quiet_cores)
            cases.append(case)
        compdb_notes = check_compdb(roots["pivotbuild"])
    except BenchError as exc:
        log(f"compare_cbuild: {exc}")
        return 1
    doc = report(cases, expected, args.header, args.source)
    for note in compdb_notes:
        print(f"  {note}")
    doc["compdb"] = compdb_notes
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
