"""A remote on any fsspec file system (S3 and the like, memory://, sftp://, …): objects go
one by one through upload and download, ``-j`` at a time.

``s3://bucket/prefix`` needs s3fs (the ``s3`` extra); its endpoint_url / region / profile come
from the remote's settings (best kept in ``.pivotbuild/config.local.toml``) or from the usual
AWS_* environment. Each write is atomic: one PUT on object stores (atomic by itself), a temp
name and a rename on file systems. Objects are checked against their names (through the
local cache's memo) before they are uploaded; object stores keep no file mode.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from pivotbuild.atomic import create_temp, temp_name, unlink_quietly
from pivotbuild.errors import OperationError
from pivotbuild.names import is_dir_hash
from pivotbuild.parallel import map_parallel
from pivotbuild.remote.base import (
    CORRUPT_LOCAL,
    NOT_LOCAL,
    Progress,
    Received,
    Sent,
    Store,
    capture,
    cause,
    object_rel,
    remote_error,
)

if TYPE_CHECKING:
    from pivotbuild.config import Remote as RemoteConfig
    from pivotbuild.store.objects import ObjectStore

# Protocols whose single upload is atomic (an object appears whole or not at all).
_ATOMIC_PUT = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss"}


class FsspecStore(Store):
    """Any fsspec file system: objects go one by one through upload and download."""

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
            for listing in map_parallel(lambda s: self.fs.find(self._key(f"{top}/{s}")),
                                    list(shards), min(8, len(shards) or 1)):
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

    def read(self, rel: str) -> bytes:
        return bytes(self.fs.cat_file(self._key(rel)))

    def write(self, rel: str, data: bytes) -> None:
        self._via_temp(rel, lambda key: self.fs.pipe_file(key, data))

    def put_many(self, objects: ObjectStore, digests: Sequence[str], jobs: int,
                 progress: Progress) -> Sent:
        """Upload as they are, so each is checked against its name first: a file through
        the cache's memo (one checked before is not read again), a manifest as the cache
        reads it."""
        sent = Sent()
        local = objects.present(digests)
        for digest in digests:
            if digest not in local:
                sent.failed[digest] = f"not sent: {NOT_LOCAL}"
        corrupt = {digest for _, digest in objects.checker.check(
            (h, h) for h in digests if h in local and not is_dir_hash(h))}
        for digest in digests:
            if digest in local and is_dir_hash(digest):
                try:  # checked once per process, when it was first read (push reads them all)
                    objects.read_manifest(digest)
                except OperationError:
                    corrupt.add(digest)
        for digest in corrupt:
            sent.failed[digest] = f"not sent: {CORRUPT_LOCAL}"
        todo = [h for h in digests if h not in sent.failed]
        progress.advance(len(digests) - len(todo))

        def one(digest: str) -> int:
            try:
                src = str(objects.object_path(digest))
                size = os.path.getsize(src)
                self._via_temp(object_rel(digest), lambda key: self.fs.put_file(src, key))
                return size
            finally:
                progress.advance()

        for digest, result in zip(todo, map_parallel(capture(one), todo, jobs), strict=True):
            if isinstance(result, Exception):
                sent.failed[digest] = f"not sent: {cause(result)}"
            else:
                sent.done[digest] = result
        return sent

    def get_many(self, objects: ObjectStore, digests: Sequence[str],
                 executable: Collection[str], jobs: int, progress: Progress
                 ) -> dict[str, Received | Exception]:
        """Download each into a temp beside its place (object stores keep no mode: the
        executable bit comes from the manifest that lists the object)."""
        def one(digest: str) -> Received:
            try:
                directory, name = os.path.split(objects.object_path(digest))
                fd, tmp = create_temp(directory, name, 0o600)
                os.close(fd)
                try:
                    self.fs.get_file(self._key(object_rel(digest)), tmp)
                    os.chmod(tmp, 0o555 if digest in executable else 0o444)
                    return tmp, os.path.getsize(tmp), None
                except BaseException:
                    unlink_quietly(tmp)
                    raise
            finally:
                progress.advance()

        return dict(zip(digests, map_parallel(capture(one), digests, jobs), strict=True))


def _s3_options(config: RemoteConfig) -> dict[str, Any]:
    options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
    if config.endpoint_url:
        options["endpoint_url"] = config.endpoint_url
    if config.region:
        options["client_kwargs"] = {"region_name": config.region}
    if config.profile:
        options["profile"] = config.profile
    return options


def open_fsspec(name: str, config: RemoteConfig, protocol: str) -> FsspecStore:
    """The store for the remote ``name``'s URL; OperationError (one line, URL redacted) if
    the URL or its options are bad or its protocol's package is not installed."""
    options = _s3_options(config) if protocol in ("s3", "s3a") else {}
    try:
        from fsspec.core import url_to_fs

        fs, root = url_to_fs(config.url, **options)
    except ImportError as exc:
        extra = " (pip install 'pivotbuild[s3]')" if protocol in ("s3", "s3a") else ""
        raise remote_error(name, config.url, f"{protocol}:// needs a package that is not "
                                             f"installed: {exc}{extra}") from None
    except Exception as exc:  # noqa: BLE001 - a bad URL or option, said in one line
        raise remote_error(name, config.url, exc) from None
    return FsspecStore(fs, root, protocol)
