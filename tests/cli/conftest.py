"""Helpers for whole-command tests: run pivotbuild as a user would, in a subprocess."""

from __future__ import annotations

import ctypes
import json
import locale
import os
import runpy
import subprocess
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from tests.cli.forkserver import ForkServer, Unavailable


@dataclass
class Result:
    code: int
    out: str
    err: str


_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _drop_dac_capabilities() -> None:
    """Make root obey file permissions in the child: drop the capabilities that
    bypass them from the bounding set, so exec does not grant them back."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


_SERVER_LOCK = threading.Lock()
_SERVER: ForkServer | None = None
_WARNED: set[str] = set()


def _fork_server() -> ForkServer | None:
    """This test process's fork server (started on first use), or None when
    PIVOTBUILD_TEST_SUBPROCESS=1 asks for a real process per command."""
    global _SERVER
    if os.environ.get("PIVOTBUILD_TEST_SUBPROCESS") == "1":
        return None
    with _SERVER_LOCK:
        if _SERVER is None:
            _SERVER = ForkServer()
        return _SERVER


def _text(data: bytes) -> str:
    """Output bytes as subprocess.run(text=True) gives them: decoded, newlines translated."""
    text = data.decode(locale.getpreferredencoding(False))
    return text.replace("\r\n", "\n").replace("\r", "\n")


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
        obey_permissions: bool = False) -> Result:
    """Run pivotbuild as ``python -m pivotbuild ARGS`` would, stdin /dev/null: through this
    test process's fork server (forkserver.py), or as a real process when
    PIVOTBUILD_TEST_SUBPROCESS=1, when ``env`` changes what the interpreter reads as it
    starts, or when the server cannot serve. obey_permissions: as root, without the power
    to ignore them."""
    full_env = {**os.environ, **(env or {})}
    server = _fork_server()
    if server is not None:
        try:
            code, out, err = server.run(args, cwd, full_env, obey_permissions, timeout=300)
        except Unavailable:
            if server.dead is not None and server.dead not in _WARNED:
                _WARNED.add(server.dead)
                warnings.warn(f"{server.dead}; pivotbuild runs as real processes", stacklevel=2)
        else:
            result = Result(code, _text(out), _text(err))
            assert "Traceback" not in result.err, result.err
            return result
    preexec = _drop_dac_capabilities if obey_permissions and os.geteuid() == 0 else None
    proc = subprocess.run(
        [sys.executable, "-m", "pivotbuild", *args], check=False, cwd=cwd, env=full_env,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, preexec_fn=preexec,
        timeout=300,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return Result(proc.returncode, proc.stdout, proc.stderr)


CPROJECT = Path(__file__).resolve().parent.parent / "data" / "cproject"


def cproject_generator() -> ModuleType:
    """tests/data/cproject/make_project.py as a module (it writes the C project and says what
    includes what), run without leaving a __pycache__ in the data directory."""
    module = ModuleType("make_project")
    module.__dict__.update(runpy.run_path(str(CPROJECT / "make_project.py"),
                                          run_name="make_project"))
    return module


GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` as a fixed author, without the user's or the system's git config;
    what it printed, stripped. A failing git command fails the test."""
    proc = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV},
                          capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def ran(root: Path) -> list[str]:
    """What the stages' commands appended to ``runs.log`` (the run marker), in order."""
    log = root / "runs.log"
    return log.read_text().split() if log.exists() else []


def lock(root: Path, stage: str) -> dict:
    """A stage's lock file, parsed."""
    return json.loads((root / ".pivotbuild" / "locks" / f"{stage}.json").read_text())


def objects(root: Path) -> set[str]:
    """The names of the file objects in the project's cache (a write's temps left out)."""
    files = root / ".pivotbuild" / "cache" / "files"
    if not files.is_dir():
        return set()
    return {p.parent.name + p.name for p in files.glob("*/*") if not p.name.startswith(".")}


def history(root: Path, *args: str) -> list[dict]:
    """The runs ``history --json`` lists (it must succeed)."""
    result = run(["history", "--json", *args], root)
    assert result.code == 0, result.err
    return json.loads(result.out)["runs"]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pivot.toml").write_text("")
    return root


@pytest.fixture(autouse=True)
def every_lock_has_real_hashes(tmp_path: Path):
    """After every CLI test: each lock it left anywhere under its tmp_path parses,
    and every dep and out has a real hash (never null, never empty)."""
    yield
    from pivotbuild.lock import parse_lock
    from pivotbuild.names import ANY_HASH_RE

    for path in tmp_path.glob("**/.pivotbuild/locks/*.json"):
        text = path.read_bytes()
        parse_lock(text, path.stem)
        doc = json.loads(text)
        for entry in [*doc["deps"], *doc["outs"]]:
            assert isinstance(entry["hash"], str) and ANY_HASH_RE.fullmatch(entry["hash"]), path
        assert ANY_HASH_RE.fullmatch(doc["input_hash"]), path
