"""The remote store interface: what every kind of remote store does, and one opened remote.

A remote has the local cache's layout, objects and run-cache entries stored verbatim under
``<url>/files/`` and ``<url>/runs/`` (the formats and their versions: store/objects.py,
store/runcache.py; the names: names.py).

Two kinds of store implement ``Store``: a directory on a mounted file system (localdir.py,
plain system calls and the compiled core: the hot path of a 100,000-file push) and any fsspec
file system (fsspecstore.py: S3 and the like). Callers (transfer.py, status.py) never ask which
kind they hold. What a store guarantees:

- ``present`` learns what the store holds by listing (the ``ab/`` shards concerned, or one
  listing of the whole top directory), never one request per object;
- ``put_many`` sends objects from the local cache, each checked against its name before it is
  sent (nothing false leaves the cache), each written atomically (it appears whole under its
  name, or not at all);
- ``get_many`` writes objects into temps beside their places in the local cache and never
  places them: the caller rehashes and places (fetcher.py);
- ``read`` / ``write`` move one small entry (a run-cache entry, a manifest), ``write``
  atomically; ``sync`` makes what was written durable before anything that refers to it.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from pivotbuild.atomic import temp_name
from pivotbuild.errors import OperationError
from pivotbuild.names import RUN_SUFFIX, object_name, run_entry_name, shard_of
from pivotbuild.store.objects import FILES_DIR
from pivotbuild.store.runcache import RUNS_DIR
from pivotbuild.urls import redact_text, redact_url

if TYPE_CHECKING:
    from pivotbuild.store.objects import ObjectStore

T = TypeVar("T")
R = TypeVar("R")

# Wanted names spread over at most this many ab/ shards: list those shards one by one;
# over more: one recursive listing of the top directory is fewer requests.
_SHARD_LISTING_MAX = 16

CORRUPT_LOCAL = ("the cached copy is corrupt (its content does not match its name); "
                 "'pivotbuild verify --cache' lists such objects")
NOT_LOCAL = "it is not in the local cache"


def object_rel(digest: str) -> str:
    """The object ``digest``'s name in a store (``files/ab/cdef…``)."""
    return f"{FILES_DIR}/{object_name(digest)}"


def run_rel(input_hash: str) -> str:
    """The run-cache entry's name in a store (``runs/ab/cdef….json``)."""
    return f"{RUNS_DIR}/{run_entry_name(input_hash)}"


def temp_beside(files_dir: str, digest: str) -> str:
    """A fresh temp name beside the object ``digest``'s place below ``files_dir``."""
    directory, name = os.path.split(os.path.join(files_dir, object_name(digest)))
    return os.path.join(directory, temp_name(name))


class Progress(Protocol):
    """What a transfer tells its progress bar: work found, work done."""

    def add(self, count: int) -> None: ...

    def advance(self, count: int = 1) -> None: ...


@dataclass(slots=True)
class Sent:
    """What ``put_many`` did: per object, the bytes sent or why it was not."""

    done: dict[str, int] = field(default_factory=dict)  # hash -> size
    failed: dict[str, str] = field(default_factory=dict)  # hash -> why ("not sent: …")


# (temp in the local cache, its size, the content's hash if it was computed on the way)
Received = tuple[str, int, str | None]


class Store(abc.ABC):
    """A remote's storage; ``rel`` names follow the layout above."""

    # Objects per round of get_many: downloaded, then rehashed, then renamed.
    batch: int = 1024

    @abc.abstractmethod
    def check(self) -> None:
        """Raise (any exception) if the store cannot be used at all."""

    @abc.abstractmethod
    def list_names(self, top: str, shards: Collection[str] | None) -> set[str]:
        """``shard + name`` of every entry below ``top/<shard>/`` (all shards if None)."""

    @abc.abstractmethod
    def read(self, rel: str) -> bytes:
        """The bytes stored at ``rel``; FileNotFoundError if there are none."""

    @abc.abstractmethod
    def write(self, rel: str, data: bytes) -> None:
        """Store ``data`` at ``rel``, atomically."""

    def sync(self) -> None:
        """Make what was written so far durable (before writing what refers to it)."""

    @abc.abstractmethod
    def put_many(self, objects: ObjectStore, digests: Sequence[str], jobs: int,
                 progress: Progress) -> Sent:
        """Send these objects of the local cache (``objects``), each checked against its
        name first; advances ``progress`` once per object. An error that stops the whole
        transfer raises; one object's failure is in the result."""

    @abc.abstractmethod
    def get_many(self, objects: ObjectStore, digests: Sequence[str],
                 executable: Collection[str], jobs: int, progress: Progress
                 ) -> dict[str, Received | Exception]:
        """Copy these objects into temps beside their places in the local cache (mode 0555
        for those in ``executable``, else 0444), placing none; per object, the temp or the
        error (FileNotFoundError: the store has no such object). Advances ``progress`` once
        per object."""

    def present(self, top: str, names: Collection[str]) -> set[str]:
        """Which of ``names`` (hashes; input hashes under runs/) the store holds."""
        if not names:
            return set()
        shards = {shard_of(n) for n in names}
        raw = self.list_names(top, shards if len(shards) <= _SHARD_LISTING_MAX else None)
        if top == RUNS_DIR:
            raw = {n[: -len(RUN_SUFFIX)] for n in raw if n.endswith(RUN_SUFFIX)}
        return raw & set(names)


# ---- errors ---------------------------------------------------------------------------------


class StoreFailure(Exception):
    """A store failed as a whole, not for one object; the caller names the remote."""

    def __init__(self, doing: str, exc: BaseException) -> None:
        super().__init__(doing)
        self.doing = doing
        self.exc = exc


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


def remote_error(name: str, url: str, exc: BaseException | str, doing: str = ""
                 ) -> OperationError:
    """One line naming the remote (its URL redacted) and why it failed."""
    what = f" {doing}" if doing else ""
    why = exc if isinstance(exc, str) else cause(exc)
    return OperationError(redact_text(f"remote '{name}' ({redact_url(url)}){what}: {why}"))


# ---- one opened remote ----------------------------------------------------------------------


class Remote:
    """One configured remote, opened: its name, URL and store."""

    def __init__(self, name: str, url: str, store: Store) -> None:
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
        return remote_error(self.name, self.url, exc, doing)

    def check(self) -> None:
        """OperationError (one line: the remote and the cause) if it cannot be used."""
        try:
            self.store.check()
        except Exception as exc:  # noqa: BLE001 - any failure means the same to the user
            raise self.error(exc) from None

    def present(self, top: str, names: Collection[str]) -> set[str]:
        """Which of ``names`` (hashes, or input hashes under runs/) the remote holds."""
        try:
            return self.store.present(top, names)
        except Exception as exc:  # noqa: BLE001
            raise self.error(exc, "listing") from None

    def put_many(self, objects: ObjectStore, digests: Sequence[str], jobs: int,
                 progress: Progress) -> Sent:
        """Store.put_many; a failure of the whole store names the remote."""
        try:
            return self.store.put_many(objects, digests, jobs, progress)
        except StoreFailure as failure:
            raise self.error(failure.exc, failure.doing) from None

    def get_many(self, objects: ObjectStore, digests: Sequence[str],
                 executable: Collection[str], jobs: int, progress: Progress
                 ) -> dict[str, Received | Exception]:
        """Store.get_many; a failure of the whole store names the remote."""
        try:
            return self.store.get_many(objects, digests, executable, jobs, progress)
        except StoreFailure as failure:
            raise self.error(failure.exc, failure.doing) from None


# ---- per-object work -----------------------------------------------------------------------


def capture(fn: Callable[[T], R]) -> Callable[[T], R | Exception]:
    """fn, returning its exception instead of raising it (KeyboardInterrupt still raises)."""
    def wrapper(item: T) -> R | Exception:
        try:
            return fn(item)
        except Exception as exc:  # noqa: BLE001 - reported per object by the caller
            return exc
    return wrapper


__all__ = [
    "CORRUPT_LOCAL", "FILES_DIR", "NOT_LOCAL", "RUNS_DIR", "Progress", "Received", "Remote",
    "Sent", "Store", "capture", "cause", "object_rel", "remote_error", "run_rel",
]
