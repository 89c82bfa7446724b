"""The Dask runner: a stage's commands run as one task on a Dask ``distributed`` cluster.

Only the commands leave the client. Planning, run-cache lookups, re-deciding after an upstream
run, the commit writer, locks and history stay here, unchanged; a stage's thread blocks on
its task's future (``-j`` is the number of stages in flight, by default the cluster's thread
count). With ``transfer = "remote"`` (the default) inputs and outputs travel through the
project's remote by hash:

- ``prepare`` (before the executor starts) connects, checks that the workers run this
  pivotbuild (a WorkerPlugin), and uploads the input objects the remote lacks, learned in one
  listing for the whole plan: source deps hashed from the workspace (copied into a temporary
  store, never into the cache) and upstream outputs from the cache;
- ``run`` sends a versioned plain-dict spec to ``worker.run_stage`` (``pure=False``, key
  ``pivotbuild-<stage>-<run id>``, ``retries``), prints the output lines the worker sends in
  batches (``subscribe_topic``), then validates the result (declared outs only), fetches the
  cached outs into the cache (each rehashed; with ``--no-commit`` into a temporary store,
  never the cache), writes inline outs atomically and places everything in the workspace;
- the commit writer then rehashes the workspace as for a local run; ``CheckedCommitter``
  refuses to commit an output whose hash differs from the worker's.

``transfer = "shared"`` runs the commands in the project itself, on a file system the
workers share at the same path; only the exit code returns, and the client waits for the
outputs to become visible before committing as today.

A failed command is a result (its exit code), not an exception. A lost worker is Dask's to
reschedule; after ``retries`` resubmissions the stage fails "worker lost". An interrupt sets
the run's cancel ``distributed.Event`` (``Future.cancel()`` does not stop a running task: its
subprocess would outlive us and the scheduler would count the worker free), waits up to 5 s
for the running tasks to report, then cancels what is left.

Dask runs pickled code: client, scheduler and workers are one trust domain. A ``tcp://``
address that is not loopback is refused unless ``insecure = true``; use ``tls://``.
``cluster = "local"`` starts a LocalCluster on 127.0.0.1 with no dashboard.

``distributed`` is imported only when a stage is about to run (it costs ~0.6 s).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pivotbuild
from pivotbuild import paths
from pivotbuild.errors import OperationError
from pivotbuild.runners import INTERRUPTED, Cancel, OutputSink, StageSpec
from pivotbuild.runners.daskcheck import (
    CheckedCommitter,
    validated_outs,
    write_inline,
)
from pivotbuild.runners.fetchback import fetch_and_place

if TYPE_CHECKING:
    from pivotbuild.commit import Committer
    from pivotbuild.config import ExecutorSettings, Project, Stage
    from pivotbuild.hasher import Hasher, PathDigest
    from pivotbuild.plan import Decision
    from pivotbuild.remote.base import Remote
    from pivotbuild.store import Cache

REPORT_WAIT_S = 5.0  # after an interrupt: how long running tasks get to report
LINES_WAIT_S = 5.0  # after a result: how long its last output batches get to arrive
VISIBLE_WAIT_S = 30.0  # transfer = "shared": how long outputs get to appear
INLINE_MAX = 1 << 20  # non-cached outputs up to this many bytes (per stage) travel inline
_POLL_S = 0.25


class FutureCancelled(Exception):
    """A task's future found cancelled (by the scheduler's loss, or our own cancel)."""
TIMINGS_ENV = "PIVOTBUILD_EXECUTOR_TIMINGS"
NO_WORKERS_WAIT_S = 60.0  # a cluster with no worker at all: how long a stage waits for one
#: A LocalCluster's scheduler: no dashboard, and the small HTTP server it keeps (health
#: checks) on a free loopback port, not 8787 (another cluster's: a warning, then any port).
LOCAL_SCHEDULER_OPTIONS = {"dashboard_address": "127.0.0.1:0"}


# ---- choosing and checking the executor -------------------------------------------------------


# ---- what the client waits for -------------------------------------------------------------


@dataclass(slots=True)
class _Stream:
    """The output of one task (one key): lines go to the stage's sink as batches arrive."""

    sink: OutputSink
    received: set[tuple[str, int]] = field(default_factory=set)  # (attempt, seq)
    cond: threading.Condition = field(default_factory=threading.Condition)


class DaskRunner:
    """Runs stages' commands as Dask tasks (see the module doc); thread-safe."""

    def __init__(self, project: Project, hasher: Hasher, cache: Cache,
                 settings: ExecutorSettings, remote_name: str | None, no_commit: bool) -> None:
        """``remote_name``: the remote inputs and outputs travel through (None: transfer =
        "shared"); opened when a stage first needs it (a no-op repro never does)."""
        self.project = project
        self.hasher = hasher
        self.cache = cache
        self.settings = settings
        self.remote_name = remote_name
        self._remote: Remote | None = None
        self._remote_lock = threading.Lock()
        self.no_commit = no_commit
        self.run_id = secrets.token_hex(8)
        self.topic = f"pivotbuild-{self.run_id}"
        self.cancel_name = f"pivotbuild-cancel-{self.run_id}"
        self.timings: dict[str, float] = {}
        self._lock = threading.Lock()
        self._client: Any = None
        self._cluster: Any = None
        self._event: Any = None
        self._cancelling: threading.Thread | None = None
        self._spec_s = 0.0  # the last stage's spec: hashing its deps, uploading what lacks
        self._slots: threading.Semaphore | None = None
        self._streams: dict[str, _Stream] = {}
        self._futures: dict[str, Any] = {}  # key -> future, while in flight
        self._on_remote: set[str] = set()  # objects known to be on the remote
        self._expected: dict[str, dict[str, str]] = {}  # stage -> out path -> worker's hash
        self._local: Any = None
        self._local_names = set(settings.local)
        self._remote_settings: dict[str, Any] | None = None

    @property
    def remote(self) -> Remote | None:
        """The remote, opened on first use; None with transfer = "shared"."""
        if self.remote_name is None:
            return None
        with self._remote_lock:
            if self._remote is None:
                from fsspec.core import split_protocol

                from pivotbuild.remote import open_remote

                remote = open_remote(self.project, self.remote_name)
                config = self.project.remotes[remote.name]
                protocol, _ = split_protocol(config.url)
                # A directory's URL made absolute (it may be relative to the project root).
                url = (getattr(remote.store, "root", config.url)
                       if protocol in (None, "file", "local") else config.url)
                self._remote_settings = {"name": remote.name, "url": url,
                                         "endpoint_url": config.endpoint_url,
                                         "region": config.region}  # never the profile
                self._remote = remote
            return self._remote

    # ---- connecting ------------------------------------------------------------------------

    def _connect(self) -> Any:
        with self._lock:
            if self._client is not None:
                return self._client
            started = time.monotonic()
            try:
                client = self._open_client()
            except (OSError, TimeoutError) as exc:
                where = self.settings.address or "a local cluster"
                raise OperationError(f"cannot connect to the Dask scheduler at {where}: "
                                     f"{exc}") from None
            self.timings["connect_s"] = time.monotonic() - started
            from pivotbuild.runners import worker as worker_side

            try:
                client.register_plugin(worker_side.VersionCheck(pivotbuild.__version__))
            except Exception as exc:  # noqa: BLE001 - a worker refused: say which and why
                client.close()
                raise OperationError(f"a Dask worker cannot run pivotbuild's stages: "
                                     f"{exc}") from None
            from distributed import Event

            self._event = Event(self.cancel_name, client=client)  # type: ignore[no-untyped-call]
            client.subscribe_topic(self.topic, self._on_lines)
            self._client = client
            return client

    def _open_client(self) -> Any:
        import logging

        from distributed import Client, LocalCluster

        if self.settings.cluster == "local":
            workers = self.settings.workers or os.cpu_count() or 1
            self._cluster = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None, scheduler_kwargs=LOCAL_SCHEDULER_OPTIONS,
                silence_logs=logging.CRITICAL)
            return Client(self._cluster)  # type: ignore[no-untyped-call]
        return Client(self.settings.address, timeout=30)  # type: ignore[no-untyped-call]

    def threads(self) -> int:
        """The cluster's thread count: the default number of stages in flight. A cluster
        without workers gets NO_WORKERS_WAIT_S to have one, then it is an error."""
        client = self._connect()
        nthreads: dict[str, int] = client.nthreads()
        if not nthreads:
            try:
                client.wait_for_workers(1, timeout=NO_WORKERS_WAIT_S)
            except TimeoutError:
                raise OperationError(self._no_workers()) from None
            nthreads = client.nthreads()
        return max(1, sum(nthreads.values()))

    def _no_workers(self) -> str:
        where = self.settings.address or "the local cluster"
        return (f"the Dask cluster at {where} has had no worker for "
                f"{NO_WORKERS_WAIT_S:.0f} s; start some (dask worker ADDRESS)")

    def _check_workers(self, client: Any, since: list[float]) -> None:
        """While a stage waits: OperationError once the cluster has had no worker at all for
        NO_WORKERS_WAIT_S (its task would wait forever)."""
        if client.nthreads():
            since.clear()
        elif not since:
            since.append(time.monotonic())
        elif time.monotonic() - since[0] >= NO_WORKERS_WAIT_S:
            raise OperationError(self._no_workers())

    # ---- before the executor starts --------------------------------------------------------

    def prepare(self, decisions: list[Decision], committer: Committer, jobs: int
                ) -> tuple[CheckedCommitter, int]:
        """Connect; upload the input objects the remote lacks for every stage that may run
        (one listing); the committer to use and the number of stages in flight (``jobs``, or
        the cluster's thread count if 0)."""
        from pivotbuild.plan import SKIP

        may_run = [d for d in decisions if d.action != SKIP or d.upstream_stale]
        self._connect()
        jobs = jobs or self.threads()
        self._slots = threading.Semaphore(jobs)
        if self.remote is not None and may_run:
            produced = [o.path for d in may_run for o in d.stage.outs]
            inputs: dict[str, PathDigest] = {}
            for d in may_run:
                if self._runs_here(d.stage.name, d.stage.base):
                    continue
                for path in d.stage.deps:
                    digest = d.deps.get(path)
                    if digest is None or digest.hash is None or any(
                            paths.is_inside(path, out) or paths.is_inside(out, path)
                            for out in produced):
                        continue  # made during this run: looked at when its stage starts
                    inputs[path] = digest
            started = time.monotonic()
            self._upload(inputs, check_listing=True)
            self.timings["prepare_upload_s"] = time.monotonic() - started
        return CheckedCommitter(committer, self._expected), jobs

    def _runs_here(self, name: str, base: str | None = None) -> bool:
        stage = self.project.stages.get(name)
        if base is None:
            base = stage.base if stage is not None else name
        if stage is not None and (stage.depfile or stage.discover):
            # Discovered deps are read on the client after the run (the depfile from the
            # workspace, the import record from .pivotbuild/tmp): such a stage runs here.
            return True
        return name in self._local_names or base in self._local_names

    def _upload(self, inputs: Mapping[str, PathDigest], check_listing: bool) -> None:
        """Put on the remote the objects of these workspace paths it lacks: those in the cache
        from there, the others from the workspace through a temporary store."""
        assert self.remote is not None
        from pivotbuild.remote.base import FILES_DIR
        from pivotbuild.remote.transfer import push_objects

        wanted = {d.hash: p for p, d in inputs.items()
                  if d.hash is not None and d.hash not in self._on_remote}
        if not wanted:
            return
        if check_listing:
            there = self.remote.present(FILES_DIR, list(wanted))
            with self._lock:
                self._on_remote.update(there)
            wanted = {h: p for h, p in wanted.items() if h not in there}
            if not wanted:
                return
        in_cache = {h: p for h, p in wanted.items() if self.cache.objects.has(h)}
        if in_cache:
            self._push(push_objects(self.remote, self.cache.objects, list(in_cache),
                                    shown=in_cache), in_cache)
        rest = {h: p for h, p in wanted.items() if h not in in_cache}
        if rest:
            with self._temp_cache() as staging:
                for digest_hash, path in rest.items():
                    digest = inputs[path]
                    src = self.project.root / path
                    if digest.is_dir:
                        staging.objects.store_dir(src, digest, shown=path)
                    else:
                        staging.objects.store_file(src, digest_hash, shown=path)
                self._push(push_objects(self.remote, staging.objects, list(rest), shown=rest),
                           rest)

    def _push(self, report: Any, hashes: Iterable[str]) -> None:
        if report.failed:
            what, why = report.failed[0]
            raise OperationError(f"cannot upload the input {what} to remote "
                                 f"'{report.remote}': {why}")
        with self._lock:
            self._on_remote.update(hashes)  # sent, or found there by push's listing

    @contextlib.contextmanager
    def _temp_cache(self) -> Any:
        from pivotbuild.store import Cache

        base = self.project.state_dir / "tmp"
        base.mkdir(parents=True, exist_ok=True)
        directory = tempfile.mkdtemp(prefix="dask-", dir=base)
        try:
            yield Cache(Path(directory), durable=False)
        finally:
            paths.remove_path(directory)

    # ---- the StageRunner interface ---------------------------------------------------------

    def open(self, cancel: Cancel) -> None:
        from pivotbuild.runners.local import LocalRunner

        self._local = LocalRunner()
        self._local.open(cancel)  # from the main thread: see runners/local.py
        cancel.on_cancel(self._cancel)

    def run(self, spec: StageSpec, output: OutputSink, cancel: Cancel) -> int:
        if spec.console or self._runs_here(spec.name):
            if self._local is None:
                from pivotbuild.runners.local import LocalRunner

                self._local = LocalRunner()
            code: int = self._local.run(spec, output, cancel)
            return code
        self._connect()
        slots = self._slots
        if slots is not None:
            while not slots.acquire(timeout=_POLL_S):
                if cancel.is_set():
                    return INTERRUPTED
        try:
            return self._run_remote(spec, output, cancel)
        finally:
            if slots is not None:
                slots.release()

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
        with self._lock:
            client, cluster = self._client, self._cluster
            self._client = self._cluster = None
            futures = list(self._futures.values())
        started = time.monotonic()
        if client is not None:
            with contextlib.suppress(Exception):
                if futures:
                    client.cancel(futures)
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(self.topic)
            # a lost scheduler: the client's cancelled reconnect logs a traceback on close
            quiet = logging.getLogger("distributed.client")
            level = quiet.level
            quiet.setLevel(logging.CRITICAL)
            try:
                with contextlib.suppress(Exception):
                    client.close()
            finally:
                quiet.setLevel(level)
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()
        self.timings["close_s"] = time.monotonic() - started
        if self.timings.get("connect_s") is not None:
            self._record({"connection": self.timings})

    def _cancel(self) -> None:
        """On an interrupt: tell every task (running or yet to start) to stop its commands;
        each stage's thread then waits up to REPORT_WAIT_S for its task to report.

        The event is set from a thread of its own: a second interrupt arriving meanwhile in
        the main thread must not cut the message to the scheduler short. Stage threads call
        this too when they see the cancel (it is idempotent)."""
        event = self._event
        if event is None:
            return
        with self._lock:
            if self._cancelling is None:
                self._cancelling = threading.Thread(target=_set_quietly, args=(event,),
                                                    name="pivotbuild-cancel", daemon=True)
                self._cancelling.start()
            cancelling = self._cancelling
        cancelling.join(timeout=REPORT_WAIT_S)

    # ---- one stage on the cluster ------------------------------------------------------------

    def _run_remote(self, spec: StageSpec, output: OutputSink, cancel: Cancel) -> int:
        stage = self.project.stages[spec.name]
        started = time.monotonic()
        task = self._spec(stage, spec)
        self._spec_s = time.monotonic() - started
        for attempt in range(self.settings.retries + 1):
            key = f"pivotbuild-{spec.name}-{self.run_id}" + (f"-{attempt}" if attempt else "")
            outcome = self._submit_and_wait(key, task, output, cancel)
            if outcome == "lost":
                if attempt < self.settings.retries:
                    output(f"pivotbuild: stage {spec.name}: its worker was lost; "
                           f"running it again\n")
                    continue
                raise OperationError(f"worker lost: stage '{spec.name}' failed after "
                                     f"{attempt + 1} attempt(s) whose worker died")
            if not isinstance(outcome, dict):
                return INTERRUPTED
            return self._finish(stage, spec, outcome, output)
        raise AssertionError("unreachable")  # pragma: no cover

    def _spec(self, stage: Stage, spec: StageSpec) -> dict[str, Any]:
        """The plain dict the worker gets (worker.py documents it)."""
        from pivotbuild.runners import worker as worker_side

        env = {name: os.environ[name] for name in self.settings.env if name in os.environ}
        remote_settings = self._remote_settings if self.remote is not None else None  # opens it
        task: dict[str, Any] = {
            "version": worker_side.SPEC_VERSION, "pivotbuild": pivotbuild.__version__,
            "run_id": self.run_id, "stage": spec.name, "cmd": list(spec.cmd),
            "wdir": spec.wdir, "transfer": self.settings.transfer, "env": env,
            "topic": self.topic, "cancel": self.cancel_name, "inline_max": INLINE_MAX,
            "outs": [{"path": o.path, "cache": o.cache, "persist": o.persist}
                     for o in stage.outs],
            "deps": [], "persist": [], "remote": remote_settings, "input_hash": None,
        }
        if self.settings.transfer == "shared":
            task["root"] = str(self.project.root)
            return task
        root = self.project.root
        want = [*stage.deps, *(o.path for o in stage.outs if o.persist)]
        digests = dict(zip(want, self.hasher.hash_paths([str(root / p) for p in want]),
                           strict=True))
        inputs: dict[str, PathDigest] = {}
        for path in stage.deps:
            digest = digests[path]
            if digest.hash is None:
                raise OperationError(digest.problem(str(root)) if not digest.missing
                                     else f"missing dependency {path!r}")
            inputs[path] = digest
            executable = not digest.is_dir and bool(os.stat(root / path).st_mode & 0o100)
            task["deps"].append({"path": path, "hash": digest.hash, "size": digest.size,
                                 "exec": executable})
        for out in stage.outs:
            kept = digests.get(out.path) if out.persist else None
            if kept is not None and kept.hash is not None:
                inputs[out.path] = kept
                task["persist"].append({"path": out.path, "hash": kept.hash})
        from pivotbuild.plan import stage_input_hash

        task["input_hash"] = stage_input_hash(
            stage, {p: d.hash for p, d in inputs.items() if p in stage.deps})
        self._upload(inputs, check_listing=True)
        return task

    def _submit_and_wait(self, key: str, task: dict[str, Any], output: OutputSink,
                         cancel: Cancel) -> dict[str, Any] | str | None:
        """The task's result; "lost" if its worker died (after Dask's own rescheduling);
        None if interrupted."""
        from distributed.scheduler import KilledWorker

        from pivotbuild.runners import worker as worker_side

        client = self._connect()
        stream = _Stream(output)
        with self._lock:
            self._streams[key] = stream
        submitted = time.monotonic()
        future = client.submit(worker_side.run_stage, {**task, "key": key}, key=key, pure=False,
                               retries=self.settings.retries)
        # Finished (done, failed or cancelled): told by Dask's callback, so that the wait below
        # is a plain threading wait. Polling future.result(timeout=...) instead races in
        # distributed's sync(): when its asyncio.wait_for timeout meets the result, a
        # CancelledError escapes and result() raises UnboundLocalError (seen under load).
        finished = threading.Event()
        future.add_done_callback(lambda _future: finished.set())
        with self._lock:
            self._futures[key] = future
        polls, no_workers = 0, []  # type: tuple[int, list[float]]
        try:
            deadline = None
            while True:
                if cancel.is_set() and deadline is None:
                    self._cancel()  # in case the main thread's call was interrupted
                    deadline = time.monotonic() + REPORT_WAIT_S
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                if not finished.wait(_POLL_S) and not future.done():
                    polls += 1
                    if polls % 40 == 0:  # every 10 s
                        self._check_workers(client, no_workers)
                    continue
                try:
                    if future.cancelled():
                        raise FutureCancelled(f"{key} was cancelled")
                    result: dict[str, Any] = future.result()
                    break
                except KilledWorker:
                    return "lost"
                except Exception as exc:  # noqa: BLE001 - the cluster's failure, in one line
                    if cancel.is_set():
                        return None
                    if future.status == "cancelled" or type(exc).__name__ in (
                            "FutureCancelled", "CancelledError", "FutureCancelledError",
                            "CommClosedError"):
                        said = " ".join(str(exc).split())  # one line
                        raise OperationError(
                            f"the Dask scheduler was lost while stage '{task['stage']}' ran "
                            f"({type(exc).__name__}: {said})") from None
                    raise OperationError(f"stage '{task['stage']}' failed on the cluster: "
                                         f"{type(exc).__name__}: {exc}") from None
            result.setdefault("timings", {})["submit_to_result_s"] = time.monotonic() - submitted
            self._drain(stream, str(result.get("attempt")), int(result.get("batches", 0)))
            if cancel.is_set():
                return None
            return result
        finally:
            with self._lock:
                self._streams.pop(key, None)
                self._futures.pop(key, None)

    def _on_lines(self, event: Any) -> None:
        """subscribe_topic's handler (the client's event loop): one batch of a task's lines."""
        _, message = event
        if not isinstance(message, dict):
            return
        with self._lock:
            stream = self._streams.get(str(message.get("key")))
        if stream is None:
            return
        with stream.cond:
            seq = (str(message.get("attempt")), int(message.get("seq", -1)))
            if seq in stream.received:
                return
            stream.received.add(seq)
            for line in message.get("lines", ()):
                stream.sink(str(line))
            stream.cond.notify_all()

    def _drain(self, stream: _Stream, attempt: str, batches: int) -> None:
        """Wait (a little) until every batch the task's last attempt sent has been printed."""
        deadline = time.monotonic() + LINES_WAIT_S
        with stream.cond:
            while (sum(1 for a, _ in stream.received if a == attempt) < batches
                   and time.monotonic() < deadline):
                stream.cond.wait(timeout=0.05)

    # ---- after the task ------------------------------------------------------------------------

    def _finish(self, stage: Stage, spec: StageSpec, result: dict[str, Any],
                output: OutputSink) -> int:
        from pivotbuild.runners import worker as worker_side

        status = result.get("status")
        where = result.get("worker", "a worker")
        if status == worker_side.ERROR:
            raise OperationError(f"on {where}: {result.get('error')}")
        if status == worker_side.INTERRUPTED:
            return INTERRUPTED
        code = int(result.get("exit_code", 1))
        if code != 0:
            if self.settings.transfer == "remote":
                output(f"pivotbuild: stage {spec.name} ran on {where} in a scratch directory "
                       f"that holds only its declared deps (an undeclared input is missing "
                       f"there)\n")
            return code
        if self.settings.transfer == "shared":
            self._wait_visible(stage)
            return 0
        outs = validated_outs(stage, result)
        started = time.monotonic()
        self._bring_back(stage, outs, result.get("inline", []))
        self._record({"stage": spec.name, "worker": where, "timings": result.get("timings"),
                      "bring_back_s": time.monotonic() - started, "spec_s": self._spec_s})
        return 0

    def _record(self, entry: dict[str, Any]) -> None:
        """With $PIVOTBUILD_EXECUTOR_TIMINGS set to a file: one JSON line per stage (the
        worker's fetch / run / upload times, the client's fetch and placing) and one for the
        connection (benchmarks/compare_executor.py reads them)."""
        target = os.environ.get(TIMINGS_ENV)
        if not target:
            return
        import json

        with self._lock, open(target, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    def _bring_back(self, stage: Stage, outs: list[dict[str, Any]],
                    inline: list[dict[str, Any]]) -> None:
        """Fetched (rehashed) and inline outputs placed in the workspace; their hashes kept
        for CheckedCommitter."""
        assert self.remote is not None
        declared = {o.path: o for o in stage.outs}
        inline_paths = {item["path"] for item in inline}
        to_cache = [o for o in outs if declared[o["path"]].cache and not self.no_commit]
        to_temp = [o for o in outs if o["path"] not in inline_paths and o not in to_cache]
        for item in inline:
            digest = next(o["hash"] for o in outs if o["path"] == item["path"])
            write_inline(self.project.root, item["path"], item["files"], digest)
        if to_cache:
            fetch_and_place(self.remote, self.project, stage.name, to_cache, self.cache,
                            self.project.checkout)
        if to_temp:
            with self._temp_cache() as temp:
                fetch_and_place(self.remote, self.project, stage.name, to_temp, temp, ["copy"])
        with self._lock:
            self._expected[stage.name] = {o["path"]: o["hash"] for o in outs}
            # The worker uploaded its cached outputs: a downstream stage need not look.
            self._on_remote.update(o["hash"] for o in to_cache)

    def _wait_visible(self, stage: Stage) -> None:
        """transfer = "shared": a file system may show a worker's writes a little later."""
        deadline = time.monotonic() + VISIBLE_WAIT_S
        root = self.project.root
        while not all(os.path.lexists(root / o.path) for o in stage.outs):
            if time.monotonic() >= deadline:
                return  # the commit writer names what is missing
            time.sleep(_POLL_S)


def _set_quietly(event: Any) -> None:
    with contextlib.suppress(Exception):
        event.set()
