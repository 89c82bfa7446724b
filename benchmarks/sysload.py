"""How trustworthy a timing is: disk reads and other processes' CPU during it.

A "warm page cache" benchmark is only warm if nothing was read from disk while
it ran, and a 2-core machine shared with other work gives noisy wall clocks.
`Probe` snapshots /proc/vmstat (pgpgin) and /proc/stat (busy CPU) with this
process's and its waited-for children's CPU time, so a timing can be printed
next to the disk MB read and the CPU that something else used meanwhile.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

_HZ = os.sysconf("SC_CLK_TCK")


def _pgpgin_kib() -> int:
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("pgpgin "):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = sum(fields[3:5])  # idle, iowait
    guest = sum(fields[8:10])  # guest, guest_nice: already counted in user, nice
    return (sum(fields) - idle - guest) / _HZ


def _own_cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass(frozen=True)
class Probe:
    wall: float
    busy: float
    own: float
    pgpgin: int

    @classmethod
    def now(cls) -> Probe:
        return cls(time.perf_counter(), _busy_seconds(), _own_cpu_seconds(), _pgpgin_kib())

    def since(self, start: Probe) -> Load:
        wall = self.wall - start.wall
        other = max(0.0, (self.busy - start.busy) - (self.own - start.own))
        return Load(wall, (self.pgpgin - start.pgpgin) / 1024, other)


@dataclass(frozen=True)
class Load:
    wall: float        # seconds
    disk_mib: float    # read from block devices meanwhile
    other_cpu: float   # CPU seconds used by other processes (and kernel threads)

    @property
    def other_cores(self) -> float:
        """Average number of cores something else kept busy (clock-tick coarse)."""
        return self.other_cpu / self.wall if self.wall > 0 else 0.0


def wait_quiet(max_cores: float, timeout: float = 60.0, window: float = 0.5) -> bool:
    """Wait until other processes use at most max_cores over a window (we are idle
    meanwhile, so all busy CPU is theirs). False if that did not happen within timeout."""
    deadline = time.perf_counter() + timeout
    while True:
        before = Probe.now()
        time.sleep(window)
        if Probe.now().since(before).other_cores <= max_cores:
            return True
        if time.perf_counter() >= deadline:
            return False


class QuietGate:
    """Decides whether a noisy run is worth redoing: waits for quiet, but spends
    at most `budget` seconds waiting over the whole benchmark, so that a machine
    that stays busy makes the benchmark noisy (and says so), not endless."""

    def __init__(self, max_cores: float, budget: float) -> None:
        self.max_cores = max_cores
        self.budget = budget
        self.waited = 0.0

    def noisy(self, load: Load, floor_s: float = 0.05) -> bool:
        """Other processes kept more than max_cores busy (beyond clock-tick noise)."""
        return load.other_cpu >= floor_s and load.other_cores > self.max_cores

    def wait(self) -> bool:
        """Wait for quiet; False (at once, once the budget is spent) if it did not come."""
        left = self.budget - self.waited
        if left <= 0:
            return False
        t0 = time.perf_counter()
        ok = wait_quiet(self.max_cores, timeout=left)
        self.waited += time.perf_counter() - t0
        return ok
