"""The worker side of the Dask executor: one stage run from a plain-dict spec, on a worker.

``run_stage`` is the task the client (runners/dask.py) submits, one per stage. It gets a
versioned plain dict (no pydantic model, no database handle: only what pickles anywhere) and
returns one. With ``transfer = "remote"``:

1. the spec's version is checked (a worker of another pivotbuild refuses it);
2. a scratch directory (mode 0700) is made below the worker's local directory;
3. the stage's deps are fetched by hash from the remote into a worker-local cache (each
   rehashed on arrival, fetcher.py) and linked in read-only, with the exec bit the client
   recorded (object stores keep no mode); persist outs are copied in writable;
4. each cmd runs under ``/bin/sh -c`` in its wdir inside the scratch directory, in a process
   group of its own that runners/local.py's watchdog guards (that watchdog is the
   parent-death signal: when the worker process dies in any way, it kills the group);
5. output lines go back in batches through ``Worker.log_event`` on the run's topic;
6. a ``distributed.Event`` (the run's cancel event, watched by one thread per worker process
   and run) stops the commands: ``Future.cancel()`` does not stop a running task (its
   thread and subprocess go on);
7. on success the outs are hashed with the compiled core, the cached ones stored in the
   worker cache and uploaded (files first, ``.dir`` manifests last); small non-cached outs
   travel inline in the result, larger ones as objects the client fetches into a temp store;
8. the scratch directory is removed.

A failed cmd is a result (``exit_code``), not an exception. With ``transfer = "shared"`` the
cmd runs in the project itself (a shared file system) and only its exit code comes back.

The spec (version 1): ``version, pivotbuild, run_id, stage, cmd [str], wdir, input_hash,
transfer, root (shared only), deps [{path, hash, size, exec}], persist [{path, hash}],
outs [{path, cache, persist}], remote {url, endpoint_url, region} | None, env {}, topic,
cancel, inline_max, key``. The result: ``version, status (ok|failed|interrupted|error),
exit_code, error, outs [{path, hash, size, nfiles, cache, exec}], inline [{path, files [[rel, bytes,
exec]]}], log_tail [str], batches, attempt, worker, timings {fetch_s, run_s, upload_s}``.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pivotbuild
from pivotbuild.errors import OperationError

SPEC_VERSION = 1
WORKER_CACHE_ENV = "PIVOTBUILD_WORKER_CACHE"
LOG_TAIL = 40  # lines kept in the result
_BATCH_LINES = 200
_BATCH_SECONDS = 0.1
_STOP_GRACE_S = 2.0
_CANCEL_POLL_S = 0.5

OK, FAILED, INTERRUPTED, ERROR = "ok", "failed", "interrupted", "error"


# ---- the worker plugin ------------------------------------------------------------------------


try:  # the plugin's base class, when distributed is there (it is, on a worker)
    from distributed.diagnostics.plugin import WorkerPlugin as _PluginBase
except ImportError:  # pragma: no cover - only the client imports this module without it
    _PluginBase = object  # type: ignore[assignment,misc]


class VersionCheck(_PluginBase):
    """Refuses a worker whose pivotbuild is not the client's version: a stage must hash,
    store and place exactly as the client would."""

    name = "pivotbuild-version"

    def __init__(self, version: str) -> None:
        self.version = version

    def setup(self, worker: Any) -> None:
        if pivotbuild.__version__ != self.version:
            raise RuntimeError(f"worker {worker.address} runs pivotbuild "
                               f"{pivotbuild.__version__}, the client {self.version}")


# ---- the task ---------------------------------------------------------------------------------


def run_stage(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one stage from its spec (see the module doc); never raises for a stage's failure."""
    started = time.monotonic()
    result: dict[str, Any] = {
        "version": SPEC_VERSION, "status": ERROR, "exit_code": 1, "error": None, "outs": [],
        "inline": [], "log_tail": [], "batches": 0, "worker": _worker_address(),
        "timings": {"fetch_s": 0.0, "run_s": 0.0, "upload_s": 0.0},
    }
    if spec.get("version") != SPEC_VERSION or spec.get("pivotbuild") != pivotbuild.__version__:
        result["error"] = (f"the worker runs pivotbuild {pivotbuild.__version__} (spec version "
                           f"{SPEC_VERSION}); the client sent spec version {spec.get('version')} "
                           f"from pivotbuild {spec.get('pivotbuild')}")
        return result
    lines = _Lines(spec.get("topic"), str(spec.get("key", spec["stage"])))
    try:
        if spec["transfer"] == "shared":
            _run_shared(spec, lines, result)
        else:
            _run_scratch(spec, lines, result)
    except OperationError as exc:
        result.update(status=ERROR, error=str(exc))
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        result.update(status=ERROR, error=f"{where}{exc.strerror or exc}")
    finally:
        lines.close()
    result["log_tail"] = list(lines.tail)
    result["batches"] = lines.batches
    result["attempt"] = lines.attempt
    result["timings"]["total_s"] = time.monotonic() - started
    return result


def _run_shared(spec: dict[str, Any], lines: _Lines, result: dict[str, Any]) -> None:
    root = spec["root"]
    if not os.path.isdir(root):
        raise OperationError(f"{root}: the project is not on this worker's file system "
                             f"(transfer = \"shared\" needs it at the same path)")
    env = {**os.environ, **spec["env"], "PIVOTBUILD_ROOT": root,
           "PIVOTBUILD_STAGE": spec["stage"]}
    t0 = time.monotonic()
    code = _run_cmds(spec, Path(root, spec["wdir"]), env, lines)
    result["timings"]["run_s"] = time.monotonic() - t0
    result.update(exit_code=code, status=_status(code))


def _run_scratch(spec: dict[str, Any], lines: _Lines, result: dict[str, Any]) -> None:
    cache, remote = _opened(spec["remote"])
    scratch = tempfile.mkdtemp(prefix=f"pivotbuild-{spec['run_id'][:8]}-", dir=_scratch_base())
    try:
        os.chmod(scratch, 0o700)
        t0 = time.monotonic()
        _fetch_inputs(spec, cache, remote)
        _place_inputs(spec, cache, scratch)
        result["timings"]["fetch_s"] = time.monotonic() - t0
        env = {**os.environ, **spec["env"], "PIVOTBUILD_ROOT": scratch,
               "PIVOTBUILD_STAGE": spec["stage"]}
        t0 = time.monotonic()
        code = _run_cmds(spec, Path(scratch, spec["wdir"]), env, lines)
        result["timings"]["run_s"] = time.monotonic() - t0
        result.update(exit_code=code, status=_status(code))
        if code != 0:
            return
        t0 = time.monotonic()
        _collect_outs(spec, cache, remote, scratch, result)
        result["timings"]["upload_s"] = time.monotonic() - t0
    finally:
        from pivotbuild.paths import remove_path

        try:
            remove_path(scratch)
        except OSError:
            pass  # a command's leftover: the worker's local directory is removed with it


def _status(code: int) -> str:
    return OK if code == 0 else INTERRUPTED if code == _INTERRUPTED else FAILED


# ---- where things live on a worker ------------------------------------------------------------


def _worker() -> Any:
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def _worker_address() -> str:
    worker = _worker()
    return str(worker.address) if worker is not None else f"pid {os.getpid()}"


def _scratch_base() -> str:
    worker = _worker()
    base = getattr(worker, "local_directory", None) if worker is not None else None
    return str(base) if base else tempfile.gettempdir()


def _worker_cache_dir() -> str:
    """The worker-local cache: $PIVOTBUILD_WORKER_CACHE, else ~/.cache/pivotbuild/worker
    (kept across stages and worker restarts; shared by the workers of one machine)."""
    given = os.environ.get(WORKER_CACHE_ENV)
    if given:
        return os.path.abspath(os.path.expanduser(given))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "pivotbuild", "worker")


_open: dict[str, tuple[Any, Any]] = {}
_open_lock = threading.Lock()


def _opened(settings: dict[str, Any] | None) -> tuple[Any, Any]:
    """The worker cache and the remote, opened once per worker process and kept: the cache's
    checker remembers the objects it found good (a dep used by many stages is not rehashed
    for each), the remote its connections."""
    import json

    from pivotbuild.store import Cache

    key = json.dumps([_worker_cache_dir(), settings], sort_keys=True)
    with _open_lock:
        if key not in _open:
            _open[key] = (Cache(Path(_worker_cache_dir()), durable=False),
                          _open_remote(settings))
        return _open[key]


def _open_remote(settings: dict[str, Any] | None) -> Any:
    """The remote from its URL and options (the worker's own credentials, never the
    client's)."""
    from fsspec.core import split_protocol

    from pivotbuild.config import Remote as RemoteConfig
    from pivotbuild.remote.base import Remote

    if not settings:
        raise OperationError("transfer = \"remote\" needs a remote, and the spec has none")
    config = RemoteConfig(url=settings["url"], endpoint_url=settings.get("endpoint_url"),
                          region=settings.get("region"))
    protocol, path = split_protocol(config.url)
    name = settings.get("name", "remote")
    if protocol in (None, "file", "local"):
        from pivotbuild.remote.localdir import LocalStore

        return Remote(name, config.url, LocalStore(os.path.abspath(os.path.expanduser(path))))
    from pivotbuild.remote.fsspecstore import open_fsspec

    return Remote(name, config.url, open_fsspec(name, config, protocol))


# ---- inputs -----------------------------------------------------------------------------------


class _NoProgress:
    def add(self, count: int) -> None:
        pass

    def advance(self, count: int = 1) -> None:
        pass


def _fetch_inputs(spec: dict[str, Any], cache: Any, remote: Any) -> None:
    """Fetch what the worker cache lacks of the deps and persist outs (rehashed)."""
    from pivotbuild.remote.fetcher import Fetcher
    from pivotbuild.remote.refs import OutputRef, TransferReport

    refs = [OutputRef("", item["path"], item["hash"])
            for item in [*spec["deps"], *spec["persist"]]]
    if not refs:
        return
    report = TransferReport(remote.name, "fetch")
    remote.check()
    fetcher = Fetcher(cache, remote, 8, report, _NoProgress())
    complete = fetcher.objects(refs)
    lacking = [ref for ref in refs if ref.hash not in complete]
    if report.failed or lacking:
        what, why = report.failed[0] if report.failed else (lacking[0].path, "not fetched")
        raise OperationError(f"cannot fetch the input {what}: {why}")


def _place_inputs(spec: dict[str, Any], cache: Any, scratch: str) -> None:
    """Deps linked in read-only (exec bit as the client had it), persist outs copied in
    writable, the wdir and every out's directory created."""
    from pivotbuild import paths
    from pivotbuild.names import is_dir_hash
    from pivotbuild.store.place import Placer

    placer = Placer(cache.objects, Path(scratch))
    for dep in spec["deps"]:
        dest = paths.resolve(scratch, dep["path"])
        if is_dir_hash(dep["hash"]):
            placer.place_dir(dep["hash"], dest, ["hardlink", "copy"], shown=dep["path"])
            _read_only_tree(str(dest))
        else:
            placer.link_file(dep["hash"], dest, ["hardlink", "copy"],
                             executable=bool(dep.get("exec")), shown=dep["path"])
            _read_only(str(dest))
    for out in spec["persist"]:
        dest = paths.resolve(scratch, out["path"])
        if is_dir_hash(out["hash"]):
            placer.place_dir(out["hash"], dest, ["copy"], shown=out["path"])
        else:
            placer.link_file(out["hash"], dest, ["copy"], shown=out["path"])
    os.makedirs(os.path.join(scratch, spec["wdir"]), exist_ok=True)
    for out in spec["outs"]:
        paths.make_parent(scratch, out["path"])


def _read_only(path: str) -> None:
    """A placed copy made read-only (a hardlink is the read-only cache object already)."""
    st = os.lstat(path)
    if st.st_nlink == 1:
        os.chmod(path, st.st_mode & 0o555)


def _read_only_tree(top: str) -> None:
    for directory, _, files in os.walk(top):
        for name in files:
            _read_only(os.path.join(directory, name))


# ---- commands ---------------------------------------------------------------------------------

_INTERRUPTED = 130
_tokens = itertools.count()
_commands: Any = None
_commands_lock = threading.Lock()


def _shared_commands() -> Any:
    """One local.Commands per worker process: its watchdog kills every command's group when
    the worker process dies (the parent-death signal, for the whole process)."""
    global _commands
    with _commands_lock:
        if _commands is None:
            from pivotbuild.runners.local import Commands

            _commands = Commands()
        return _commands


def _run_cmds(spec: dict[str, Any], cwd: Path, env: dict[str, str], lines: _Lines) -> int:
    commands = _shared_commands()
    cancelled = threading.Event()
    current: list[subprocess.Popen[bytes]] = []
    lock = threading.Lock()  # the cancel and a command's start: one sees the other

    def stop() -> None:
        with lock:
            cancelled.set()
            running = current.copy()
        for proc in running:
            _stop_group(proc)

    token = next(_tokens)
    watch = _register_cancel(spec.get("cancel"), token, stop)
    try:
        for command in spec["cmd"]:
            if cancelled.is_set():
                return _INTERRUPTED
            proc = commands.start(command, cwd, env)
            if proc is None:
                return _INTERRUPTED
            with lock:
                current.append(proc)
                late = cancelled.is_set()
            try:
                if late:  # cancelled while it was starting: stop it before reading it
                    _stop_group(proc)
                assert proc.stdout is not None
                for raw in proc.stdout:
                    lines.add(raw.decode("utf-8", "replace"))
                code = proc.wait()
            finally:
                commands.finished(proc)
                with lock:
                    current.remove(proc)
            if cancelled.is_set():
                return _INTERRUPTED
            if code != 0:
                return int(code) if code > 0 else 128 - int(code)
        return 0
    finally:
        if watch is not None:
            watch.remove(token)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT, then SIGTERM, then SIGKILL to the command's process group, each after a grace
    period if it is still alive."""
    for sig, grace in ((signal.SIGINT, _STOP_GRACE_S), (signal.SIGTERM, _STOP_GRACE_S),
                       (signal.SIGKILL, 0.0)):
        if proc.poll() is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # what is left of its group
            except OSError:
                pass
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)


_WATCH_IDLE_S = 30.0  # a run's watcher ends once no stage of it has run here for this long
_watches: dict[str, _CancelWatch] = {}
_watches_lock = threading.Lock()


class _CancelWatch:
    """One thread per worker process and run: it waits on the run's cancel Event and, once
    that is set, stops the commands of every stage of the run registered here. Shared by the
    run's stages on this worker, so that a stage pays no Event and no thread of its own."""

    def __init__(self, name: str, event: Any, worker: Any = None) -> None:
        self.name = name
        self.event = event
        self.worker = worker  # closing (its scheduler lost): the commands stop too
        self.stops: dict[int, Callable[[], None]] = {}
        self.cancelled = False
        self.idle_since = time.monotonic()

    def add(self, token: int, stop: Callable[[], None]) -> bool:
        """Register a stage's ``stop`` (callers hold _watches_lock); False if the run is
        cancelled already."""
        if self.cancelled:
            return False
        self.stops[token] = stop
        return True

    def remove(self, token: int) -> None:
        with _watches_lock:
            self.stops.pop(token, None)
            if not self.stops:
                self.idle_since = time.monotonic()

    def watch(self) -> None:
        while True:
            try:
                fired = bool(self.event.wait(timeout=_CANCEL_POLL_S))
            except Exception:  # noqa: BLE001 - the scheduler is away: ask again later
                fired = False
                time.sleep(_CANCEL_POLL_S)
            status = getattr(getattr(self.worker, "status", None), "name", "")
            fired = fired or status in ("closing", "closed", "failed")
            with _watches_lock:
                if fired:
                    self.cancelled = True  # stays registered: later stages stop at once
                    stops = list(self.stops.values())
                elif not self.stops and time.monotonic() - self.idle_since > _WATCH_IDLE_S:
                    del _watches[self.name]
                    return
                else:
                    continue
            for stop in stops:
                stop()
            return


def _register_cancel(name: str | None, token: int, stop: Callable[[], None]
                     ) -> _CancelWatch | None:
    """Register ``stop`` with the run's watcher (started on first use); calls it at once if
    the run is cancelled already."""
    if not name or _worker() is None:
        return None
    with _watches_lock:
        watch = _watches.get(name)
        if watch is None:
            from distributed import Event, get_client

            # Bound to the worker's client here, in a task's thread: the watcher's own
            # thread has no task context.
            event = Event(name, client=get_client())  # type: ignore[no-untyped-call]
            watch = _watches[name] = _CancelWatch(name, event, _worker())
            threading.Thread(target=watch.watch, name="pivotbuild-cancel", daemon=True).start()
        registered = watch.add(token, stop)
    if not registered:
        stop()
    return watch


class _Lines:
    """A stage's output lines, sent to the client in batches on the run's topic; the last
    LOG_TAIL kept for the result."""

    def __init__(self, topic: str | None, key: str) -> None:
        self.topic = topic
        self.key = key
        self.attempt = os.urandom(6).hex()  # a task rerun after its worker died sends anew
        self.tail: deque[str] = deque(maxlen=LOG_TAIL)
        self.batches = 0
        self._pending: list[str] = []
        self._last = time.monotonic()
        self._worker = _worker() if topic else None

    def add(self, line: str) -> None:
        self.tail.append(line)
        self._pending.append(line)
        now = time.monotonic()
        if len(self._pending) >= _BATCH_LINES or now - self._last >= _BATCH_SECONDS:
            self._flush(now)

    def _flush(self, now: float) -> None:
        self._last = now
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        if self._worker is None:
            return
        self._worker.log_event(self.topic, {"key": self.key, "attempt": self.attempt,
                                            "seq": self.batches,
                                            "lines": batch})
        self.batches += 1

    def close(self) -> None:
        self._flush(time.monotonic())


# ---- outputs ----------------------------------------------------------------------------------


def _collect_outs(spec: dict[str, Any], cache: Any, remote: Any, scratch: str,
                  result: dict[str, Any]) -> None:
    """Hash the outs that exist, store and upload the cached ones (and non-cached ones too
    large to travel inline), inline the small non-cached ones."""
    from pivotbuild.hasher import Hasher
    from pivotbuild.remote.transfer import push_objects

    outs = spec["outs"]
    hasher = Hasher(scratch, None)
    digests = hasher.hash_paths([os.path.join(scratch, o["path"]) for o in outs])
    inline_left = int(spec.get("inline_max", 0))
    upload: dict[str, str] = {}
    for out, digest in zip(outs, digests, strict=True):
        if digest.missing:
            continue  # the client names it ("declared output ... not produced")
        if digest.hash is None:
            raise OperationError(f"output {digest.problem(scratch)}")
        src = Path(scratch, out["path"])
        entry = {"path": out["path"], "hash": digest.hash, "size": digest.size,
                 "nfiles": digest.nfiles, "cache": bool(out["cache"]),
                 "exec": not digest.is_dir and bool(os.stat(src).st_mode & 0o100)}
        result["outs"].append(entry)
        if not out["cache"] and digest.size <= inline_left:
            inline_left -= digest.size
            result["inline"].append({"path": out["path"], "files": _read_files(src, digest)})
            continue
        if digest.is_dir:
            cache.objects.store_dir(src, digest, link=True, shown=out["path"])
        else:
            cache.objects.store_file(src, digest.hash, link=True, shown=out["path"])
        upload[digest.hash] = out["path"]
    if upload:
        report = push_objects(remote, cache.objects, list(upload), shown=upload)
        if report.failed:
            what, why = report.failed[0]
            raise OperationError(f"cannot upload the output {what}: {why}")


def _read_files(src: Path, digest: Any) -> list[list[Any]]:
    """[[relative path ('' for a file out), bytes, exec]] of one small output."""
    from pivotbuild import manifest

    if not digest.is_dir:
        return [["", src.read_bytes(), bool(os.stat(src).st_mode & 0o100)]]
    return [[e.path, (src / e.path).read_bytes(), bool(e.executable)]
            for e in manifest.parse(digest.manifest or b"")]


__all__ = ["SPEC_VERSION", "WORKER_CACHE_ENV", "VersionCheck", "run_stage"]

