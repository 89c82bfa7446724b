"""Where a remote's bytes live: a local directory (plain system calls) or any fsspec
file system, behind one small interface; and opening a named remote from the project's
settings. remote.py moves objects through it.
"""

from __future__ import annotations

import abc
import contextlib
import os
import stat
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

from pivotbuild.atomic import (
    sync_filesystem,
    temp_name,
    write_atomic,
)
from pivotbuild.cache import FILES_DIR, RUN_SUFFIX, RUNS_DIR, check_hash
from pivotbuild.config import Project
from pivotbuild.errors import OperationError, UsageError
from pivotbuild.urls import redact_text, redact_url

if TYPE_CHECKING:
    from pivotbuild.config import Remote as RemoteConfig

# Wanted objects spread over at most this many ab/ shards: list those shards one by one;
# over more: one recursive listing of files/ is fewer requests.
_SHARD_LISTING_MAX = 16
# Protocols whose single upload is atomic (an object appears whole or not at all).
_ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"}


# ---- where a remote's bytes live ------------------------------------------------------------


class _Store(abc.ABC):
    """A remote's storage; ``rel`` names are its layout's (``files/ab/cdef…``)."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise (any exception) if the remote cannot be used at all."""
        ...

    @abc.abstractmethod
    def list_names(self, top: str, shards: Collection[str] | None) -> set[str]:
        """``shard + name`` of every entry below ``top/<shard>/`` (all shards if None)."""
        ...

    @abc.abstractmethod
    def read(self, rel: str) -> bytes:
        ...

    @abc.abstractmethod
    def write(self, rel: str, data: bytes) -> None:
        ...

    def sync(self) -> None:
        """Make what was written so far durable (before writing what refers to it)."""


class LocalStore(_Store):
    """A directory on a mounted file system, through system calls. Objects are copied in
    bulk by remote.py through the compiled core, from and to ``root``."""

    def __init__(self, root: str) -> None:
        self.root = root
        # Copies are written as unnamed files (O_TMPFILE) until the file system turns out
        # to have none; then under temp names.
        self.unnamed_files = True
        self._dirs: set[str] = set()
        self._dirs_lock = threading.Lock()

    def check(self) -> None:
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            raise OperationError("the directory does not exist (create it first)") from None
        if not stat.S_ISDIR(st.st_mode):
            raise OperationError("not a directory")

    def ensure_dir(self, directory: str) -> None:
        if directory in self._dirs:
            return
        os.makedirs(directory, exist_ok=True)
        with self._dirs_lock:
            self._dirs.add(directory)

    def list_names(self, top: str, shards: Collection[str] | None) -> set[str]:
        base = os.path.join(self.root, top)
        if shards is None:
            try:
                shards = os.listdir(base)
            except (FileNotFoundError, NotADirectoryError):
                return set()
        names: set[str] = set()
        for shard in shards:
            if len(shard) != 2:
                continue
            try:
                with os.scandir(os.path.join(base, shard)) as entries:
                    names.update(shard + e.name for e in entries if not e.name.startswith("."))
            except (FileNotFoundError, NotADirectoryError):
                continue
        return names

    def read(self, rel: str) -> bytes:
        with open(os.path.join(self.root, rel), "rb") as f:
            return f.read()

    def write(self, rel: str, data: bytes) -> None:
        final = os.path.join(self.root, rel)
        self.ensure_dir(os.path.dirname(final))
        write_atomic(final, data, mode=0o444, durable=False)

    def sync(self) -> None:
        sync_filesystem(self.root)


class FsspecStore(_Store):
    """Any fsspec file system (S3 and the like, memory://, sftp://, …): objects go one by
    one through upload and download."""

    def __init__(self, fs: Any, root: str, protocol: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.protocol = protocol
        self.atomic_put = protocol in _ATOMIC_PUT

    def _key(self, rel: str) -> str:
        return f"{self.root}/{rel}" if self.root else rel

    def check(self) -> None:
        if self.atomic_put:  # bucket/prefix: the bucket must exist, the prefix need not
            bucket = self.root.split("/", 1)[0]
            try:
                self.fs.info(bucket)
            except FileNotFoundError:
                raise OperationError(f"the bucket '{bucket}' does not exist") from None
        else:
            try:
                info = self.fs.info(self.root)
            except FileNotFoundError:
                raise OperationError("the directory does not exist (create it first)") from None
            if info.get("type") != "directory":
                raise OperationError("not a directory")

    def list_names(self, top: str, shards: Collection[str] | None) -> set[str]:
        if shards is None:
            found = self.fs.find(self._key(top))
        else:
            found = []
            for listing in map_jobs(lambda s: self.fs.find(self._key(f"{top}/{s}")), list(shards),
                                min(8, len(shards) or 1)):
                found.extend(listing)
        names = set()
        for path in found:
            parts = path.rstrip("/").rsplit("/", 2)
            if len(parts) == 3 and len(parts[1]) == 2 and not parts[2].startswith("."):
                names.add(parts[1] + parts[2])
        return names

    def _via_temp(self, rel: str, put: Callable[[str], None]) -> None:
        final = self._key(rel)
        if self.atomic_put:
            put(final)
            return
        directory, name = final.rsplit("/", 1) if "/" in final else ("", final)
        self.fs.makedirs(directory, exist_ok=True)
        tmp = f"{directory}/{temp_name(name)}"
        try:
            put(tmp)
            self.fs.mv(tmp, final)
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to show
                self.fs.rm_file(tmp)
            raise

    def upload(self, src: str, rel: str) -> None:
        """Put the local file ``src`` at ``rel``, atomically."""
        self._via_temp(rel, lambda key: self.fs.put_file(src, key))

    def download(self, rel: str, dst: str) -> bool:
        """Write the object into the existing file ``dst``; True if it is stored executable
        (never, here: object stores keep no mode)."""
        self.fs.get_file(self._key(rel), dst)
        return False

    def read(self, rel: str) -> bytes:
        return bytes(self.fs.cat_file(self._key(rel)))

    def write(self, rel: str, data: bytes) -> None:
        self._via_temp(rel, lambda key: self.fs.pipe_file(key, data))


# ---- errors ---------------------------------------------------------------------------------


_CONNECT_ERRORS = ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError",
                   "ConnectionClosedError", "ReadTimeoutError", "ServerDisconnectedError")
_CREDENTIAL_HINT = ("check the credentials: AWS_PROFILE or AWS_ACCESS_KEY_ID/"
                    "AWS_SECRET_ACCESS_KEY, or profile in .pivotbuild/config.local.toml")


def cause(exc: BaseException) -> str:
    """One line saying why a remote operation failed."""
    name = type(exc).__name__
    text = str(exc)
    if isinstance(exc, OperationError):
        pass
    elif name in ("NoCredentialsError", "PartialCredentialsError"):
        text = f"no usable credentials ({_CREDENTIAL_HINT})"
    elif name in ("ProfileNotFound",):
        text = f"{text} ({_CREDENTIAL_HINT})"
    elif isinstance(exc, PermissionError):
        text = f"access denied: {exc.strerror or text} ({_CREDENTIAL_HINT})"
    elif name in _CONNECT_ERRORS or isinstance(exc, ConnectionError):
        text = f"cannot connect: {text}"
    elif isinstance(exc, FileNotFoundError):
        text = "not found on the remote"
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    elif not text:
        text = name
    return " ".join(text.split())


# ---- opening a remote -----------------------------------------------------------------------


class Remote:
    """One configured remote, opened: its name, URL and store."""

    def __init__(self, name: str, url: str, store: _Store) -> None:
        self.name = name
        self.url = url
        self.store = store

    @property
    def shown_url(self) -> str:
        """The URL as messages show it: never its userinfo or a secret (urls.py)."""
        return redact_url(self.url)

    def __repr__(self) -> str:
        return f"Remote({self.name!r}, {self.shown_url!r})"

    def error(self, exc: BaseException, doing: str = "") -> OperationError:
        what = f" {doing}" if doing else ""
        return OperationError(redact_text(
            f"remote '{self.name}' ({self.shown_url}){what}: {cause(exc)}"))

    def check(self) -> None:
        """OperationError (one line: the remote and the cause) if it cannot be used."""
        try:
            self.store.check()
        except Exception as exc:  # noqa: BLE001 - any failure means the same to the user
            raise self.error(exc) from None

    def present(self, top: str, names: Collection[str]) -> set[str]:
        """Which of ``names`` (hashes, or input hashes under runs/) the remote holds."""
        if not names:
            return set()
        shards = {n[:2] for n in names}
        try:
            raw = self.store.list_names(
                top, shards if len(shards) <= _SHARD_LISTING_MAX else None)
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, "listing") from None
        suffix = RUN_SUFFIX if top == RUNS_DIR else ""
        if suffix:
            raw = {n[: -len(suffix)] for n in raw if n.endswith(suffix)}
        return raw & set(names)


def object_rel(digest: str) -> str:
    check_hash(digest)
    return f"{FILES_DIR}/{digest[:2]}/{digest[2:]}"


def run_rel(input_hash: str) -> str:
    check_hash(input_hash, directory=False)
    return f"{RUNS_DIR}/{input_hash[:2]}/{input_hash[2:]}{RUN_SUFFIX}"


def _s3_options(config: RemoteConfig) -> dict[str, Any]:
    options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
    if config.endpoint_url:
        options["endpoint_url"] = config.endpoint_url
    if config.region:
        options["client_kwargs"] = {"region_name": config.region}
    if config.profile:
        options["profile"] = config.profile
    return options


def open_remote(project: Project, name: str | None) -> Remote:
    """The remote ``name`` (None: the default one). UsageError if there is no such remote."""
    if name is None:
        name = project.default_remote
        if name is None:
            if not project.remotes:
                raise UsageError("no remote is configured (add [remotes.NAME] with a url to "
                                 "pivot.toml)")
            known = ", ".join(sorted(project.remotes))
            raise UsageError(f"no default remote: pass -r NAME (one of: {known}) or set "
                             f"project.default_remote")
    config = project.remotes.get(name)
    if config is None:
        known = ", ".join(sorted(project.remotes)) or "none is configured"
        raise UsageError(f"unknown remote '{name}' (known: {known})")
    url = config.url
    from fsspec.core import split_protocol

    protocol, path = split_protocol(url)
    if protocol in (None, "file", "local"):
        local = Path(os.path.expanduser(path))
        if not local.is_absolute():
            local = project.root / local
        return Remote(name, url, LocalStore(os.path.abspath(local)))
    options = _s3_options(config) if protocol in ("s3", "s3a") else {}
    try:
        from fsspec.core import url_to_fs

        fs, root = url_to_fs(url, **options)
    except ImportError as exc:
        extra = " (pip install 'pivotbuild[s3]')" if protocol in ("s3", "s3a") else ""
        raise OperationError(redact_text(
            f"remote '{name}' ({redact_url(url)}): {protocol}:// needs a package that is not "
            f"installed: {exc}{extra}")) from None
    except Exception as exc:  # noqa: BLE001 - a bad URL or option, said in one line
        raise OperationError(redact_text(
            f"remote '{name}' ({redact_url(url)}): {cause(exc)}")) from None
    return Remote(name, url, FsspecStore(fs, root, protocol))

def map_jobs(fn: Callable[[T], R], items: Sequence[T], jobs: int) -> list[R]:
    if len(items) < 2 or jobs <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(jobs, len(items))) as pool:
        return list(pool.map(fn, items))
