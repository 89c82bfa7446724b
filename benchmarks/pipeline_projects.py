"""The projects compare_pipeline.py times: the trees, the stage lists and each tool's files.

Everything here writes into a scratch directory (compare_pipeline's WORK) and nothing
times anything: the 100,000-file tree linked or copied from the corpus, the many-stage
pipeline as pivot.toml, dvc.yaml, a Makefile and a build.ninja, and copies of
cproject_real/ for each tool.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cproject_gen
from benchenv import BENCH_DATA, git_init, log, run
from corpus import CorpusParams, fanout, generate, read_manifest, small_relpath

SHARED_CORPUS = BENCH_DATA / CorpusParams().tag() / "data"
GROUP = 10  # stages per group in the many-stage pipeline
CHAIN_GROUPS = 10  # groups per chain of groups


def source_tree(n: int, work: Path) -> tuple[Path, list[str]]:
    """The corpus' small-file tree with n files and its files' relative paths."""
    m = read_manifest(SHARED_CORPUS)
    if m and m.get("params", {}).get("small") == n and m.get("small_files") == n:
        root, fan = SHARED_CORPUS, m["fanout"]
    else:
        root = work / f"corpus-s{n}"
        if read_manifest(root) is None:
            log(f"generating a {n}-file corpus in {root} (benchmarks/corpus.py --large 0)")
        fan = generate(root, CorpusParams(small=n, large=0), verbose=True)["fanout"]
    assert fan == fanout(n)
    rels = [small_relpath(i, fan).split("/", 1)[1] for i in range(n)]
    return root / "small", rels


def place_tree(src: Path, rels: list[str], dst: Path, how: str) -> None:
    """dst/<rel> for every rel: a hardlink to src/<rel> ("link") or a copy of it ("copy")."""
    made: set[str] = set()
    for rel in rels:
        parent = rel.rpartition("/")[0]
        if parent not in made:
            (dst / parent).mkdir(parents=True, exist_ok=True)
            made.add(parent)
        if how == "link":
            os.link(src / rel, dst / rel)
        else:
            shutil.copyfile(src / rel, dst / rel)
    os.sync()


def tree_project(proj: Path, src: Path, rels: list[str], how: str) -> None:
    """Make proj/data the tree (once: a marker beside proj says it is complete) and empty
    everything else in proj."""
    marker = proj.with_name(proj.name + ".data-ok")
    want = f"{src} {len(rels)} {how}\n"
    if not marker.is_file() or marker.read_text() != want or not (proj / "data").is_dir():
        marker.unlink(missing_ok=True)
        rmtree(proj)
        log(f"{'linking' if how == 'link' else 'copying'} {len(rels)} files into {proj}/data")
        place_tree(src, rels, proj / "data", how)
        marker.write_text(want)
    for p in proj.iterdir():
        if p.name != "data":
            rmtree(p)


def rmtree(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        subprocess.run(["rm", "-rf", "--", str(p)], check=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


def fresh(proj: Path) -> Path:
    rmtree(proj)
    proj.mkdir(parents=True)
    return proj


def toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string of printable ASCII is a TOML basic string


@dataclass
class Stage:
    name: str
    cmd: str
    deps: list[str]
    outs: list[str]


def write_pivot(proj: Path, stages: list[Stage]) -> None:
    lines = []
    for s in stages:
        lines += [f"[stages.{s.name}]", f"cmd = {toml_str(s.cmd)}",
                  f"deps = [{', '.join(map(toml_str, s.deps))}]",
                  f"outs = [{', '.join(map(toml_str, s.outs))}]", ""]
    (proj / "pivot.toml").write_text("\n".join(lines))


def write_dvc(proj: Path, stages: list[Stage]) -> None:
    lines = ["stages:"]
    for s in stages:
        lines += [f"  {s.name}:", f"    cmd: {json.dumps(s.cmd)}",
                  f"    deps: [{', '.join(map(json.dumps, s.deps))}]",
                  f"    outs: [{', '.join(map(json.dumps, s.outs))}]"]
    (proj / "dvc.yaml").write_text("\n".join(lines) + "\n")


def write_make(proj: Path, stages: list[Stage]) -> None:
    outs = [o for s in stages for o in s.outs]
    lines = [".PHONY: all", "all: " + " ".join(outs), ""]
    for s in stages:
        lines += [f"{' '.join(s.outs)}: {' '.join(s.deps)}", f"\t{s.cmd}", ""]
    (proj / "Makefile").write_text("\n".join(lines))


def ninja_path(path: str) -> str:
    """A path as a build.ninja build line spells it ($, space and : escaped with $)."""
    return path.replace("$", "$$").replace(" ", "$ ").replace(":", "$:")


def write_ninja(proj: Path, stages: list[Stage]) -> None:
    """One build line per stage, its cmd as a variable of one rule; the default targets are
    the outs nothing else reads, as Ninja chooses them."""
    lines = ["rule run", "  command = $cmd", ""]
    for s in stages:
        lines += [(f"build {' '.join(map(ninja_path, s.outs))}: run "
                   f"{' '.join(map(ninja_path, s.deps))}"),
                  f"  cmd = {s.cmd.replace('$', '$$')}", ""]
    (proj / "build.ninja").write_text("\n".join(lines))


def dvc_init(dvc: str, git: str, proj: Path) -> None:
    """`git init` + `dvc init` in proj; analytics and update checks off, DVC's state inside
    the project (core.site_cache_dir) so that dvc_forget can empty it."""
    git_init(git, proj)
    run([dvc, "init", "-q"], proj)
    for key, value in (("core.analytics", "false"), ("core.check_update", "false"),
                       ("core.site_cache_dir", str(proj / ".dvc" / "site-cache"))):
        run([dvc, "config", "--local", key, value], proj)


def dvc_forget(proj: Path) -> None:
    """Empty DVC's cache and every memo it keeps (state, index, links), drop dvc.lock."""
    for p in (proj / ".dvc" / "cache", proj / ".dvc" / "tmp", proj / ".dvc" / "site-cache",
              proj / "dvc.lock"):
        rmtree(p)


def pivot_forget(proj: Path) -> None:
    """Empty pivotbuild's cache, memo, locks and history."""
    rmtree(proj / ".pivotbuild")


def many_stages(n: int) -> list[Stage]:
    """n stages in groups of GROUP: j=0 root (from src/gNNN.txt and, inside a chain of
    groups, the previous group's fan-in), 1-4 a chain, 5-8 a fan-out of stage 4, 9 the
    fan-in of 5-8."""
    stages = []
    for i in range(n):
        g, j = divmod(i, GROUP)
        b = g * GROUP
        out = f"out/s{i:04d}"
        if j == 0:
            deps = [f"src/g{g:03d}.txt"]
            if g % CHAIN_GROUPS:  # continue the chain of groups: after the previous fan-in
                deps.append(f"out/s{b - 1:04d}")
            cmd = f"cat {' '.join(deps)} > {out}"
        elif j <= 4:
            deps = [f"out/s{i - 1:04d}"]
            cmd = f"cp {deps[0]} {out}"
        elif j <= 8:
            deps = [f"out/s{b + 4:04d}"]
            cmd = f"cp {deps[0]} {out}"
        else:
            deps = [f"out/s{k:04d}" for k in range(b + 5, min(b + 9, n))]
            cmd = f"cat {' '.join(deps)} > {out}"
        stages.append(Stage(f"s{i:04d}", cmd, deps, [out]))
    return stages


def sources(proj: Path, stages: list[Stage]) -> None:
    (proj / "out").mkdir(parents=True, exist_ok=True)
    for s in stages:
        for dep in s.deps:
            if dep.startswith("src/"):
                (proj / "src").mkdir(exist_ok=True)
                (proj / dep).write_text(f"{dep}\n")


def cproject_digest() -> str:
    """Names, sizes and mtimes of everything in cproject_real: a copy made from another
    state of it is made again."""
    import hashlib
    h = hashlib.sha256()
    for path in sorted(cproject_gen.SOURCE.rglob("*")):
        if path.is_file():
            st = path.stat()
            h.update(f"{path.relative_to(cproject_gen.SOURCE)} {st.st_size} {st.st_mtime_ns}\n"
                     .encode())
    return h.hexdigest()[:16]


def cproject_copy(dst: Path, names: tuple[str, ...], digest: str) -> bool:
    """dst holds cproject_real's names (copied with their mtimes), copied again only when
    the sources changed, so each tool's earlier build is reused; True if copied."""
    marker = dst.with_name(dst.name + ".sources-ok")
    want = f"{digest} {' '.join(names)}\n"
    if marker.is_file() and marker.read_text() == want and dst.is_dir():
        return False
    marker.unlink(missing_ok=True)
    fresh(dst)
    for name in names:
        src = cproject_gen.SOURCE / name
        if src.is_dir():
            shutil.copytree(src, dst / name)
        else:
            shutil.copy2(src, dst / name)
    os.sync()
    marker.write_text(want)
    return True
