"""Putting objects into the workspace: the one way outputs come back from the cache.

``repro`` (restore, run-cache, persist outputs), ``checkout`` and ``pull`` all come through
``Placer.restore``, with one set of rules:

- An output whose content is already its locked hash is left alone (``relink``: placed again,
  to re-establish links to the cache).
- Whatever is in the way at the output path is replaced only if the caller may overwrite the
  workspace (``overwrite``: repro, whose stage owns its outputs; ``checkout --force``):
  a file with other content, a directory where a file belongs or a file where a directory
  belongs, something that cannot be hashed (a link out of the project, an unreadable file),
  and, inside a directory output, modified files and files the output does not list
  (removed). Otherwise those paths are conflicts: reported, and nothing of that output is
  touched.
- Only what differs is placed: in a directory output, the files whose content or exec bit
  differ from the manifest, and the files that are not there.
- Every object is checked against its name before it is placed (check.py); a corrupt one is
  removed from the cache and never placed. A ``.dir`` object whose files are not all sound and
  present is removed too (the next commit or fetch stores it whole). Both are reported at the
  end (CorruptObjectsError / MissingObjectsError, ``.restored`` listing what was placed).
- A file is placed with the first of the checkout methods that works on that file system
  (reflink, hardlink, copy), into a temp (in the staging directory when it shares the
  output's file system, so that a kill leaves no stray temp among the outputs) renamed over
  the path: a symlink there is replaced itself, never written through. Every directory
  created resolves inside the project.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pivotbuild import hashing, manifest, paths
from pivotbuild.atomic import create_temp, temp_name, unlink_quietly
from pivotbuild.errors import OperationError, UsageError
from pivotbuild.hashing import get_backend
from pivotbuild.names import check_hash, is_dir_hash
from pivotbuild.parallel import map_parallel
from pivotbuild.store import fileio
from pivotbuild.store.objects import (
    PARALLEL_MIN,
    PULL_HINT,
    CorruptObjectsError,
    MissingObjectsError,
    ObjectStore,
    corrupt_message,
)

STAGING_DIR = "tmp"  # inside the project's state directory: temps being placed


class Current(Protocol):
    """What is at an output path now (hasher.PathDigest fits)."""

    @property
    def hash(self) -> str | None: ...  # None: missing, or cannot be hashed

    @property
    def missing(self) -> bool: ...

    @property
    def is_dir(self) -> bool: ...

    @property
    def manifest(self) -> bytes | None: ...  # a directory's, when it was hashed


@dataclass(slots=True)
class Restored:
    """What restore did to one output."""

    placed: bool = False  # False: already in place, or conflicts
    conflicts: list[str] = field(default_factory=list)  # paths in the way, left alone


class _Unsupported(Exception):
    """A checkout method that cannot work here; the next one is tried."""


_Item = tuple[manifest.ManifestEntry, str, os.stat_result]  # entry, object path, its stat


class Placer:
    """Places objects of ``objects`` in the project at ``root``."""

    def __init__(self, objects: ObjectStore, root: Path, staging: Path | None = None) -> None:
        """``staging``: a directory for files being placed (see _temp_dir)."""
        self.objects = objects
        self.root = Path(root)
        self.staging = staging
        self._staging_dev: int | None = None
        self._disabled: set[tuple[str, int]] = set()  # (method, st_dev) known not to work

    # ---- outputs, by the rules at the top ---------------------------------------------------

    def restore(self, hash: str, path: str, current: Current | None, methods: Sequence[str],
                *, overwrite: bool, relink: bool = False) -> Restored:
        """Put the output ``path`` (project-relative) back as the object ``hash``, by the rules
        at the top. ``current``: what is at ``path`` now; None when not known (anything there
        is then in the way). Missing or corrupt objects: MissingObjectsError or
        CorruptObjectsError after everything else was placed."""
        result = Restored()
        if current is not None and current.hash == hash and not relink:
            return result
        dest = paths.resolve(self.root, path)  # refused (nothing touched) if it leads outside
        there = os.path.lexists(dest) if current is None else not current.missing
        if there and (current is None or current.hash is None):
            # Not known, or something unhashable (a link out of the project, say).
            if not overwrite:
                result.conflicts.append(path)
                return result
            paths.remove(self.root, path)
            there = False
        differs = there and current is not None and current.hash != hash
        if not is_dir_hash(hash):
            if differs and not overwrite:
                result.conflicts.append(path)
                return result
            if differs and current is not None and current.is_dir:
                paths.remove(self.root, path)
            self.link_file(hash, dest, methods, shown=path)
            result.placed = True
            return result
        wanted = self.objects.read_manifest(hash, path)
        only = None
        if there and current is not None and current.is_dir and current.manifest is not None:
            only = self._dir_changes(path, wanted, manifest.parse(current.manifest), overwrite,
                                     result.conflicts)
            if only is None:
                return result
        elif differs:  # a file where a directory belongs (or one whose files are not known)
            if not overwrite:
                result.conflicts.append(path)
                return result
            paths.remove(self.root, path)
        self.place_dir(hash, dest, methods, only=None if relink else only, shown=path)
        result.placed = True
        return result

    def _dir_changes(self, path: str, wanted: list[manifest.ManifestEntry],
                     have: list[manifest.ManifestEntry], overwrite: bool,
                     conflicts: list[str]) -> list[str] | None:
        """The files of a directory output to (re)place, or None (conflicts recorded) if that
        would overwrite what may not be. With ``overwrite``, untracked files are removed."""
        want = {e.path: e for e in wanted}
        got = {e.path: e for e in have}
        modified = [p for p, e in got.items()
                    if p in want and (e.hash, e.executable) != (want[p].hash, want[p].executable)]
        untracked = [p for p in got if p not in want]
        if (modified or untracked) and not overwrite:
            conflicts.extend(f"{path}/{p}" for p in sorted(modified + untracked))
            return None
        for rel in untracked:
            paths.remove(self.root, f"{path}/{rel}")
        return [p for p in want if p not in got or p in modified]

    # ---- one file ---------------------------------------------------------------------------

    def link_file(self, hash: str, dest: Path, methods: Sequence[str],
                  executable: bool | None = None, shown: str | None = None) -> str:
        """Put the file object ``hash`` at ``dest`` with the first of ``methods`` that works.

        Returns the method used. ``dest`` is replaced through a temp file and a rename: a
        symlink there is replaced itself, never written through; its parent is created and must
        resolve inside the project. ``executable`` None gives the object's own exec bit. The
        object is checked against its name first: a corrupt one is removed from the cache
        (CorruptObjectsError), nothing is placed. ``shown``: how errors name dest.
        """
        check_hash(hash, directory=False)
        check_methods(methods)
        obj = self.objects.object_path(hash)
        where = str(dest) if shown is None else shown
        try:
            obj_st = os.stat(obj)
        except FileNotFoundError:
            raise MissingObjectsError.one(where, hash) from None
        except OSError as exc:
            raise OperationError(f"{obj}: cannot read the cache object: "
                                 f"{fileio.why(exc)}") from None
        bad = self.objects.checker.check([(hash, where)], {hash: obj_st})
        if bad:
            self.objects.remove(hash, corrupt=True)
            raise CorruptObjectsError(corrupt_message(bad), bad)
        parent, dev = self._safe_parent(Path(dest))
        final = os.path.join(parent, Path(dest).name)
        return self._place(str(obj), obj_st, final, methods, executable, where, dev)

    def _safe_parent(self, dest: Path) -> tuple[str, int]:
        """dest's parent, resolved, created, and checked to lie inside the project;
        (path, st_dev).

        The parent is resolved before anything is created, so a symlinked directory on the way
        cannot make us create directories outside.
        """
        if dest.name in ("", ".", ".."):
            raise OperationError(f"{dest}: not a file name to restore to")
        parent = os.path.realpath(dest.parent)
        if not paths.is_inside(parent, os.path.realpath(self.root)):
            raise OperationError(f"{dest}: refusing to write outside the project ({parent})")
        try:
            os.makedirs(parent, exist_ok=True)
            return parent, os.stat(parent).st_dev
        except OSError as exc:
            raise OperationError(f"{dest}: cannot create its directory: "
                                 f"{fileio.why(exc)}") from None

    def _place(
        self, obj: str, obj_st: os.stat_result, final: str, methods: Sequence[str],
        executable: bool | None, shown: str, dev: int,
    ) -> str:
        obj_exec = bool(obj_st.st_mode & stat.S_IXUSR)
        want_exec = obj_exec if executable is None else executable
        try:
            current = os.lstat(final)
        except FileNotFoundError:
            current = None
        except OSError as exc:
            raise OperationError(f"{shown}: {fileio.why(exc)}") from None
        if current is not None and stat.S_ISDIR(current.st_mode):
            raise OperationError(f"{shown}: is a directory; cannot restore a file over it")
        problems: list[str] = []
        for method in methods:
            if (method, dev) in self._disabled:
                continue
            if method == "hardlink" and want_exec != obj_exec:
                # A shared inode has one mode: this object cannot carry the wanted exec bit.
                problems.append("hardlink: the cached object's exec bit differs")
                continue
            if (method == "hardlink" and current is not None
                    and (current.st_ino, current.st_dev) == (obj_st.st_ino, obj_st.st_dev)):
                return method  # already this very object
            try:
                if method == "hardlink":
                    self._hardlink(obj, final, dev)
                else:
                    self._fill_temp(obj, final, want_exec, clone=method == "reflink", dev=dev)
                return method
            except _Unsupported as exc:
                problems.append(f"{method}: {exc}")
            except OSError as exc:
                raise OperationError(f"{shown}: cannot restore from the cache: "
                                     f"{fileio.why(exc)}") from None
        detail = "; ".join(problems) or "every method is unavailable here"
        raise OperationError(f"{shown}: cannot restore from the cache with "
                             f"{', '.join(methods)} ({detail})")

    def _temp_dir(self, final_dir: str, dev: int) -> str:
        """Where to build a file that will be renamed into final_dir: the staging directory
        (the project's .pivotbuild/tmp) when it is on the same file system, so that a
        process killed between the two steps leaves no stray temp among the outputs."""
        if self.staging is None:
            return final_dir
        if self._staging_dev is None:
            try:
                os.makedirs(self.staging, exist_ok=True)
                self._staging_dev = os.stat(self.staging).st_dev
            except OSError:
                self._staging_dev = -1
        return str(self.staging) if self._staging_dev == dev else final_dir

    def _fill_temp(self, obj: str, final: str, executable: bool, clone: bool, dev: int) -> None:
        """Reflink (clone) or copy obj to a writable temp, then rename it over final."""
        directory, name = os.path.split(final)
        directory = self._temp_dir(directory, dev)
        src_fd = os.open(obj, os.O_RDONLY | os.O_CLOEXEC)
        tmp = None
        try:
            dst_fd, tmp = create_temp(directory, name, 0o600)
            try:
                if clone:
                    refused = fileio.clone(src_fd, dst_fd)
                    if refused is not None:
                        self._disabled.add(("reflink", dev))
                        raise _Unsupported(refused)
                else:
                    fileio.copy_data(src_fd, dst_fd)
                os.fchmod(dst_fd, fileio.mode_for(executable, writable=True))
            finally:
                os.close(dst_fd)
            os.replace(tmp, final)
            tmp = None
        finally:
            os.close(src_fd)
            if tmp is not None:
                unlink_quietly(tmp)

    def _hardlink(self, obj: str, final: str, dev: int) -> None:
        directory, name = os.path.split(final)
        directory = self._temp_dir(directory, dev)
        for _ in range(100):
            tmp = os.path.join(directory, temp_name(name))
            try:
                os.link(obj, tmp)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in fileio.HARDLINK_UNSUPPORTED:
                    raise
                if exc.errno != errno.EMLINK:  # EMLINK is about this object only
                    self._disabled.add(("hardlink", dev))
                raise _Unsupported(fileio.why(exc)) from None
        else:
            raise FileExistsError(errno.EEXIST, "could not find a free temp name", directory)
        try:
            os.replace(tmp, final)
        finally:
            # rename() between two names of one inode succeeds doing nothing: tmp stays.
            if os.path.lexists(tmp):
                unlink_quietly(tmp)

    # ---- a directory ------------------------------------------------------------------------

    def place_dir(
        self, hash: str, dest: Path, methods: Sequence[str],
        only: Collection[str] | None = None, shown: str | None = None,
    ) -> list[str]:
        """Place the directory object ``hash`` at ``dest``; the relative paths placed.

        Files the manifest lists are (re)placed; other files in ``dest`` are left alone (the
        caller decides about them). ``only`` restricts the work to these relative paths. A
        symlink at ``dest`` is replaced by a real directory. Every object is checked against
        its name first. Files whose object is missing or corrupt are skipped and reported at
        the end in one MissingObjectsError or CorruptObjectsError (``.restored`` lists what
        was placed nonetheless); corrupt objects are removed, and with them (or a missing
        one) the ``.dir`` object, which no longer has all its files. ``shown``: how errors
        name dest.
        """
        check_hash(hash, directory=True)
        check_methods(methods)
        dest = Path(dest)
        where = str(dest) if shown is None else shown
        entries = self.objects.read_manifest(hash, where)
        if only is not None:
            wanted = set(only)
            entries = [e for e in entries if e.path in wanted]
        parent, dev = self._safe_parent(dest)
        top = os.path.join(parent, dest.name)
        try:
            if os.path.islink(top):
                os.unlink(top)  # replace the link itself: never restore through it
            os.makedirs(top, exist_ok=True)
        except OSError as exc:
            raise OperationError(f"{dest}: cannot create the directory: "
                                 f"{fileio.why(exc)}") from None

        present: list[_Item] = []
        missing: list[tuple[str, str]] = []
        for entry in entries:  # names already checked: the manifest matched its hash
            obj = self.objects.object_file(entry.hash)
            try:
                present.append((entry, obj, os.stat(obj)))
            except FileNotFoundError:
                missing.append((os.path.join(where, entry.path), entry.hash))
            except OSError as exc:
                raise OperationError(f"{obj}: cannot read the cache object: "
                                     f"{fileio.why(exc)}") from None
        corrupt = self._drop_corrupt(hash, where, present)
        if missing and not corrupt:
            self.objects.remove(hash)  # incomplete: the next commit or fetch stores it whole

        self._make_dirs(top, dest, {os.path.dirname(e.path) for e, _, _ in present})

        def place(item: _Item) -> str:
            entry, obj, obj_st = item
            self._place(obj, obj_st, os.path.join(top, entry.path), methods, entry.executable,
                        os.path.join(where, entry.path), dev)
            path: str = entry.path
            return path

        if len(present) < PARALLEL_MIN:
            restored = [place(item) for item in present]
        else:
            # The first file settles which methods work on this file system; when that is
            # hardlink, the files not in the workspace yet are linked in one bulk call.
            restored = [place(present[0])]
            rest = present[1:]
            if self._first_method(methods, dev) == "hardlink":
                linked, rest = self._link_new(top, rest)
                restored += linked
            restored += map_parallel(place, rest, self.objects.jobs)
        if corrupt:
            raise CorruptObjectsError(corrupt_message(corrupt), corrupt, missing, restored)
        if missing:
            names = ", ".join(path for path, _ in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise MissingObjectsError(
                f"{where}: {len(missing)} cache object(s) missing: {names}{more}; {PULL_HINT}",
                missing, restored,
            )
        return restored

    def _drop_corrupt(self, hash: str, shown: str, present: list[_Item]
                      ) -> list[tuple[str, str]]:
        """Check the objects of ``present`` (a directory's files, with their stat results)
        against their names; remove the corrupt ones from ``present`` and from the cache,
        and then the ``.dir`` object ``hash`` too. [(path shown, hash)] of the files
        concerned."""
        bad = self.objects.checker.check(
            ((e.hash, os.path.join(shown, e.path)) for e, _, _ in present),
            {e.hash: st for e, _, st in present})
        if not bad:
            return []
        bad_hashes = {h for _, h in bad}
        self.objects.remove_with_dir(hash, bad_hashes)
        corrupt = [(os.path.join(shown, e.path), e.hash) for e, _, _ in present
                   if e.hash in bad_hashes]
        present[:] = [item for item in present if item[0].hash not in bad_hashes]
        return corrupt

    def _first_method(self, methods: Sequence[str], dev: int) -> str | None:
        return next((m for m in methods if (m, dev) not in self._disabled), None)

    def _link_new(self, top: str, items: list[_Item]) -> tuple[list[str], list[_Item]]:
        """Hardlink the objects of ``items`` whose workspace path does not exist yet, in one
        bulk call: link() creates the name or fails, so it never writes through or over
        anything. (restored paths, the items left for _place: names that exist, objects
        whose exec bit differs from the entry's, links the file system refused.)"""
        linkable: list[_Item] = []
        rest: list[_Item] = []
        for item in items:
            entry, _, obj_st = item
            same_exec = entry.executable == bool(obj_st.st_mode & stat.S_IXUSR)
            (linkable if same_exec else rest).append(item)
        results = get_backend().link_files(
            [(obj, os.path.join(top, entry.path), stat.S_IMODE(obj_st.st_mode))
             for entry, obj, obj_st in linkable], self.objects.jobs)
        restored = []
        for item, (status, _) in zip(linkable, results, strict=True):
            if status == hashing.OK:
                restored.append(item[0].path)
            else:
                rest.append(item)
        return restored, rest

    def _make_dirs(self, top: str, dest: Path, rel_dirs: Iterable[str]) -> None:
        """Create the subdirectories below ``top``; each must resolve inside ``top``."""
        needed: set[str] = set()
        for rel in rel_dirs:
            while rel and rel not in needed:
                needed.add(rel)
                rel = os.path.dirname(rel)
        # A path sorts after each of its ancestors (a prefix sorts first), so parents go first.
        for rel in sorted(needed):
            path = os.path.join(top, rel)
            shown = os.path.join(str(dest), rel)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                try:
                    os.mkdir(path)
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise OperationError(f"{shown}: cannot create the directory: "
                                         f"{fileio.why(exc)}") from None
                continue
            except OSError as exc:
                raise OperationError(f"{shown}: {fileio.why(exc)}") from None
            if stat.S_ISLNK(st.st_mode):
                real = os.path.realpath(path)
                if not paths.is_inside(real, top) or not os.path.isdir(real):
                    raise OperationError(
                        f"{shown}: is a symlink to {real}, outside {dest}; refusing to restore "
                        f"through it"
                    )
            elif not stat.S_ISDIR(st.st_mode):
                raise OperationError(f"{shown}: exists and is not a directory")


def check_methods(methods: Sequence[str]) -> None:
    """UsageError unless ``methods`` is a non-empty list of checkout methods."""
    if isinstance(methods, str) or not methods:
        raise UsageError(f"checkout methods must be a non-empty list of "
                         f"{paths.CHECKOUT_METHODS}")
    for method in methods:
        if method not in paths.CHECKOUT_METHODS:
            raise UsageError(f"unknown checkout method {method!r} "
                             f"(use {paths.CHECKOUT_METHODS})")


__all__ = ["STAGING_DIR", "Current", "Placer", "Restored", "check_methods"]
