"""Fault injection: SIGKILL pivotbuild at random moments and check that nothing is lost.

Each round prepares a change, starts one command (repro -j 2 of several stages with
file and directory outputs, commit, checkout, gc, push or pull), kills it after a
random delay, and checks the invariants:
- every lock parses and is either the one before the command or the one it would
  write (locks are byte-identical across checkouts, so the expected bytes come from
  a reference project);
- every object in the cache and on the remote matches its name;
- state.db passes PRAGMA integrity_check;
- the same command, run again to completion, succeeds and converges to the result an
  uninterrupted run gives.

The test suite runs a few hundred kills (test_kills.py); for thousands:

    python -m tests.reliability.killharness --kills 3000 [--commands repro,commit,...]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pivotbuild.hashing import PythonBackend
from pivotbuild.lock import parse_lock

COMMANDS = ("repro", "commit", "checkout", "gc", "push", "pull")
STAGES = ("shape", "count", "other")

PIPELINE = """
[project]
default_remote = "shared"

[remotes.shared]
url = "{remote}"

[stages.shape]
cmd = "sh shape.sh"
deps = ["shape.sh", "version"]
outs = ["shape.txt", "tree"]

[stages.count]
cmd = "ls tree | wc -l > count.txt; cat shape.txt >> count.txt"
deps = ["tree", "shape.txt"]
outs = ["count.txt"]

[stages.other]
cmd = "mkdir -p other; v=$(cat version); for i in 1 2 3 4 5 6 7 8; do echo $v$i > other/o$i; done"
deps = ["version"]
outs = ["other"]
"""

SHAPE = """\
v=$(cat version)
echo "shape $v" > shape.txt
mkdir -p tree
i=0
while [ $i -lt 80 ]; do echo "$v $i" > tree/f$i; i=$((i+1)); done
"""


@dataclass
class Stats:
    kills: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    rounds: int = 0


def pivotbuild(args: list[str], cwd: Path, env: dict[str, str] | None = None,
               check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "pivotbuild", *args], cwd=cwd,
                            env={**os.environ, **(env or {})}, capture_output=True,
                            text=True, timeout=300, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"pivotbuild {' '.join(args)} failed: {result.stderr}")
    return result


def make_project(root: Path, remote: Path, version: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pivot.toml").write_text(PIPELINE.format(remote=remote))
    (root / "shape.sh").write_text(SHAPE)
    (root / "version").write_text(f"{version}\n")
    return root


def lock_bytes(root: Path) -> dict[str, bytes | None]:
    locks = root / ".pivotbuild" / "locks"
    return {s: (locks / f"{s}.json").read_bytes() if (locks / f"{s}.json").exists() else None
            for s in STAGES}


def objects_whole(top: Path) -> list[str]:
    """Names of objects under top/files whose content does not match their name."""
    backend = PythonBackend()
    bad = []
    for obj in (top / "files").glob("*/*") if (top / "files").is_dir() else []:
        if obj.name.startswith("."):
            continue  # a temp file a killed writer left: never a valid object name
        name = obj.parent.name + obj.name
        if backend.hash_bytes(obj.read_bytes()) != name.removesuffix(".dir"):
            bad.append(f"{top}: object {name} does not match its content")
    return bad


def state_db_ok(root: Path) -> list[str]:
    path = root / ".pivotbuild" / "state.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    return [] if result == "ok" else [f"{path}: integrity_check says {result}"]


class Harness:
    def __init__(self, work: Path, seed: int = 1) -> None:
        self.work = work
        self.rng = random.Random(seed)
        self.remote = work / "remote"
        self.remote.mkdir(parents=True, exist_ok=True)
        (work / "ref-remote").mkdir(exist_ok=True)
        self.env = {"PIVOTBUILD_GC_GRACE_S": "0"}
        self.refs = {v: self._reference(v) for v in (0, 1)}
        self.durations: dict[str, float] = {}

    def _reference(self, version: int) -> dict[str, bytes | None]:
        root = make_project(self.work / f"ref{version}", self.work / "ref-remote", version)
        pivotbuild(["repro"], root, self.env)
        return lock_bytes(root)

    def _kill(self, command: list[str], cwd: Path, max_delay: float) -> None:
        proc = subprocess.Popen([sys.executable, "-m", "pivotbuild", *command], cwd=cwd,
                                env={**os.environ, **self.env}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(self.rng.uniform(0, max_delay))
        proc.kill()
        proc.wait()

    def _check(self, root: Path, allowed: list[dict[str, bytes | None]], stats: Stats,
               what: str) -> None:
        now = lock_bytes(root)
        for stage in STAGES:
            if now[stage] not in {a[stage] for a in allowed}:
                stats.violations.append(f"{what}: lock of {stage} is neither old nor new")
            elif now[stage] is not None:
                parse_lock(now[stage], stage)
        stats.violations += objects_whole(root / ".pivotbuild" / "cache")
        stats.violations += objects_whole(self.remote)
        stats.violations += state_db_ok(root)

    def _timed(self, command: list[str], cwd: Path) -> None:
        start = time.monotonic()
        pivotbuild(command, cwd, self.env)
        self.durations[command[0]] = max(self.durations.get(command[0], 0.0),
                                         time.monotonic() - start)

    def round(self, command: str, stats: Stats) -> None:
        """Prepare, run once to completion (timing it), prepare again, kill, check, converge."""
        root = self.work / command
        if not root.exists():
            make_project(root, self.remote, 0)
            pivotbuild(["repro"], root, self.env)
        prepare, args = getattr(self, f"_prepare_{command}"), self._args(command)
        if command not in self.durations:
            prepare(root)
            self._timed(args, root)
        version, before = prepare(root), lock_bytes(root)
        self._kill(args, root, self.durations[command] * 1.2)
        stats.kills[command] = stats.kills.get(command, 0) + 1
        expected = self.refs[version]
        self._check(root, [before, expected], stats, command)
        pivotbuild(args, root, self.env)  # converges
        if lock_bytes(root) != expected and command in ("repro", "commit"):
            stats.violations.append(f"{command}: did not converge to the reference locks")
        stats.rounds += 1
        if stats.rounds % 6 == 0:  # now and then: outputs present and cached, cache sound
            verify = pivotbuild(["verify", "--cache"], root, self.env, check=False)
            if verify.returncode != 0:
                stats.violations.append(f"{command}: verify after convergence: {verify.stderr}")

    @staticmethod
    def _args(command: str) -> list[str]:
        return {"repro": ["repro", "-j", "2"], "pull": ["pull", "-j", "2"],
                "push": ["push", "--run-cache"]}.get(command, [command])

    # ---- what each kind of round changes first ------------------------------------

    def _flip(self, root: Path) -> int:
        version = 1 - int((root / "version").read_text())
        (root / "version").write_text(f"{version}\n")
        return version

    def _prepare_repro(self, root: Path) -> int:
        return self._flip(root)

    def _prepare_commit(self, root: Path) -> int:
        version = self._flip(root)
        pivotbuild(["repro", "--no-commit", "-j", "2"], root, self.env)
        return version

    def _prepare_checkout(self, root: Path) -> int:
        for path in ("shape.txt", "tree", "count.txt", "other"):
            target = root / path
            if target.is_dir():
                shutil.rmtree(target, onerror=_writable_retry)
            elif target.exists():
                target.unlink()
        return int((root / "version").read_text())

    def _prepare_gc(self, root: Path) -> int:
        version = self._flip(root)  # leaves the other version's objects as garbage
        pivotbuild(["repro", "-j", "2"], root, self.env)
        return version

    def _prepare_push(self, root: Path) -> int:
        shutil.rmtree(self.remote, ignore_errors=True)
        self.remote.mkdir()
        return int((root / "version").read_text())

    def _prepare_pull(self, root: Path) -> int:
        """A fresh clone: sources and locks, an empty cache and workspace."""
        source = self.work / "push"
        if not source.exists():
            make_project(source, self.remote, 0)
            pivotbuild(["repro"], source, self.env)
        pivotbuild(["push", "--run-cache"], source, self.env)
        shutil.rmtree(root, onerror=_writable_retry)
        make_project(root, self.remote, int((source / "version").read_text()))
        shutil.copytree(source / ".pivotbuild" / "locks", root / ".pivotbuild" / "locks")
        return int((root / "version").read_text())


def _writable_retry(function, path, _exc) -> None:  # type: ignore[no-untyped-def]
    os.chmod(os.path.dirname(path), 0o755)
    function(path)


def run_kills(work: Path, kills: int, commands: tuple[str, ...] = COMMANDS,
              seed: int = 1) -> Stats:
    harness, stats = Harness(work, seed), Stats()
    for i in range(kills):
        harness.round(commands[i % len(commands)], stats)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=600)
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None, help="scratch dir (default: tmp)")
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        start = time.monotonic()
        stats = run_kills(work, args.kills, tuple(args.commands.split(",")), args.seed)
    print(f"kills: {sum(stats.kills.values())} ({', '.join(f'{k} {v}' for k, v in stats.kills.items())})"
          f" in {time.monotonic() - start:.0f} s; violations: {len(stats.violations)}")
    for violation in stats.violations:
        print(f"  {violation}")
    sys.exit(1 if stats.violations else 0)


if __name__ == "__main__":
    main()
