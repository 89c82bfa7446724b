"""What the side-by-side scripts share: where scratch data goes, the environment the timed
tools run in, running a tool, and describing the machine."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BENCH_DATA = REPO / "bench-data"

# Subprocess environment: no pivotbuild overrides from the caller, no DVC analytics, bytecode
# cached as on a user's machine but outside the sources (PYTHONDONTWRITEBYTECODE=1 would
# recompile an editable install's modules on every run).
ENV = {k: v for k, v in os.environ.items()
       if k not in ("PIVOTBUILD_CACHE_DIR", "PIVOTBUILD_PURE_PYTHON", "PIVOTBUILD_NO_FASTPATH",
                    "PIVOTBUILD_FASTPATH_TRACE", "PYTHONDONTWRITEBYTECODE")}
ENV.update(DVC_NO_ANALYTICS="1", GIT_TERMINAL_PROMPT="0", LC_ALL="C",
           PYTHONPYCACHEPREFIX=str(BENCH_DATA / "pycache"))


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(argv: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a tool in ENV, output captured; with ``check`` a failure is a BenchError naming
    the command and the end of what it printed."""
    r = subprocess.run(argv, cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, check=False)
    if check and r.returncode != 0:
        tail = "\n".join(r.stdout.strip().splitlines()[-15:])
        raise BenchError(f"`{shlex.join(argv)}` in {cwd} exited {r.returncode}:\n{tail}")
    return r


def git_init(git: str, proj: Path) -> None:
    run([git, "init", "-q"], proj)
    run([git, "config", "user.name", "pivotbuild bench"], proj)
    run([git, "config", "user.email", "bench@example.invalid"], proj)
    run([git, "config", "commit.gpgsign", "false"], proj)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"
