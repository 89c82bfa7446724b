"""Fault injection: kill pivotbuild at random moments and check that nothing is lost.

Each round prepares a change, starts one command (repro -j 2 of several stages with
file and directory outputs, from the run cache or running them, commit, checkout, gc,
push or pull to a local directory, push or pull to S3 on a loopback moto server), kills it after a random delay (SIGKILL, or now
and then SIGTERM, which must end it as Ctrl-C does), and checks the invariants:
- every lock parses and is either the one before the command or the one it would
  write (locks are byte-identical across checkouts, so the expected bytes come from
  a reference project);
- every object in the cache and on the remote (directory or S3) matches its name, and
  every run-cache entry parses;
- no process the command started outlives it: no stage command (one sleeps for an odd
  time, so a survivor is there to be seen), none of their children, no helper;
- no source file was made read-only (a stage hardlinks a source into its output);
- state.db passes PRAGMA integrity_check;
- a SIGTERM ends the command with 143 (or it had finished: 0), never a traceback;
- the same command, run again to completion, succeeds and converges to the result an
  uninterrupted run gives.

The test suite runs a few hundred kills (test_kills.py); for thousands:

    python -m tests.reliability.killharness --kills 3000 [--commands repro,commit,...]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pivotbuild.hashing import PythonBackend
from pivotbuild.lock import parse_lock
from tests.cli.conftest import run

# "repro" flips between two versions that the run cache soon knows: it restores; "run" is
# `repro --no-run-cache`: its stage commands run, and are killed while they run.
LOCAL_COMMANDS = ("repro", "run", "commit", "checkout", "gc", "push", "pull")
S3_COMMANDS = ("s3push", "s3pull")
COMMANDS = LOCAL_COMMANDS + S3_COMMANDS
STAGES = ("shape", "count", "other")
SOURCES = ("pivot.toml", "shape.sh", "version")
SLEEP_MARK = "1.1731"  # a stage command that must not survive (its odd duration marks it)
SURVIVOR_GRACE_S = 0.5  # how long a killed command's processes may take to go
TERM_SHARE = 0.25  # of the kills, this share are SIGTERM

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
cmd = "mkdir -p other; v=$(cat version); (sleep {sleep}); ln -f version other/v; for i in 1 2 3 4 5 6 7 8; do echo $v$i > other/o$i; done"
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
    terms: int = 0
    violations: list[str] = field(default_factory=list)
    rounds: int = 0


def pivotbuild(args: list[str], cwd: Path, env: dict[str, str] | None = None,
               check: bool = True, fresh: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a command to its end: through the test process's fork server (what
    tests/cli/conftest.py::run does), or with ``fresh`` in an interpreter of its own, for a
    run whose duration must include the start-up that a killed command goes through."""
    if fresh:
        result = subprocess.run([sys.executable, "-m", "pivotbuild", *args], cwd=cwd,
                                env={**os.environ, **(env or {})}, capture_output=True,
                                text=True, timeout=300, check=False)
    else:
        done = run(args, cwd, env)
        result = subprocess.CompletedProcess(["pivotbuild", *args], done.code, done.out,
                                             done.err)
    if check and result.returncode != 0:
        raise AssertionError(f"pivotbuild {' '.join(args)} failed: {result.stderr}")
    return result


def make_project(root: Path, remote: str, version: int, local_config: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pivot.toml").write_text(PIPELINE.format(remote=remote, sleep=SLEEP_MARK))
    (root / "shape.sh").write_text(SHAPE)
    (root / "version").write_text(f"{version}\n")
    if local_config:
        (root / ".pivotbuild").mkdir(exist_ok=True)
        (root / ".pivotbuild" / "config.local.toml").write_text(local_config)
    return root


def lock_bytes(root: Path) -> dict[str, bytes | None]:
    locks = root / ".pivotbuild" / "locks"
    return {s: (locks / f"{s}.json").read_bytes() if (locks / f"{s}.json").exists() else None
            for s in STAGES}


def _object_problems(where: str, named: Iterator[tuple[str, bytes]]) -> list[str]:
    """(object name, content) pairs whose content does not match the name."""
    backend = PythonBackend()
    return [f"{where}: object {name} does not match its content" for name, data in named
            if backend.hash_bytes(data) != name.removesuffix(".dir")]


def _run_problems(where: str, named: Iterator[tuple[str, bytes]]) -> list[str]:
    """(run-cache entry name, content) pairs that do not parse."""
    bad = []
    for name, data in named:
        try:
            json.loads(data)
        except ValueError:
            bad.append(f"{where}: run-cache entry {name} does not parse")
    return bad


def _local_entries(top: Path, kind: str) -> Iterator[tuple[str, bytes]]:
    directory = top / kind
    for entry in directory.glob("*/*") if directory.is_dir() else []:
        if entry.name.startswith("."):
            continue  # a temp file a killed writer left: never a valid name
        yield entry.parent.name + entry.name.removesuffix(".json"), entry.read_bytes()


def objects_whole(top: Path) -> list[str]:
    """Problems with the objects and run-cache entries under a cache or local remote."""
    return (_object_problems(str(top), _local_entries(top, "files"))
            + _run_problems(str(top), _local_entries(top, "runs")))


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


def sources_writable(root: Path) -> list[str]:
    return [f"{root / name}: made read-only" for name in SOURCES
            if (root / name).exists() and not os.stat(root / name).st_mode & stat.S_IWUSR]


def processes_with(marker: bytes) -> list[str]:
    """'pid: command line' of live processes whose environment holds ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            status = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if marker in environ.split(b"\0") and status != "Z":
            found.append(f"{entry}: {argv[:120].decode(errors='replace').strip()}")
    return found


@dataclass(frozen=True)
class S3Target:
    """A bucket on an S3-protocol server (moto on loopback) and how to reach it."""

    endpoint: str
    bucket: str

    def filesystem(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint, skip_instance_cache=True,
                                 use_listings_cache=False)

    def config(self) -> str:
        return (f'[remotes.shared]\nendpoint_url = "{self.endpoint}"\n'
                f'region = "us-east-1"\n')

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def problems(self, prefix: str) -> list[str]:
        fs = self.filesystem()
        top = f"{self.bucket}/{prefix}"
        keys = [k for k in fs.find(top) if not k.rsplit("/", 1)[-1].startswith(".")]
        contents = fs.cat(keys) if keys else {}
        where = f"s3://{top}"

        def named(kind: str) -> Iterator[tuple[str, bytes]]:
            for key, data in contents.items():
                parts = key[len(top) + 1:].split("/")
                if len(parts) == 3 and parts[0] == kind:
                    yield parts[1] + parts[2].removesuffix(".json"), data

        return _object_problems(where, named("files")) + _run_problems(where, named("runs"))

    def empty(self, prefix: str) -> None:
        fs = self.filesystem()
        if fs.exists(f"{self.bucket}/{prefix}"):
            fs.rm(f"{self.bucket}/{prefix}", recursive=True)


@contextmanager
def s3_server() -> Iterator[S3Target]:
    """A moto S3 server on 127.0.0.1 with a fresh bucket, dummy credentials in the
    environment (so that pivotbuild's subprocesses inherit them), AWS config files off."""
    import logging

    from moto.server import ThreadedMotoServer

    from tests.s3server import _DROP, _ENV, free_port

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

    saved = {k: os.environ.get(k) for k in (*_ENV, *_DROP)}
    os.environ.update(_ENV)
    for key in _DROP:
        os.environ.pop(key, None)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        target = S3Target(f"http://{host}:{port}", f"killharness-{uuid.uuid4().hex[:12]}")
        target.filesystem().mkdir(target.bucket)
        yield target
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Harness:
    def __init__(self, work: Path, seed: int = 1, s3: S3Target | None = None) -> None:
        self.work = work
        self.rng = random.Random(seed)
        self.remote = work / "remote"
        self.remote.mkdir(parents=True, exist_ok=True)
        self.s3 = s3
        (work / "ref-remote").mkdir(exist_ok=True)
        # Every process a harness command starts carries this in its environment.
        self.marker = f"PIVOTBUILD_KILLHARNESS={uuid.uuid4().hex}"
        name, value = self.marker.split("=", 1)
        self.env = {"PIVOTBUILD_GC_GRACE_S": "0", name: value}
        self.refs = {v: self._reference(v) for v in (0, 1)}
        self.durations: dict[str, float] = {}

    def _reference(self, version: int) -> dict[str, bytes | None]:
        root = make_project(self.work / f"ref{version}", str(self.work / "ref-remote"), version)
        pivotbuild(["repro"], root, self.env)
        return lock_bytes(root)

    # ---- where each kind of round works -------------------------------------------

    def _on_s3(self, command: str) -> bool:
        return command.startswith("s3")

    def _remote_url(self, command: str) -> str:
        if self._on_s3(command):
            assert self.s3 is not None, "S3 rounds need the moto server (run_kills starts it)"
            return self.s3.url("cache")
        return str(self.remote)

    def _make(self, command: str, root: Path, version: int) -> Path:
        local = self.s3.config() if self._on_s3(command) and self.s3 else ""
        return make_project(root, self._remote_url(command), version, local)

    # ---- one round ------------------------------------------------------------------

    def _kill(self, command: list[str], cwd: Path, max_delay: float, stats: Stats,
              what: str) -> None:
        proc = subprocess.Popen([sys.executable, "-m", "pivotbuild", *command], cwd=cwd,
                                env={**os.environ, **self.env}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(self.rng.uniform(0, max_delay))
        term = self.rng.random() < TERM_SHARE
        if term:
            stats.terms += 1
            proc.send_signal(signal.SIGTERM)
        else:
            proc.kill()
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            stats.violations.append(f"{what}: still running 120 s after SIGTERM")
        # With SIGTERM, 143: handled as Ctrl-C; 0: it had finished; -15: killed while Python
        # started (before the handler was set) or while it shut down (after it was removed).
        if term and (proc.returncode not in (143, 0, -signal.SIGTERM) or "Traceback" in err):
            last = err.strip().splitlines()[-1:] if err.strip() else []
            stats.violations.append(f"{what}: SIGTERM gave exit {proc.returncode} {last}")
        self._check_survivors(stats, what)

    def _check_survivors(self, stats: Stats, what: str) -> None:
        marker = self.marker.encode()
        deadline = time.monotonic() + SURVIVOR_GRACE_S
        left = processes_with(marker)
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = processes_with(marker)
        for survivor in left:
            stats.violations.append(f"{what}: a process outlived the killed command: "
                                    f"{survivor}")
            try:
                os.kill(int(survivor.split(":")[0]), signal.SIGKILL)
            except OSError:
                pass

    def _check(self, command: str, root: Path, allowed: list[dict[str, bytes | None]],
               stats: Stats) -> None:
        now = lock_bytes(root)
        for stage in STAGES:
            if now[stage] not in {a[stage] for a in allowed}:
                stats.violations.append(f"{command}: lock of {stage} is neither old nor new")
            elif now[stage] is not None:
                parse_lock(now[stage], stage)
        stats.violations += objects_whole(root / ".pivotbuild" / "cache")
        if self._on_s3(command):
            assert self.s3 is not None
            stats.violations += self.s3.problems("cache")
        else:
            stats.violations += objects_whole(self.remote)
        stats.violations += state_db_ok(root)
        stats.violations += sources_writable(root)

    def _timed(self, key: str, command: list[str], cwd: Path) -> None:
        """How long the command takes from start to end, in a process of its own as the
        killed one is (the kill delays are drawn up to 1.2 times this)."""
        start = time.monotonic()
        pivotbuild(command, cwd, self.env, fresh=True)
        self.durations[key] = max(self.durations.get(key, 0.0), time.monotonic() - start)

    def round(self, command: str, stats: Stats) -> None:
        """Prepare, run once to completion (timing it), prepare again, kill, check, converge."""
        root = self.work / command
        if not root.exists():
            self._make(command, root, 0)
            pivotbuild(["repro"], root, self.env)
        prepare, args = getattr(self, f"_prepare_{command}"), self._args(command)
        if command not in self.durations:
            prepare(root)
            self._timed(command, args, root)
        version, before = prepare(root), lock_bytes(root)
        self._kill(args, root, self.durations[command] * 1.2, stats, command)
        stats.kills[command] = stats.kills.get(command, 0) + 1
        expected = self.refs[version]
        self._check(command, root, [before, expected], stats)
        pivotbuild(args, root, self.env)  # converges
        if lock_bytes(root) != expected and command in ("repro", "run", "commit"):
            stats.violations.append(f"{command}: did not converge to the reference locks")
        self._check_survivors(stats, f"{command} (the converging run)")
        stats.rounds += 1
        if stats.rounds % 6 == 0:  # now and then: outputs present and cached, cache sound
            verify = pivotbuild(["verify", "--cache"], root, self.env, check=False)
            if verify.returncode != 0:
                stats.violations.append(f"{command}: verify after convergence: {verify.stderr}")

    @staticmethod
    def _args(command: str) -> list[str]:
        return {"repro": ["repro", "-j", "2"], "run": ["repro", "-j", "2", "--no-run-cache"],
                "pull": ["pull", "-j", "2"],
                "push": ["push", "--run-cache"], "s3pull": ["pull", "-j", "2"],
                "s3push": ["push", "--run-cache"]}.get(command, [command])

    # ---- what each kind of round changes first ------------------------------------

    def _flip(self, root: Path) -> int:
        version = 1 - int((root / "version").read_text())
        (root / "version").write_text(f"{version}\n")
        return version

    def _prepare_repro(self, root: Path) -> int:
        return self._flip(root)

    def _prepare_run(self, root: Path) -> int:
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

    def _prepare_s3push(self, root: Path) -> int:
        assert self.s3 is not None
        self.s3.empty("cache")
        return int((root / "version").read_text())

    def _prepare_pull(self, root: Path, command: str = "pull") -> int:
        """A fresh clone: sources and locks, an empty cache and workspace."""
        source = self.work / f"{command}-source"
        if not source.exists():
            self._make(command, source, 0)
            pivotbuild(["repro"], source, self.env)
        pivotbuild(["push", "--run-cache"], source, self.env)
        shutil.rmtree(root, onerror=_writable_retry)
        self._make(command, root, int((source / "version").read_text()))
        shutil.copytree(source / ".pivotbuild" / "locks", root / ".pivotbuild" / "locks")
        return int((root / "version").read_text())

    def _prepare_s3pull(self, root: Path) -> int:
        return self._prepare_pull(root, "s3pull")


def _writable_retry(function, path, _exc) -> None:  # type: ignore[no-untyped-def]
    os.chmod(os.path.dirname(path), 0o755)
    function(path)


def run_kills(work: Path, kills: int, commands: tuple[str, ...] = COMMANDS,
              seed: int = 1) -> Stats:
    """``kills`` rounds over ``commands`` in turn (a moto server is started for S3 ones)."""
    unknown = set(commands) - set(COMMANDS)
    if unknown:
        raise ValueError(f"unknown commands: {', '.join(sorted(unknown))}")
    with _maybe_s3(any(c in S3_COMMANDS for c in commands)) as s3:
        harness, stats = Harness(work, seed, s3), Stats()
        for i in range(kills):
            harness.round(commands[i % len(commands)], stats)
    return stats


@contextmanager
def _maybe_s3(wanted: bool) -> Iterator[S3Target | None]:
    if not wanted:
        yield None
        return
    with s3_server() as target:
        yield target


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
    per = ", ".join(f"{k} {v}" for k, v in stats.kills.items())
    print(f"kills: {sum(stats.kills.values())} ({per}; {stats.terms} of them SIGTERM) in "
          f"{time.monotonic() - start:.0f} s; violations: {len(stats.violations)}")
    for violation in stats.violations:
        print(f"  {violation}")
    sys.exit(1 if stats.violations else 0)


if __name__ == "__main__":
    main()
