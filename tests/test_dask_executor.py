"""repro on a Dask cluster (issue 16, SPEC §12): one module-scoped LocalCluster of 2 process
workers on 127.0.0.1, a local-directory remote (S3 through the moto server for the exec bit).

Each test runs ``pivotbuild repro`` as a user would (a subprocess) against that cluster, and
looks at what a user would: locks, cache objects, exit codes, output, what ran. The four
slowest (S3, a killed worker, SIGINT and SIGTERM) are marked slow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import Result, run

pytest_plugins = ["tests.s3server"]  # s3_server, s3_bucket

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, s3_server: Any) -> Iterator[str]:
    """The scheduler's address. The workers inherit the S3 test credentials (s3_server sets
    them first: workers use their own credentials, never the client's) and a worker cache
    of their own."""
    import logging

    saved = os.environ.get("PIVOTBUILD_WORKER_CACHE")
    os.environ["PIVOTBUILD_WORKER_CACHE"] = str(tmp_path_factory.mktemp("worker-cache"))
    from pivotbuild.runners.dask import LOCAL_SCHEDULER_OPTIONS

    local = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     host="127.0.0.1", dashboard_address=None,
                                     scheduler_kwargs=LOCAL_SCHEDULER_OPTIONS,
                                     silence_logs=logging.CRITICAL)
    try:
        yield local.scheduler_address
    finally:
        local.close()
        if saved is None:
            os.environ.pop("PIVOTBUILD_WORKER_CACHE", None)
        else:
            os.environ["PIVOTBUILD_WORKER_CACHE"] = saved


def make_project(root: Path, stages: str, remote: str | None = None, executor: str = "",
                 extra: str = "") -> Path:
    """A project whose default remote is ``remote`` (default: a directory beside it)."""
    root.mkdir(parents=True)
    url = remote or str(root.parent / f"{root.name}-remote")
    if "://" not in url:
        Path(url).mkdir(parents=True, exist_ok=True)
    (root / "pivot.toml").write_text(
        f'[project]\ndefault_remote = "origin"\n\n[remotes.origin]\nurl = "{url}"\n{extra}\n'
        f"{executor}\n{stages}")
    return root


def dask(root: Path, address: str, *args: str) -> Result:
    return run(["repro", "--executor-address", address, *args], root)


def tree(top: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below top: (content, mode bits)."""
    return {str(p.relative_to(top)): (p.read_bytes(), p.stat().st_mode & 0o777)
            for p in sorted(top.rglob("*")) if p.is_file()}


# ---- byte-identical to a local repro ------------------------------------------------------------

PIPELINE = """
[stages.gen]
cmd = "mkdir -p model/sub && cat data.txt > model/w.txt && printf '#!/bin/sh\\\\necho hi\\\\n' \
> model/sub/run.sh && chmod +x model/sub/run.sh && wc -c < data.txt > size.txt \
&& echo '{\\"n\\": 1}' > metrics.json && cat data.txt >> history.log"
deps = ["data.txt"]
outs = ["model", "size.txt", { path = "metrics.json", cache = false },
        { path = "history.log", persist = true }]

[stages.use]
matrix = { part = ["a", "b"] }
cmd = "cat model/w.txt size.txt > use-${item.part}.txt && echo ${item.part} >> use-${item.part}.txt"
deps = ["model", "size.txt"]
outs = ["use-${item.part}.txt"]
"""


def test_locks_and_cache_objects_match_a_local_repro(tmp_path: Path, cluster: str) -> None:
    """File and directory outs, cache = false, persist and matrix: after a first run and a
    second one with new data (the persist out carried over to the worker), the locks and
    the cache (objects and run-cache entries) are byte-identical to a local repro's."""
    local = make_project(tmp_path / "local" / "p", PIPELINE)
    remote = make_project(tmp_path / "dask" / "p", PIPELINE)
    for data in ("first\n", "second run\n"):
        for root in (local, remote):
            (root / "data.txt").write_text(data)
        assert run(["repro"], local).code == 0
        result = dask(remote, cluster)
        assert result.code == 0, result.err
    for part in ("locks",):
        assert tree(local / ".pivotbuild" / part) == tree(remote / ".pivotbuild" / part)
    for part in ("files", "runs"):
        assert tree(local / ".pivotbuild/cache" / part) == tree(
            remote / ".pivotbuild/cache" / part)
    assert (remote / "history.log").read_text() == "first\nsecond run\n"  # persist: appended
    assert (remote / "metrics.json").read_text() == '{"n": 1}\n'  # cache = false: inline
    assert os.access(remote / "model/sub/run.sh", os.X_OK)
    assert (remote / "use-b.txt").read_text() == "second run\n11\nb\n"
    assert run(["status", "-q"], remote).code == 0


# ---- hermeticity ------------------------------------------------------------------------------


def test_an_undeclared_input_fails_on_the_worker(tmp_path: Path, cluster: str) -> None:
    root = make_project(tmp_path / "p", '[stages.s]\ncmd = "cat declared.txt undeclared.txt > '
                        'out.txt"\ndeps = ["declared.txt"]\nouts = ["out.txt"]\n')
    (root / "declared.txt").write_text("yes\n")
    (root / "undeclared.txt").write_text("sneaky\n")
    assert run(["repro", "--executor", "local"], root).code == 0  # here it reads anything
    (root / "declared.txt").write_text("changed\n")
    result = dask(root, cluster)
    assert result.code == 1
    said = result.out + result.err
    assert "undeclared.txt: No such file" in said
    assert "holds only its declared deps" in said
    assert (root / "out.txt").exists() is False or "sneaky" not in (root / "out.txt").read_text()


# ---- the exec bit through S3 --------------------------------------------------------------------


@pytest.mark.slow
def test_the_exec_bit_of_a_dep_survives_s3(tmp_path: Path, cluster: str, s3_server: Any,
                                           s3_bucket: str) -> None:
    root = make_project(
        tmp_path / "p",
        '[stages.s]\ncmd = "./tool.sh > out.txt && tools/inner.sh >> out.txt"\n'
        'deps = ["tool.sh", "tools"]\nouts = ["out.txt"]\n',
        remote=f"s3://{s3_bucket}/cache", extra=f'endpoint_url = "{s3_server.endpoint}"')
    (root / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    (root / "tool.sh").chmod(0o755)
    (root / "tools").mkdir()
    (root / "tools/inner.sh").write_text("#!/bin/sh\necho inner\n")
    (root / "tools/inner.sh").chmod(0o755)
    result = dask(root, cluster)
    assert result.code == 0, result.err
    assert (root / "out.txt").read_text() == "tool\ninner\n"
    keys = s3_server.filesystem().find(f"{s3_bucket}/cache/files")
    assert keys  # the inputs and the output went through the bucket


# ---- failures ---------------------------------------------------------------------------------


def test_a_failing_cmd_exits_1_runs_nothing_downstream_and_writes_no_lock(
        tmp_path: Path, cluster: str) -> None:
    marker = tmp_path / "ran-b"
    root = make_project(tmp_path / "p", f'''
[stages.a]
cmd = "echo about to fail; exit 3"
outs = ["a.txt"]

[stages.b]
cmd = "echo b >> {marker}; cat a.txt > b.txt"
deps = ["a.txt"]
outs = ["b.txt"]
''')
    result = dask(root, cluster)
    assert result.code == 1
    assert "about to fail" in result.out
    assert "exited with code 3" in result.err
    assert not marker.exists()
    assert not list((root / ".pivotbuild").glob("locks/*.json"))


@pytest.mark.slow
def test_a_worker_killed_mid_stage_is_retried_and_the_stage_committed(
        tmp_path: Path, cluster: str) -> None:
    killed, count = tmp_path / "killed", tmp_path / "count"
    # $PPID is the worker process: the first attempt kills it (a sleep the watchdog ends).
    root = make_project(tmp_path / "p", f'''
[stages.s]
cmd = "echo try >> {count}; if [ ! -e {killed} ]; then touch {killed}; kill -9 $PPID; \
sleep 60; fi; echo done > out.txt"
outs = ["out.txt"]
''')
    result = dask(root, cluster)
    assert result.code == 0, result.err
    assert count.read_text() == "try\ntry\n"
    assert (root / "out.txt").read_text() == "done\n"
    assert (root / ".pivotbuild/locks/s.json").exists()
    _wait_for_workers(cluster, 2)


def _wait_for_workers(address: str, n: int) -> None:
    """The nanny restarts a killed worker: let it come back before the next test."""
    with distributed.Client(address) as client:
        client.wait_for_workers(n, timeout=60)


def _running(marker: str) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline and b"sleep" in cmdline:
                pids.append(int(name))
    return pids


def _default_sigint() -> None:
    """A shell's background job ignores SIGINT, and a child inherits that: not this one."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_leaves_no_command_running_on_any_worker(
        tmp_path: Path, cluster: str, sig: signal.Signals) -> None:
    marker = f"{int(uuid.uuid4().int % 10**6)}.{os.getpid()}"
    root = make_project(tmp_path / "p", f'''
[stages.one]
cmd = "sleep {marker}1"
outs = ["one.txt"]

[stages.two]
cmd = "sleep {marker}2"
outs = ["two.txt"]
''')
    proc = subprocess.Popen([sys.executable, "-m", "pivotbuild", "repro", "-j2",
                             "--executor-address", cluster], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)  # noqa: PLW1509 - async-signal-safe
    try:
        deadline = time.monotonic() + 60
        while len(_running(marker)) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the commands never started"
            time.sleep(0.1)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    try:
        assert proc.returncode == 128 + sig, err
        assert "Traceback" not in err, err
        deadline = time.monotonic() + 5
        while _running(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _running(marker) == []
        assert not list((root / ".pivotbuild").glob("locks/*.json"))
    finally:  # a survivor would hold a worker's only thread for the next tests
        for pid in _running(marker):
            os.kill(pid, signal.SIGKILL)


# ---- output -----------------------------------------------------------------------------------


def test_output_lines_arrive_whole_and_prefixed(tmp_path: Path, cluster: str) -> None:
    stages = ""
    for name in ("p", "q"):
        stages += (f'[stages.{name}]\ncmd = "i=0; while [ $i -lt 300 ]; do echo {name} line $i '
                   f'{name * 40}; i=$((i+1)); done; printf \'{name} no newline\' ; '
                   f'echo ok > {name}.txt"\nouts = ["{name}.txt"]\n\n')
    root = make_project(tmp_path / "p", stages)
    result = dask(root, cluster, "-j2")
    assert result.code == 0, result.err
    for name in ("p", "q"):
        mine = [line for line in result.err.splitlines() + result.out.splitlines()
                if f"{name} line" in line or f"{name} no newline" in line]
        expected = [f"[{name}] {name} line {i} {name * 40}" for i in range(300)]
        assert mine == [*expected, f"[{name}] {name} no newline"]


# ---- what the client accepts --------------------------------------------------------------------


def test_an_object_tampered_with_on_the_remote_is_rejected(tmp_path: Path,
                                                           cluster: str) -> None:
    """The remote already holds a false object under the output's name: the worker skips
    the upload (the name is there), the client's fetch rehashes it and refuses it."""
    from pivotbuild.hashing import get_backend

    remote = tmp_path / "remote"
    root = make_project(tmp_path / "p", '[stages.s]\ncmd = "echo genuine > out.txt"\n'
                        'outs = ["out.txt"]\n', remote=str(remote))
    digest = get_backend().hash_bytes(b"genuine\n")
    forged = remote / "files" / digest[:2] / digest[2:]
    forged.parent.mkdir(parents=True)
    forged.write_text("forged\n")
    result = dask(root, cluster)
    assert result.code == 1
    assert digest in result.err and "rejected" in result.err
    assert not (root / ".pivotbuild/locks/s.json").exists()
    assert not (root / ".pivotbuild/cache/files" / digest[:2] / digest[2:]).exists()


def test_a_result_naming_an_undeclared_path_is_rejected(tmp_path: Path) -> None:
    """The client's check of a worker's result (fed a forged one): only declared outs, each
    once, with a well-formed hash; inline content only for a non-cached out."""
    from pivotbuild.config import load_project
    from pivotbuild.errors import OperationError
    from pivotbuild.runners.daskcheck import validated_outs

    root = make_project(tmp_path / "p", '[stages.s]\ncmd = "true"\n'
                        'outs = ["out.txt", { path = "m.json", cache = false }]\n')
    project = load_project(root)
    stage = project.stages["s"]
    good = {"path": "out.txt", "hash": "0" * 32}
    for outs, inline in (
        ([good, {"path": "../etc/passwd", "hash": "1" * 32}], []),
        ([good, {"path": "other.txt", "hash": "1" * 32}], []),
        ([good, good], []),
        ([{"path": "out.txt", "hash": "not a hash"}], []),
        ([good], [{"path": "out.txt", "files": [["", b"x", False]]}]),
    ):
        with pytest.raises(OperationError, match="rejected"):
            validated_outs(stage, {"outs": outs, "inline": inline})
    assert validated_outs(stage, {"outs": [good], "inline": []}) == [good]


# ---- configuration ----------------------------------------------------------------------------


def test_a_non_loopback_tcp_address_is_refused_unless_insecure(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", '[stages.s]\ncmd = "echo x > o"\nouts = ["o"]\n')
    result = run(["repro", "--executor-address", "tcp://10.1.2.3:8786"], root)
    assert result.code == 2
    assert "not loopback" in result.err and "tls://" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (root / "o").exists()
    from pivotbuild.runners.daskcheck import check_address

    check_address("tcp://10.1.2.3:8786", insecure=True)
    check_address("tls://sched.example:8786", insecure=False)
    check_address("tcp://127.0.0.1:8786", insecure=False)
    check_address("[::1]:8786", insecure=False)
    with pytest.raises(Exception, match="not loopback"):
        check_address("sched.example:8786", insecure=False)


def test_no_commit_fetches_into_a_temporary_store_never_the_cache(tmp_path: Path,
                                                                    cluster: str) -> None:
    root = make_project(tmp_path / "p", '[stages.s]\ncmd = "mkdir -p d && echo x > d/x && '
                        'echo y > y.txt"\nouts = ["d", "y.txt"]\n')
    result = dask(root, cluster, "--no-commit")
    assert result.code == 0, result.err
    assert (root / "d/x").read_text() == "x\n" and (root / "y.txt").read_text() == "y\n"
    files = root / ".pivotbuild/cache/files"
    assert not files.exists() or not any(p.is_file() for p in files.rglob("*"))
    assert not (root / ".pivotbuild/locks/s.json").exists()
    assert not list((root / ".pivotbuild/tmp").glob("dask-*"))  # the temporary store: gone


def test_kind_dask_without_distributed_or_an_address_is_a_usage_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    from types import SimpleNamespace

    from pivotbuild.config import load_project
    from pivotbuild.errors import UsageError
    from pivotbuild.runners import daskcheck as dask_module

    root = make_project(tmp_path / "p", '[stages.s]\ncmd = "true"\n',
                        executor='[executor]\nkind = "dask"\n')
    pipeline = SimpleNamespace(project=load_project(root), hasher=None, cache=None)
    with pytest.raises(UsageError, match="needs an address"):
        dask_module.dask_runner(pipeline)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "distributed" else real(name, *a))
    with pytest.raises(UsageError, match=r"pip install 'pivotbuild\[dask\]'"):
        dask_module.dask_runner(pipeline, address="tcp://127.0.0.1:1")
    assert dask_module.dask_runner(pipeline, kind="local") is None


@pytest.mark.slow
def test_cluster_local_starts_a_loopback_cluster_of_its_own(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", '[stages.s]\ncmd = "echo on a worker > o.txt"\n'
                        'outs = ["o.txt"]\n',
                        executor='[executor]\nkind = "dask"\ncluster = "local"\nworkers = 1\n')
    result = run(["repro"], root)
    assert result.code == 0, result.err
    assert (root / "o.txt").read_text() == "on a worker\n"
    assert (root / ".pivotbuild/locks/s.json").exists()


def test_local_stages_run_here_and_only_listed_variables_travel(tmp_path: Path,
                                                               cluster: str) -> None:
    root = make_project(tmp_path / "p", '''
[stages.remote]
cmd = "echo \\"$PIVOTBUILD_ROOT|$SHARED|$PRIVATE\\" > r.txt"
outs = ["r.txt"]

[stages.here]
cmd = "echo \\"$PIVOTBUILD_ROOT\\" > h.txt"
outs = ["h.txt"]
''', executor='[executor]\nkind = "dask"\nenv = ["SHARED"]\nlocal = ["here"]\n')
    result = run(["repro", "--executor-address", cluster], root,
                 env={"SHARED": "forwarded", "PRIVATE": "kept"})
    assert result.code == 0, result.err
    scratch, shared, private = (root / "r.txt").read_text().strip().split("|")
    assert scratch != str(root) and shared == "forwarded" and private == ""
    assert (root / "h.txt").read_text().strip() == str(root)


def test_a_stage_with_discovered_deps_runs_here_and_records_them(tmp_path: Path,
                                                                  cluster: str) -> None:
    """A depfile or discover stage runs on the client: its discovered deps are read here after
    the run (a worker's depfile and import record never come back)."""
    root = make_project(tmp_path / "p", '''
[stages.py]
cmd = "python3 main.py > out.txt && pwd > where.txt"
deps = ["main.py"]
outs = ["out.txt", "where.txt"]
discover = ["python"]
''', executor='[executor]\nkind = "dask"\n')
    (root / "helper.py").write_text("VALUE = 1\n")
    (root / "main.py").write_text("import helper\nprint(helper.VALUE)\n")
    result = run(["repro", "--executor-address", cluster], root)
    assert result.code == 0, result.err
    assert (root / "where.txt").read_text().strip() == str(root)
    lock = json.loads((root / ".pivotbuild" / "locks" / "py.json").read_text())
    assert [d["path"] for d in lock["discovered"]] == ["helper.py"]


def test_the_worker_plugin_refuses_another_pivotbuild_version() -> None:
    from types import SimpleNamespace

    import pivotbuild
    from pivotbuild.runners.worker import VersionCheck, run_stage

    VersionCheck(pivotbuild.__version__).setup(SimpleNamespace(address="tcp://w:1"))
    with pytest.raises(RuntimeError, match="tcp://w:1 runs pivotbuild"):
        VersionCheck("0.0.0-other").setup(SimpleNamespace(address="tcp://w:1"))
    result = run_stage({"version": 99, "pivotbuild": pivotbuild.__version__, "stage": "s"})
    assert result["status"] == "error" and "spec version 99" in result["error"]


def test_transfer_shared_runs_in_the_project_itself(tmp_path: Path, cluster: str) -> None:
    """Workers that see the project at the same path (here: the same machine): the command
    runs in it, only the exit code travels, the client commits as it does locally."""
    root = make_project(tmp_path / "p", '[stages.s]\ncmd = "pwd > where.txt"\n'
                        'outs = ["where.txt"]\n',
                        executor='[executor]\nkind = "dask"\ntransfer = "shared"\n')
    result = dask(root, cluster)
    assert result.code == 0, result.err
    assert (root / "where.txt").read_text().strip() == str(root)
    assert (root / ".pivotbuild/locks/s.json").exists()
    remote = root.parent / f"{root.name}-remote"
    assert not any(p.is_file() for p in remote.rglob("*"))  # nothing went through it


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_losing_the_scheduler_fails_the_stage_in_flight_and_keeps_the_committed(
        tmp_path: Path) -> None:
    """A scheduler of its own (SIGKILLed mid-run) and one worker: the stage in flight fails
    with exit 1, the stage committed before stays committed, no lock for the lost one."""
    marker, started = f"{uuid.uuid4().int % 10**6}{os.getpid()}", tmp_path / "started"
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    env = {**os.environ, "PIVOTBUILD_WORKER_CACHE": str(tmp_path / "worker-cache")}
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                                  "--host", "127.0.0.1", "--port", str(port),
                                  "--dashboard-address", "127.0.0.1:0"], env=env, **quiet)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                               "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                              env=env, **quiet)
    proc = None
    try:
        _wait_for_workers(address, 1)
        root = make_project(tmp_path / "p", f'''
[stages.first]
cmd = "echo first > first.txt"
outs = ["first.txt"]

[stages.second]
cmd = "cat first.txt > second.txt && touch {started} && sleep 30.{marker}"
deps = ["first.txt"]
outs = ["second.txt"]
''')
        proc = subprocess.Popen([sys.executable, "-m", "pivotbuild", "repro",
                                 "--executor-address", address], cwd=root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not started.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the second stage never started"
            time.sleep(0.1)
        lock = root / ".pivotbuild/locks/first.json"
        committed = lock.read_bytes()
        scheduler.kill()
        scheduler.wait()
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 1, err
        assert "Traceback" not in err, err
        assert "scheduler" in err and "second" in err
        assert lock.read_bytes() == committed
        assert json.loads(committed)  # intact
        assert (root / "first.txt").read_text() == "first\n"
        assert not (root / ".pivotbuild/locks/second.json").exists()
        deadline = time.monotonic() + 10
        while _running(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _running(marker) == []  # the worker stops its commands as it closes
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        for server in (worker, scheduler):
            if server.poll() is None:
                server.kill()
            server.wait()
        for pid in _running(marker):
            os.kill(pid, signal.SIGKILL)
