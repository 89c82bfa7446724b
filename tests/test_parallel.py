"""parallel.map_parallel: the one thread-pool map."""

from __future__ import annotations

import threading

import pytest

from pivotbuild.parallel import map_parallel


@pytest.mark.parametrize("jobs", [0, 1, 3, 64])
@pytest.mark.parametrize("count", [0, 1, 2, 7, 1000])
def test_results_come_back_in_order(jobs: int, count: int):
    squares = [n * n for n in range(count)]
    assert map_parallel(lambda n: n * n, list(range(count)), jobs) == squares


def test_one_job_or_one_item_runs_in_the_calling_thread():
    here = threading.get_ident()
    assert map_parallel(lambda _: threading.get_ident(), [1, 2, 3], 1) == [here] * 3
    assert map_parallel(lambda _: threading.get_ident(), [1], 8) == [here]


def test_several_jobs_use_several_threads():
    barrier = threading.Barrier(2, timeout=10)  # both items must run at once to pass it

    def meet(_: int) -> int:
        barrier.wait()
        return threading.get_ident()

    assert len(set(map_parallel(meet, [1, 2], 2))) == 2


def test_an_exception_reaches_the_caller():
    def fail_on_three(n: int) -> int:
        if n == 3:
            raise ValueError("three")
        return n

    with pytest.raises(ValueError, match="three"):
        map_parallel(fail_on_three, list(range(10)), 4)
