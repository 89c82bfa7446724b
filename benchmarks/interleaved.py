"""Interleaved whole-process timings: min and median wall clock and median CPU per command.

Each round runs every command once, in order, so that a machine whose load changes
affects all of them alike; CPU (user + system of the child) moves less with other
processes' load than wall time does. PYTHONDONTWRITEBYTECODE is dropped so that the
interpreter's cached bytecode is used, as an installed pivotbuild's is.

    python benchmarks/interleaved.py ROUNDS 'LABEL|CWD|COMMAND ...' ...

COMMAND is split on spaces; a leading ``FULL `` runs it with PIVOTBUILD_NO_FASTPATH=1.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    rounds = int(argv[0])
    cmds = [spec.split("|", 2) for spec in argv[1:]]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    walls: dict[str, list[float]] = {label: [] for label, _, _ in cmds}
    cpus: dict[str, list[float]] = {label: [] for label, _, _ in cmds}
    for _ in range(rounds):
        for label, cwd, cmd in cmds:
            extra = {}
            if cmd.startswith("FULL "):
                cmd, extra = cmd[5:], {"PIVOTBUILD_NO_FASTPATH": "1"}
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run(cmd.split(), cwd=cwd, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env={**env, **extra}, check=False)
            walls[label].append(time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus[label].append(after.ru_utime - before.ru_utime
                               + after.ru_stime - before.ru_stime)
    for label, _, _ in cmds:
        wall = walls[label]
        print(f"{label:28s} wall min {min(wall) * 1000:7.1f} median "
              f"{statistics.median(wall) * 1000:7.1f} ms   cpu median "
              f"{statistics.median(cpus[label]) * 1000:6.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
