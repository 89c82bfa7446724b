"""Remotes side by side: pivotbuild push / pull against rsync -a and DVC, as whole processes.

The target (issue 5): push and pull of the 100,000-file tree to a local-directory remote,
median of at least 3 runs, as ratios: <= 1.5 x `rsync -a` of the same tree, <= 0.2 x
`dvc push` / `dvc pull` to a local remote; a second push with nothing new <= 5 x a no-op
`rsync -a`.

Set-up (once, reused while the tree and the tools' versions are the same; markers beside the
projects say so), under WORK (default bench-data/remote-bench/s<N>, git-ignored):

    pb/           a pivotbuild project: data/ (a copy of the tree), one stage
                  `cmd = "true"`, `outs = ["data"]`, committed with `pivotbuild commit` (the
                  cache holds the tree, hardlinked with data/), `[remotes.bench] url =
                  WORK/remote-pb`, `project.default_remote = "bench"`
    dvc/          a DVC project: git init + dvc init, data/ (a copy of the tree),
                  `dvc add data`, `dvc remote add -d bench WORK/remote-dvc`; DVC's state kept
                  inside it (core.site_cache_dir), analytics and update checks off
    remote-pb/, remote-dvc/, clone-pb/, clone-dvc/, rsync-dest/, rsync-dest-sync/
                  made by the timed runs

Timed, each a subprocess (wall clock), in three phases; within a phase the commands are
interleaved round-robin, --runs rounds, median reported:

    push   pivotbuild push     remote-pb deleted and made again empty before each run
           dvc push            remote-dvc likewise
           rsync -a data/ rsync-dest/          rsync-dest deleted before each run
           the same into rsync-dest-sync/, then `sync` (info: rsync made as durable as
           pivotbuild makes its copy)
    pull   pivotbuild pull     in clone-pb: a new directory holding only pivot.toml and
                               .pivotbuild/locks (empty cache, no data/), made before each run
           dvc pull            in clone-dvc: a new `git init` holding .dvc/config, .dvcignore,
                               .gitignore and data.dvc (empty cache, no data/, own site cache)
           rsync -a and rsync -a + sync, as in the push phase (the same tree copied anew)
    noop   pivotbuild push     again, the remote already holding everything
           rsync -a            again, rsync-dest already holding the tree
           dvc push            again (info)

What the previous round wrote is deleted at the start of each round, then the script
syncs and drops the page cache (as root; otherwise it waits --settle seconds): on ext4
without a journal (this VM) inodes freed in the last minute are skipped one by one when
allocating, which otherwise made file creation depend on how recently the last run's
tree was deleted (see clear_and_settle). Each command's reset then reads back what it
reads, `pivotbuild --version` / `dvc --version` included.

Every run is checked, untimed: after a push the remote holds every object and no temp file;
after a pull, sample files are compared byte for byte with the source tree, the number of
files is checked, and `pivotbuild status` must say "Everything is up to date."; pivotbuild's
and DVC's summaries must say that everything was sent (push) or that nothing was (noop).

Page cache (see README.md: this VM pages out page cache idle for about a minute): by default
('warm') what each command reads is read just before its run: pivotbuild's cache (data/, the
same inodes), DVC's cache, each remote for a pull, data/ for rsync. 'reread' drops those files
from the page cache first and reads them back (the state compare_hash.py uses); 'as-is'
touches nothing. The table's "disk MiB" column says how much was still read from disk during
the slowest-reading run. Writes are not flushed by rsync or DVC; pivotbuild's push and pull
syncfs() the file system before they finish (their durability), which is why the table has an
`rsync -a + sync` row. Before each run `sync` flushes what the previous one left dirty.

Noise: before timing the script waits (up to --wait-load-max s) for the 1-minute load average
to drop below --wait-load; before each phase it waits for other processes to use less than
--quiet-cores; a run during which they used more is redone once (within --quiet-budget s of
waiting in all). The load averages at the start and end of each phase are printed.

    python benchmarks/compare_remote.py [--runs 3] [--json OUT] [--cache warm|reread|as-is]
        [--small N] [--phases push,pull,noop] [--work DIR] [--keep] [--clean]

Quick smoke run (a 2,000-file tree generated with benchmarks/corpus.py, about a minute):
    python benchmarks/compare_remote.py --small 2000 --runs 1

Nothing is installed: rsync must be on PATH (`apt-get install -y rsync`), DVC is the one in
--dvc-venv (default bench-data/dvc-venv, as compare_pipeline.py installs it; without it the DVC
rows are skipped with a note). The full tree needs about 9 x 3.4 GB of free disk while it runs;
the transient directories are deleted at the end (--keep keeps them), the two projects are
kept for the next run (--clean deletes everything under WORK).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchenv import BENCH_DATA, ENV, REPO, BenchError, cpu_model, git_init, log, run
from corpus import CorpusParams, fanout, generate, read_manifest, small_relpath
from pagecache import read_all, reread
from sysload import Probe, QuietGate, wait_quiet

SHARED_CORPUS = BENCH_DATA / CorpusParams().tag() / "data"
PHASES = ("push", "pull", "noop")
CACHE_STATES = ("warm", "reread", "as-is")
SAMPLE_FILES = 24  # files compared byte for byte after each pull

def rm(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        subprocess.run(["rm", "-rf", "--", str(p)], check=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


def empty_dir(p: Path) -> Path:
    rm(p)
    p.mkdir(parents=True)
    return p


def files_under(root: Path) -> list[str]:
    """Every regular file below root (paths), hidden ones included."""
    out = []
    for dirpath, _dirs, names in os.walk(root):
        out.extend(os.path.join(dirpath, n) for n in names)
    return out


# ---- tools ----------------------------------------------------------------------------------

@dataclass
class Tools:
    pivotbuild: list[str]
    rsync: str
    dvc: str | None
    git: str | None
    notes: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)


def find_tools(dvc_venv: Path) -> Tools:
    beside = Path(sys.executable).parent / "pivotbuild"  # not a pyenv shim: no bash start-up
    pb = [str(beside)] if beside.is_file() and os.access(beside, os.X_OK) \
        else [sys.executable, "-m", "pivotbuild"]
    rsync = shutil.which("rsync")
    if rsync is None:
        raise BenchError("rsync is not installed: install it with `apt-get install -y rsync` "
                         "(Debian/Ubuntu, as root) and run this again")
    notes: list[str] = []
    git = shutil.which("git")
    dvc: str | None = str(dvc_venv / "bin" / "dvc")
    if not os.access(dvc, os.X_OK):
        notes.append(f"DVC skipped: {dvc} not found (install it with `python3 -m venv "
                     f"{dvc_venv} && {dvc_venv}/bin/pip install dvc`)")
        dvc = None
    elif git is None:
        notes.append("DVC skipped: git is not on PATH and DVC needs it")
        dvc = None
    tools = Tools(pb, rsync, dvc, git, notes)
    for name, argv in (("pivotbuild", [*pb, "--version"]), ("rsync", [rsync, "--version"]),
                       ("dvc", [dvc, "--version"] if dvc else None),
                       ("git", [git, "--version"] if git else None)):
        if argv:
            r = run(argv, REPO, check=False)
            lines = r.stdout.strip().splitlines()
            if r.returncode != 0 and name == "dvc":
                notes.append(f"DVC skipped: `{shlex.join(argv)}` exited {r.returncode}")
                tools.dvc = None
                continue
            tools.versions[name] = lines[0] if lines else "?"
    return tools


# ---- the tree and the projects --------------------------------------------------------------

@dataclass
class Tree:
    root: Path  # the source tree (never written)
    rels: list[str]  # its files, relative to root
    nbytes: int


def source_tree(n: int, work_base: Path) -> Tree:
    """The corpus' small-file tree with n files: the shared 100,000-file corpus when it
    matches, else one generated with corpus.py under work_base."""
    m = read_manifest(SHARED_CORPUS)
    if m and m.get("params", {}).get("small") == n and m.get("small_files") == n:
        root = SHARED_CORPUS
    else:
        root = work_base / f"corpus-s{n}"
        if read_manifest(root) is None:
            log(f"generating a {n}-file tree in {root} (benchmarks/corpus.py --large 0)")
        m = generate(root, CorpusParams(small=n, large=0), verbose=True)
    fan = m["fanout"]
    assert fan == fanout(n)
    rels = [small_relpath(i, fan).split("/", 1)[1] for i in range(n)]
    return Tree(root / "small", rels, int(m["small_bytes"]))


@dataclass
class Layout:
    work: Path

    @property
    def pb(self) -> Path:
        return self.work / "pb"

    @property
    def dvc(self) -> Path:
        return self.work / "dvc"

    @property
    def remote_pb(self) -> Path:
        return self.work / "remote-pb"

    @property
    def remote_dvc(self) -> Path:
        return self.work / "remote-dvc"

    @property
    def clone_pb(self) -> Path:
        return self.work / "clone-pb"

    @property
    def clone_dvc(self) -> Path:
        return self.work / "clone-dvc"

    @property
    def rsync_dest(self) -> Path:
        return self.work / "rsync-dest"

    @property
    def rsync_dest_sync(self) -> Path:
        return self.work / "rsync-dest-sync"

    def transient(self) -> list[Path]:
        return [self.remote_pb, self.remote_dvc, self.clone_pb, self.clone_dvc,
                self.rsync_dest, self.rsync_dest_sync]


def copy_tree(src: Path, dst: Path) -> None:
    rm(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-r", "--", str(src), str(dst)], check=True)


def pivot_toml(remote: Path) -> str:
    return "\n".join([
        "[project]",
        'default_remote = "bench"',
        "",
        "[remotes.bench]",
        f"url = {json.dumps(str(remote))}",  # a JSON string of plain ASCII is a TOML string
        "",
        "[stages.gen]",
        'cmd = "true"',
        "deps = []",
        'outs = ["data"]',
        "",
    ])


def setup_pb(tools: Tools, tree: Tree, lay: Layout) -> None:
    p = lay.pb
    marker = p.with_name("pb.setup-ok")
    want = f"{tree.root} {len(tree.rels)} {tools.versions.get('pivotbuild')}\n"
    if marker.is_file() and marker.read_text() == want and (p / "data").is_dir():
        (p / "pivot.toml").write_text(pivot_toml(lay.remote_pb))
        if run([*tools.pivotbuild, "status", "-q"], p, check=False).returncode == 0:
            log(f"pivotbuild project: reusing {p} (delete {marker} to rebuild it)")
            return
    marker.unlink(missing_ok=True)
    log(f"pivotbuild project: copying {len(tree.rels)} files into {p}/data, then "
        f"`pivotbuild commit`")
    rm(p)
    copy_tree(tree.root, p / "data")
    (p / "pivot.toml").write_text(pivot_toml(lay.remote_pb))
    run([*tools.pivotbuild, "commit"], p)
    status = run([*tools.pivotbuild, "status"], p, check=False)
    if status.returncode != 0 or "Everything is up to date." not in status.stdout:
        raise BenchError(f"pivotbuild status in {p} after commit: {status.stdout.strip()}")
    os.sync()
    marker.write_text(want)


def dvc_local_config(proj: Path) -> None:
    """DVC settings for this machine only: no analytics or update checks, its site cache (the
    data index and friends) inside the project so that deleting the project forgets it."""
    (proj / ".dvc" / "config.local").write_text(
        "[core]\n    analytics = false\n    check_update = false\n"
        f"    site_cache_dir = {proj / '.dvc' / 'site-cache'}\n")


def setup_dvc(tools: Tools, tree: Tree, lay: Layout) -> None:
    assert tools.dvc and tools.git
    d = lay.dvc
    marker = d.with_name("dvc.setup-ok")
    want = f"{tree.root} {len(tree.rels)} {tools.versions.get('dvc')} {lay.remote_dvc}\n"
    if marker.is_file() and marker.read_text() == want and (d / "data.dvc").is_file() \
            and (d / ".dvc" / "cache").is_dir():
        log(f"DVC project: reusing {d} (delete {marker} to rebuild it)")
        return
    marker.unlink(missing_ok=True)
    log(f"DVC project: copying {len(tree.rels)} files into {d}/data, then `dvc add data` "
        f"(DVC hashes and copies the tree: minutes for 100,000 files)")
    rm(d)
    copy_tree(tree.root, d / "data")
    git_init(tools.git, d)
    run([tools.dvc, "init", "-q"], d)
    dvc_local_config(d)
    t0 = time.perf_counter()
    run([tools.dvc, "add", "-q", "data"], d)
    log(f"  dvc add took {time.perf_counter() - t0:.0f} s")
    run([tools.dvc, "remote", "add", "-d", "bench", str(lay.remote_dvc)], d)
    os.sync()
    marker.write_text(want)


def make_clone_pb(lay: Layout) -> None:
    c = empty_dir(lay.clone_pb)
    shutil.copy2(lay.pb / "pivot.toml", c / "pivot.toml")
    shutil.copytree(lay.pb / ".pivotbuild" / "locks", c / ".pivotbuild" / "locks")


def make_clone_dvc(tools: Tools, lay: Layout) -> None:
    assert tools.git
    c = empty_dir(lay.clone_dvc)
    git_init(tools.git, c)
    (c / ".dvc").mkdir()
    for rel in (".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore", "data.dvc"):
        if (lay.dvc / rel).exists():
            shutil.copy2(lay.dvc / rel, c / rel)
    dvc_local_config(c)


# ---- checks (untimed) -----------------------------------------------------------------------

def sample(tree: Tree, k: int = SAMPLE_FILES) -> list[str]:
    """The first and last file and k - 2 others, a new random choice each time."""
    rels = tree.rels
    picks = {rels[0], rels[-1]}
    picks.update(random.sample(rels, min(len(rels), max(0, k - 2))))
    return sorted(picks)


def check_copy(tree: Tree, dst: Path, what: str) -> None:
    """dst holds exactly as many files as the tree, and sample files equal byte for byte."""
    n = len(files_under(dst))
    if n != len(tree.rels):
        raise BenchError(f"{what}: {dst} holds {n} files, the tree {len(tree.rels)}")
    for rel in sample(tree):
        if not filecmp.cmp(tree.root / rel, dst / rel, shallow=False):
            raise BenchError(f"{what}: {dst / rel} differs from {tree.root / rel}")


def check_remote(tree: Tree, remote: Path, what: str) -> None:
    """Every object (each file of the tree, its .dir manifest) and no temp left behind."""
    found = files_under(remote)
    hidden = [f for f in found if os.path.basename(f).startswith(".")]
    if hidden:
        raise BenchError(f"{what}: {len(hidden)} temp/hidden file(s) left on {remote}, "
                         f"e.g. {hidden[0]}")
    if len(found) != len(tree.rels) + 1:
        raise BenchError(f"{what}: {remote} holds {len(found)} objects, expected "
                         f"{len(tree.rels) + 1} (the files and one .dir)")


def pb_up_to_date(tools: Tools, proj: Path, what: str) -> None:
    r = run([*tools.pivotbuild, "status"], proj, check=False)
    if r.returncode != 0 or "Everything is up to date." not in r.stdout:
        raise BenchError(f"{what}: `pivotbuild status` in {proj} does not say up to date: "
                         f"{r.stdout.strip()[-400:]}")


_PB_SUMMARY = re.compile(r"(push to|fetch from) '[^']+': (\d+) object\(s\) \([^)]*\) "
                         r"(sent|received)[^,]*, (\d+) already there, (\d+) failed")


def pb_summary(out: str) -> tuple[int, int, int]:
    """(objects moved, already there, failed) from pivotbuild's summary line."""
    m = _PB_SUMMARY.search(out)
    if m is None:
        raise BenchError(f"no transfer summary in pivotbuild's output: {out.strip()[-300:]}")
    return int(m.group(2)), int(m.group(4)), int(m.group(5))


def expect_pb(out: str, moved: int, what: str) -> None:
    got = pb_summary(out)
    if got[0] != moved or got[2]:
        raise BenchError(f"{what}: pivotbuild moved {got[0]} objects ({got[2]} failed), "
                         f"expected {moved}: {out.strip()[-300:]}")


def expect_dvc_count(out: str, n: int, verb: str, what: str) -> None:
    """DVC prints e.g. '2001 files pushed' / '2001 files fetched' / 'Everything is up to
    date.'; n = 0 means the latter."""
    if n == 0:
        if "up to date" not in out.lower() and not re.search(r"\b0 files? " + verb, out):
            raise BenchError(f"{what}: dvc {verb} something: {out.strip()[-300:]}")
        return
    m = re.search(r"(\d+) files? " + verb, out)
    if m is None or int(m.group(1)) < n:
        raise BenchError(f"{what}: dvc did not report {n} files {verb}: {out.strip()[-300:]}")


# ---- measuring ------------------------------------------------------------------------------

@dataclass
class Cmd:
    key: str
    tool: str
    argv: list[str]
    cwd: Path | Callable[[], Path]
    clear: Callable[[], None] | None = None  # deletes the last run's files: round start
    startup: list[str] | None = None  # `tool --version`: run before the reset, untimed
    reset: Callable[[], None] | None = None  # before every run, untimed
    check: Callable[[str], None] | None = None  # after every run (its output), untimed
    times: list[float] = field(default_factory=list)
    other_cores: list[float] = field(default_factory=list)
    disk_mib: list[float] = field(default_factory=list)
    redone: int = 0
    error: str | None = None

    @property
    def shown(self) -> str:
        argv = list(self.argv)
        if argv[:2] == ["sh", "-c"]:
            return argv[2]
        argv[0] = Path(argv[0]).name
        return shlex.join(argv)

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times and not self.error else None


def once(c: Cmd) -> tuple[float, float, float]:
    """One run: (seconds, other processes' cores meanwhile, MiB read from disk)."""
    os.sync()  # what the last run left dirty is flushed before the reset reads anything
    if c.startup:  # the tool's own files back in the page cache (see clear_and_settle)
        subprocess.run(c.startup, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
    if c.reset:
        c.reset()
    os.sync()  # nor is what the reset left dirty this run's cost
    cwd = c.cwd() if callable(c.cwd) else c.cwd
    before = Probe.now()
    t0 = time.perf_counter()
    r = subprocess.run(c.argv, cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, check=False)
    secs = time.perf_counter() - t0
    load = Probe.now().since(before)
    if r.returncode != 0:
        raise BenchError(f"`{c.shown}` in {cwd} exited {r.returncode}: "
                         f"{r.stdout.strip()[-400:]}")
    if c.check:
        c.check(r.stdout)
    return secs, load.other_cores, load.disk_mib


def clear_and_settle(cmds: list[Cmd], settle: float) -> None:
    """Delete what these commands' last runs wrote, then make the freed inodes count as old.

    Why: ext4 without a journal (this VM's root file system) will not reuse an inode freed
    in the last minute (six when its inode-table block is still dirty), and finds that out
    inode by inode when allocating, for as long as the inode-table blocks are cached. Right
    after deleting the previous run's 100,000 files, creating 100,000 new ones spent up to
    half its time there (perf: recently_deleted), for every tool alike, and how much
    depended on the deletion history. So after deleting: sync, then drop the page cache
    (root only; the reset steps read back what each command reads, its tool's start-up
    included), or else wait ``settle`` seconds. Neither removes the cost: as allocation
    reads and dirties inode-table blocks again, about 14% of a push still goes there with
    the page cache dropped; only waiting six minutes does (README.md)."""
    cleared = False
    for c in cmds:
        if c.clear:
            c.clear()
            cleared = True
    if not cleared:
        return
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
    except OSError:
        if settle > 0:
            time.sleep(settle)


def measure(cmds: list[Cmd], runs: int, warmup: int, gate: QuietGate,
            quiet_cores: float, settle: float) -> None:
    live = [c for c in cmds if not c.error]
    if quiet_cores > 0 and not wait_quiet(quiet_cores, timeout=min(120.0, gate.budget),
                                          window=2.0):
        log(f"  (other processes stayed above {quiet_cores} cores; measuring anyway)")
    for r in range(1 - warmup, runs + 1):
        clear_and_settle([c for c in live if not c.error], settle)
        for c in live:
            if c.error:
                continue
            try:
                secs, other, disk = once(c)
                if r > 0 and gate.noisy_cores(other) and gate.wait():
                    log(f"  {c.key}: other processes used {other:.2f} cores: redoing the run")
                    c.redone += 1
                    clear_and_settle([c], settle)
                    secs, other, disk = once(c)
            except BenchError as exc:
                c.error = str(exc)
                log(f"  {c.key}: ERROR {exc}")
                continue
            if r > 0:
                c.times.append(secs)
                c.other_cores.append(other)
                c.disk_mib.append(disk)
        shown = ", ".join(f"{c.key} {c.times[-1]:.2f}" for c in live if c.times and r > 0)
        log(f"  round {r}/{runs}" + (" (warm-up)" if r <= 0 else "") + (f": {shown}"
                                                                         if r > 0 else ""))


class Gate(QuietGate):
    def noisy_cores(self, other_cores: float) -> bool:
        return other_cores > self.max_cores


def skipped(key: str, tool: str, why: str) -> Cmd:
    return Cmd(key, tool, [tool], REPO, error=f"skipped: {why}")


# ---- phases ---------------------------------------------------------------------------------

@dataclass
class Bench:
    tools: Tools
    tree: Tree
    lay: Layout
    args: argparse.Namespace

    def prepare(self, paths: Callable[[], list[str]]) -> Callable[[], None]:
        """A reset step putting these files in the chosen page-cache state."""
        state = self.args.cache

        def run() -> None:
            if state == "warm":
                read_all(paths())
            elif state == "reread":
                reread(paths())
        return run

    def data_files(self) -> list[str]:
        return [str(self.lay.pb / "data" / r) for r in self.tree.rels]

    def rsync_cmds(self, phase: str) -> list[Cmd]:
        src, dst, dst2 = self.lay.pb / "data", self.lay.rsync_dest, self.lay.rsync_dest_sync
        warm = self.prepare(self.data_files)
        argv = [self.tools.rsync, "-a", f"{src}/", f"{dst}/"]
        argv2 = [self.tools.rsync, "-a", f"{src}/", f"{dst2}/"]
        plain = Cmd(f"{phase}.rsync", "rsync", argv, self.lay.work, clear=lambda: rm(dst),
                    reset=warm,
                    check=lambda _out: check_copy(self.tree, dst, f"{phase}: rsync -a"))
        synced = Cmd(f"{phase}.rsync_sync", "rsync",
                     ["sh", "-c", f"{shlex.join(argv2)} && sync"], self.lay.work,
                     clear=lambda: rm(dst2), reset=warm)
        return [plain, synced]

    def push(self) -> list[Cmd]:
        t, lay = self.tools, self.lay
        n = len(self.tree.rels)
        warm_pb = self.prepare(self.data_files)

        def check_pb(out: str) -> None:
            expect_pb(out, n + 1, "pivotbuild push")
            check_remote(self.tree, lay.remote_pb / "files", "pivotbuild push")

        cmds = [Cmd("push.pb", "pivotbuild", [*t.pivotbuild, "push"], lay.pb,
                    startup=[*t.pivotbuild, "--version"],
                    clear=lambda: empty_dir(lay.remote_pb), reset=warm_pb, check=check_pb)]
        if t.dvc:
            warm_dvc = self.prepare(lambda: files_under(lay.dvc / ".dvc" / "cache"))

            def check_dvc(out: str) -> None:
                expect_dvc_count(out, n + 1, "pushed", "dvc push")
                check_remote(self.tree, lay.remote_dvc / "files", "dvc push")

            cmds.append(Cmd("push.dvc", "dvc", [t.dvc, "push"], lay.dvc,
                            startup=[t.dvc, "--version"],
                            clear=lambda: empty_dir(lay.remote_dvc), reset=warm_dvc,
                            check=check_dvc))
        else:
            cmds.append(skipped("push.dvc", "dvc", "DVC unavailable"))
        return cmds + self.rsync_cmds("push")

    def pull(self) -> list[Cmd]:
        t, lay = self.tools, self.lay
        n = len(self.tree.rels)
        if not (lay.remote_pb / "files").is_dir():
            log("pull: filling the pivotbuild remote (untimed `pivotbuild push`)")
            empty_dir(lay.remote_pb)
            run([*t.pivotbuild, "push"], lay.pb)
        warm_pb = self.prepare(lambda: files_under(lay.remote_pb))

        def check_pb(out: str) -> None:
            expect_pb(out, n + 1, "pivotbuild pull")
            check_copy(self.tree, lay.clone_pb / "data", "pivotbuild pull")
            pb_up_to_date(t, lay.clone_pb, "pivotbuild pull")

        cmds = [Cmd("pull.pb", "pivotbuild", [*t.pivotbuild, "pull"], lay.clone_pb,
                    startup=[*t.pivotbuild, "--version"],
                    clear=lambda: make_clone_pb(lay), reset=warm_pb, check=check_pb)]
        if t.dvc:
            if not (lay.remote_dvc / "files").is_dir():
                log("pull: filling the DVC remote (untimed `dvc push`)")
                empty_dir(lay.remote_dvc)
                run([t.dvc, "push"], lay.dvc)
            warm_dvc = self.prepare(lambda: files_under(lay.remote_dvc))

            def check_dvc(out: str) -> None:
                expect_dvc_count(out, n, "fetched", "dvc pull")
                check_copy(self.tree, lay.clone_dvc / "data", "dvc pull")

            cmds.append(Cmd("pull.dvc", "dvc", [t.dvc, "pull"], lay.clone_dvc,
                            startup=[t.dvc, "--version"],
                            clear=lambda: make_clone_dvc(t, lay), reset=warm_dvc,
                            check=check_dvc))
        else:
            cmds.append(skipped("pull.dvc", "dvc", "DVC unavailable"))
        return cmds + self.rsync_cmds("pull")

    def noop(self) -> list[Cmd]:
        t, lay = self.tools, self.lay
        log("noop: making sure both remotes and rsync-dest hold everything (untimed)")
        if not (lay.remote_pb / "files").is_dir():
            empty_dir(lay.remote_pb)
        run([*t.pivotbuild, "push"], lay.pb)
        check_remote(self.tree, lay.remote_pb / "files", "pivotbuild push")
        run([t.rsync, "-a", f"{lay.pb / 'data'}/", f"{lay.rsync_dest}/"], lay.work)
        cmds = [Cmd("noop.pb", "pivotbuild", [*t.pivotbuild, "push"], lay.pb,
                    check=lambda out: expect_pb(out, 0, "second pivotbuild push")),
                Cmd("noop.rsync", "rsync",
                    [t.rsync, "-a", f"{lay.pb / 'data'}/", f"{lay.rsync_dest}/"], lay.work)]
        if t.dvc:
            if not (lay.remote_dvc / "files").is_dir():
                empty_dir(lay.remote_dvc)
            run([t.dvc, "push"], lay.dvc)
            cmds.append(Cmd("noop.dvc", "dvc", [t.dvc, "push"], lay.dvc,
                            check=lambda out: expect_dvc_count(out, 0, "pushed",
                                                               "second dvc push")))
        else:
            cmds.append(skipped("noop.dvc", "dvc", "DVC unavailable"))
        return cmds


# ---- report ---------------------------------------------------------------------------------

LABELS = {
    "push.pb": "push to an empty remote",
    "push.dvc": "push to an empty remote",
    "push.rsync": "rsync -a to an empty dir",
    "push.rsync_sync": "rsync -a to an empty dir + sync",
    "pull.pb": "pull into a fresh clone",
    "pull.dvc": "pull into a fresh clone",
    "pull.rsync": "rsync -a to an empty dir",
    "pull.rsync_sync": "rsync -a to an empty dir + sync",
    "noop.pb": "push again, nothing new",
    "noop.rsync": "rsync -a again, nothing new",
    "noop.dvc": "push again, nothing new",
}

# (what, numerator, denominator, limit or None for information)
TARGETS = [
    ("push / rsync -a", "push.pb", "push.rsync", 1.5),
    ("push / dvc push", "push.pb", "push.dvc", 0.2),
    ("pull / rsync -a", "pull.pb", "pull.rsync", 1.5),
    ("pull / dvc pull", "pull.pb", "pull.dvc", 0.2),
    ("second push / no-op rsync -a", "noop.pb", "noop.rsync", 5.0),
    ("push / rsync -a + sync", "push.pb", "push.rsync_sync", None),
    ("pull / rsync -a + sync", "pull.pb", "pull.rsync_sync", None),
    ("second push / second dvc push", "noop.pb", "noop.dvc", None),
]


def report(cmds: dict[str, Cmd], phase_loads: dict[str, tuple[float, float]]) -> list[dict]:
    print(f"\n{'what':34} {'tool':10} {'median s':>9} {'min':>8} {'max':>8} "
          f"{'disk MiB':>8} {'other':>6} {'redo':>4}  command")
    phase = None
    for key, c in cmds.items():
        if key.split(".")[0] != phase:
            phase = key.split(".")[0]
            lo = phase_loads.get(phase)
            print(f"[{phase}]" + (f"  load average (1 min) {lo[0]:.2f} at start, {lo[1]:.2f} "
                                  f"at end" if lo else ""))
        what = LABELS.get(key, key)
        if c.median is None:
            print(f"{what:34} {c.tool:10} {'-':>9} {'':>8} {'':>8} {'':>8} {'':>6} {'':>4}  "
                  f"{c.shown}  [{c.error}]")
            continue
        print(f"{what:34} {c.tool:10} {c.median:9.3f} {min(c.times):8.3f} {max(c.times):8.3f} "
              f"{max(c.disk_mib):8.0f} {statistics.mean(c.other_cores):6.2f} {c.redone:4d}  "
              f"{c.shown}")
    print("  disk MiB: most read from disk in one run (0: what it read was in the page cache);"
          "\n  other: cores other processes kept busy meanwhile (mean over the kept runs);"
          "\n  redo: runs measured again because other processes were busy")
    rows = []
    print(f"\n{'pivotbuild vs':34} {'ratio':>8} {'target':>8}  result")
    for what, num, den, limit in TARGETS:
        a, b = cmds.get(num), cmds.get(den)
        if a is None or b is None:
            continue
        ratio = a.median / b.median if a.median is not None and b.median else None
        verdict = ("n/a" if ratio is None else "info" if limit is None
                   else "PASS" if ratio <= limit else "MISS")
        target = f"<= {limit:g}x" if limit is not None else ""
        print(f"{what:34} {'-' if ratio is None else f'{ratio:.3f}x':>8} {target:>8}  {verdict}")
        rows.append({"what": what, "numerator": num, "denominator": den, "ratio": ratio,
                     "target": limit, "result": verdict})
    return rows


def wait_for_load(limit: float, max_wait: float) -> tuple[float, float]:
    """Sleep until the 1-minute load average is below limit (at most max_wait s); (load
    then, seconds waited)."""
    t0 = time.perf_counter()
    last_note = -1e9
    while True:
        load = os.getloadavg()[0]
        waited = time.perf_counter() - t0
        if load < limit or waited >= max_wait:
            if load >= limit:
                log(f"load average still {load:.2f} after {waited:.0f} s: measuring anyway")
            return load, waited
        if waited - last_note >= 60:
            log(f"waiting for the 1-minute load average ({load:.2f}) to drop below {limit} "
                f"(up to {max_wait - waited:.0f} s more)")
            last_note = waited
        time.sleep(10)


def check_space(tree: Tree, lay: Layout, with_dvc: bool) -> None:
    """Fail early when the disk cannot hold every copy a run makes."""
    copies = 5 + (4 if with_dvc else 0)  # pb data, pb remote, pb clone, rsync dest (+ 1 slack)
    have = {p: (p.with_name(p.name + ".setup-ok")).is_file() for p in (lay.pb, lay.dvc)}
    made = (1 if have[lay.pb] else 0) + (2 if with_dvc and have[lay.dvc] else 0)
    need = (copies - made) * tree.nbytes + len(tree.rels) * copies * 4096
    free = shutil.disk_usage(lay.work).free
    if free < need:
        raise BenchError(f"{lay.work}: {free / 1e9:.1f} GB free, a run needs about "
                         f"{need / 1e9:.1f} GB more (use --small N for a smaller tree)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3, help="timed runs per command (median)")
    p.add_argument("--warmup", type=int, default=0,
                   help="untimed rounds before the push and pull phases (the noop phase always "
                        "has one)")
    p.add_argument("--small", type=int, default=100_000, metavar="N",
                   help="files in the tree (not 100000: a tree generated with corpus.py)")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma list of {','.join(PHASES)}")
    p.add_argument("--cache", choices=CACHE_STATES, default="warm",
                   help="page-cache state of what each command reads (see the top)")
    p.add_argument("--work", default=None,
                   help="scratch directory (default bench-data/remote-bench/s<N>)")
    p.add_argument("--dvc-venv", default=str(BENCH_DATA / "dvc-venv"))
    p.add_argument("--no-dvc", action="store_true", help="leave DVC out")
    p.add_argument("--settle", type=float, default=61.0,
                   help="without root: seconds to wait after deleting the last runs' files "
                        "(see clear_and_settle); 0: none")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    p.add_argument("--wait-load", type=float, default=0.6,
                   help="wait until the 1-minute load average is below this before timing "
                        "(0: do not wait)")
    p.add_argument("--wait-load-max", type=float, default=1800.0, help="longest wait, seconds")
    p.add_argument("--quiet-cores", type=float, default=0.3,
                   help="redo a run during which other processes used more cores than this")
    p.add_argument("--quiet-budget", type=float, default=600.0,
                   help="seconds spent waiting for quiet over the whole run, at most")
    p.add_argument("--keep", action="store_true",
                   help="keep the remotes, clones and rsync copy at the end")
    p.add_argument("--clean", action="store_true",
                   help="delete everything under the scratch directory at the end")
    args = p.parse_args(argv)
    phases = [x for x in args.phases.split(",") if x]
    if bad := set(phases) - set(PHASES):
        p.error(f"unknown phase(s): {', '.join(sorted(bad))}")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.small < 1:
        p.error("--small must be at least 1")
    base = BENCH_DATA / "remote-bench"
    work = Path(args.work).resolve() if args.work else base / f"s{args.small}"
    work.mkdir(parents=True, exist_ok=True)

    t_all = time.perf_counter()
    try:
        tools = find_tools(Path(args.dvc_venv))
        if args.no_dvc and tools.dvc:
            tools.dvc = None
            tools.notes.append("DVC left out (--no-dvc)")
        for note in tools.notes:
            log(f"NOTE: {note}")
        tree = source_tree(args.small, base)
        lay = Layout(work)
        check_space(tree, lay, tools.dvc is not None)
        setup_pb(tools, tree, lay)
        if tools.dvc:
            setup_dvc(tools, tree, lay)
        if args.wait_load > 0:
            load0, waited = wait_for_load(args.wait_load, args.wait_load_max)
        else:
            load0, waited = os.getloadavg()[0], 0.0
        loadavg_start = os.getloadavg()
        bench = Bench(tools, tree, lay, args)
        gate = Gate(args.quiet_cores, args.quiet_budget)
        cmds: dict[str, Cmd] = {}
        phase_loads: dict[str, tuple[float, float]] = {}
        for phase in phases:
            log(f"{phase}: setting up")
            phase_cmds = getattr(bench, phase)()
            log(f"{phase}: timing ({args.runs} runs, page cache '{args.cache}')")
            lo0 = os.getloadavg()[0]
            measure(phase_cmds, args.runs, 1 if phase == "noop" else args.warmup, gate,
                    args.quiet_cores, args.settle)
            phase_loads[phase] = (lo0, os.getloadavg()[0])
            cmds.update((c.key, c) for c in phase_cmds)
        loadavg_end = os.getloadavg()
    except BenchError as exc:
        log(f"ERROR: {exc}")
        return 1
    finally:
        if "lay" in locals():
            if args.clean:
                log(f"deleting {work}")
                rm(work)
            elif not args.keep:
                for t in lay.transient():
                    rm(t)

    order = [k for k in LABELS if k in cmds]
    cmds = {k: cmds[k] for k in order}
    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}; tree: {len(tree.rels)} files, "
          f"{tree.nbytes / 1e9:.2f} GB ({tree.root}); runs: {args.runs} (median)")
    print(f"page cache: '{args.cache}'" + {
        "warm": " (each command's source read just before its run: pivotbuild's cache = "
                "data/, DVC's cache, the remote for a pull, data/ for rsync)",
        "reread": " (each command's source dropped from the page cache and read back just "
                  "before its run)",
        "as-is": " (nothing read before the runs)"}[args.cache])
    print(f"load average: {loadavg_start[0]:.2f} {loadavg_start[1]:.2f} "
          f"{loadavg_start[2]:.2f} when timing started (waited {waited:.0f} s for < "
          f"{args.wait_load:g}), {loadavg_end[0]:.2f} {loadavg_end[1]:.2f} {loadavg_end[2]:.2f} "
          f"at the end; whole run {time.perf_counter() - t_all:.0f} s")
    print("versions: " + "; ".join(f"{k} {v}" for k, v in tools.versions.items()))
    for note in tools.notes:
        print(f"NOTE: {note}")
    rows = report(cmds, phase_loads)
    if args.json:
        doc = {
            "machine": {"nproc": os.cpu_count(), "cpu": cpu_model(),
                        "loadavg_start": loadavg_start, "loadavg_end": loadavg_end,
                        "load_waited_s": waited, "load_when_started": load0},
            "tree": {"root": str(tree.root), "files": len(tree.rels), "bytes": tree.nbytes},
            "args": vars(args), "versions": tools.versions, "notes": tools.notes,
            "phase_loads": phase_loads,
            "commands": {k: {"tool": c.tool, "what": LABELS.get(k, k), "argv": c.shown,
                             "times": c.times, "median": c.median,
                             "other_cores": c.other_cores, "disk_mib": c.disk_mib,
                             "redone": c.redone, "error": c.error}
                         for k, c in cmds.items()},
            "ratios": rows,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    if any(c.error and not c.error.startswith("skipped") for c in cmds.values()):
        return 1
    return 0 if all(r["result"] != "MISS" for r in rows) else 3


if __name__ == "__main__":
    sys.exit(main())
