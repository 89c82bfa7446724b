"""Data diff: which outputs and tracked paths were added, deleted or modified between two sides.

A side is a set of records ``{path: Entry}`` (path -> hash, size, file count): a git
revision's from its locks' outs and its ``.pvt`` files (``revision_records``, read through
``gitrev`` in one batch), the workspace's from hashing those paths on disk (the caller's
``Hasher``). ``diff(old, new, manifest)`` compares them:

- a path on the new side only is ``added``, on the old side only ``deleted``, on both with
  another hash ``modified``;
- a directory is written with a final ``/`` (``model/``). Its files are listed below it
  (``model/w.txt``) when its manifest is available: both manifests for a modified directory,
  its one manifest for an added or deleted one. ``manifest(hash)`` returns a ``.dir``
  object's bytes (usually from the cache) or None; the bytes are parsed by
  ``pivotbuild.manifest``. A directory whose files could not be listed (a manifest missing
  or unreadable) is also named in ``not_in_cache``.

The document (``--json``; SPEC §11's three keys, plus ``not_in_cache``)::

    {"added":    [{"path": "data/new.csv", "hash": "<32 hex>"}],
     "deleted":  [{"path": "old/", "hash": "<32 hex>.dir"}],
     "modified": [{"path": "model/", "hash": {"old": "...", "new": "..."}},
                  {"path": "model/w.txt", "hash": {"old": "...", "new": "..."}}],
     "not_in_cache": ["big/"]}

each list sorted by path. A path that changed kind (file <-> directory) is ``modified`` under
its plain name. ``counts(doc)`` counts files as ``dvc diff`` does: a listed file is one, a
directory whose files are listed counts through them, one that is not counts as one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pivotbuild import manifest as manifest_format
from pivotbuild.errors import OperationError
from pivotbuild.gitrev import Revision
from pivotbuild.names import is_dir_hash

# pivotbuild.lock (pydantic: a fifth of a second to import) is imported where locks are
# parsed: `metrics diff` of files committed to git never needs it.

__all__ = [
    "Entry", "counts", "diff", "read_revision_outputs", "records_from_locks",
    "records_from_pvt", "render_md", "render_text", "revision_records",
]

LOCKS_PATH = ".pivotbuild/locks"
PVT_SUFFIX = ".pvt"
_HASH_RE = re.compile(r"[0-9a-f]{32}(\.dir)?")

ManifestReader = Callable[[str], bytes | None]


@dataclass(frozen=True, slots=True)
class Entry:
    """One output or tracked path: project-relative ``path``, its ``hash`` (``.dir`` for a
    directory), ``size`` and, for a directory, ``nfiles``; ``cache`` is False for an output
    kept out of the cache (its content is then in git, if anywhere)."""

    path: str
    hash: str
    size: int | None = None
    nfiles: int | None = None
    cache: bool = True

    @property
    def is_dir(self) -> bool:
        return is_dir_hash(self.hash)


# ---- the two sides --------------------------------------------------------------------------


def records_from_locks(locks: Mapping[str, bytes], rev: str | None = None) -> dict[str, Entry]:
    """``{path: Entry}`` for every out of the given lock files (``{file name: bytes}``, the
    name ends in ``<stage>.json``). An invalid lock is an error naming it and ``rev``."""
    from pivotbuild.lock import LockFormatError, parse_lock

    records: dict[str, Entry] = {}
    for name, data in locks.items():
        stage = name.rsplit("/", 1)[-1].removesuffix(".json")
        try:
            lock = parse_lock(data, stage)
        except LockFormatError as exc:
            at = f" at {rev}" if rev else ""
            raise OperationError(f"{name}{at}: invalid lock ({exc})") from None
        for out in lock.outs:
            records[out.path] = Entry(out.path, out.hash, out.size, out.nfiles, out.cache)
    return records


def records_from_pvt(files: Mapping[str, bytes], rev: str | None = None) -> dict[str, Entry]:
    """``{path: Entry}`` for ``track``'s records (``{"x/data.pvt": bytes}``): JSON
    ``{"hash", "nfiles" (directories), "path", "size"}`` whose ``path`` is relative to the
    ``.pvt`` file's directory. An invalid record is an error naming it and ``rev``."""
    from pivotbuild.lock import is_safe_path

    records: dict[str, Entry] = {}
    for name, data in files.items():
        where = f"{name} at {rev}" if rev else name
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            raise OperationError(f"{where}: not a valid tracked-path record (not JSON)") from None
        if not isinstance(doc, dict):
            raise OperationError(f"{where}: not a valid tracked-path record (not an object)")
        path, digest, size = doc.get("path"), doc.get("hash"), doc.get("size")
        nfiles = doc.get("nfiles")
        if not isinstance(path, str) or not is_safe_path(path) or path == ".":
            raise OperationError(f"{where}: path is not a relative path: {path!r}")
        if not isinstance(digest, str) or not _HASH_RE.fullmatch(digest):
            raise OperationError(f"{where}: hash is not a hash")
        if type(size) is not int or (nfiles is not None and type(nfiles) is not int):
            raise OperationError(f"{where}: size or nfiles is not a count")
        directory = name.rpartition("/")[0]
        full = f"{directory}/{path}" if directory else path
        records[full] = Entry(full, digest, size, nfiles)
    return records


def revision_records(revision: Revision, locks_path: str = LOCKS_PATH) -> dict[str, Entry]:
    """The outputs (from its locks) and tracked paths (from its ``.pvt`` files) of a git
    revision; two ``ls-tree`` and one ``cat-file`` process, whatever their number."""
    lock_entries = [e for e in revision.list_dir(locks_path)
                    if e.kind == "blob" and e.path.endswith(".json")]
    pvt_entries = [e for e in revision.entries() if e.path.endswith(PVT_SUFFIX)
                   and not e.path.startswith(".pivotbuild/")]
    contents = revision.read_files([*lock_entries, *pvt_entries])  # by object id
    locks = {e.path: contents[e.path] or b"" for e in lock_entries}
    pvts = {e.path: contents[e.path] or b"" for e in pvt_entries}
    records = records_from_locks(locks, revision.label)
    records.update(records_from_pvt(pvts, revision.label))
    return records


def read_revision_outputs(revision: Revision, paths: Iterable[str],
                          records: Mapping[str, Entry],
                          read_object: Callable[[str], bytes | None]) -> dict[str, bytes | None]:
    """Content of output files at a revision (metrics, plots): from git when the file is
    committed (a ``cache = false`` output), else through the revision's record and
    ``read_object(hash)`` (the cache, or a remote); None when neither has it."""
    wanted = list(paths)
    found = revision.read_files(wanted)
    for path in wanted:
        if found[path] is None and path in records and not records[path].is_dir:
            found[path] = read_object(records[path].hash)
    return found


# ---- comparing ------------------------------------------------------------------------------


def _shown(entry: Entry) -> str:
    return entry.path + "/" if entry.is_dir else entry.path


def _manifest(entry: Entry, read: ManifestReader | None) -> dict[str, tuple[str, bool]] | None:
    if read is None:
        return None
    data = read(entry.hash)
    if data is None:
        return None
    try:
        return {e.path: (e.hash, e.executable) for e in manifest_format.parse(data)}
    except manifest_format.ManifestError:
        return None


def diff(old: Mapping[str, Entry], new: Mapping[str, Entry],
         manifest: ManifestReader | None = None) -> dict[str, Any]:
    """The document the module describes: ``old`` (e.g. a revision) against ``new`` (e.g.
    the workspace)."""
    added: list[dict[str, Any]] = []
    deleted: list[dict[str, Any]] = []
    modified: list[dict[str, Any]] = []
    unlisted: list[str] = []

    def one_side(entry: Entry, into: list[dict[str, Any]]) -> None:
        into.append({"path": _shown(entry), "hash": entry.hash})
        if not entry.is_dir:
            return
        files = _manifest(entry, manifest)
        if files is None:
            unlisted.append(_shown(entry))
            return
        into.extend({"path": f"{entry.path}/{name}", "hash": digest}
                    for name, (digest, _) in files.items())

    for path in sorted(set(old) | set(new)):
        before, after = old.get(path), new.get(path)
        if before is None and after is not None:
            one_side(after, added)
        elif after is None and before is not None:
            one_side(before, deleted)
        elif before is not None and after is not None and before.hash != after.hash:
            if before.is_dir != after.is_dir:
                modified.append({"path": path, "hash": {"old": before.hash, "new": after.hash}})
                continue
            modified.append({"path": _shown(after),
                             "hash": {"old": before.hash, "new": after.hash}})
            if after.is_dir:
                _inside(before, after, manifest, added, deleted, modified, unlisted)
    key = _sort_key
    return {"added": sorted(added, key=key), "deleted": sorted(deleted, key=key),
            "modified": sorted(modified, key=key), "not_in_cache": sorted(unlisted)}


def _sort_key(item: Mapping[str, Any]) -> str:
    return str(item["path"])


def _inside(before: Entry, after: Entry, manifest: ManifestReader | None,
            added: list[dict[str, Any]], deleted: list[dict[str, Any]],
            modified: list[dict[str, Any]], unlisted: list[str]) -> None:
    """Per-file changes of a modified directory, when both manifests can be read."""
    old_files, new_files = _manifest(before, manifest), _manifest(after, manifest)
    if old_files is None or new_files is None:
        unlisted.append(_shown(after))
        return
    base = after.path
    for name in sorted(old_files.keys() | new_files.keys()):
        was, now = old_files.get(name), new_files.get(name)
        path = f"{base}/{name}"
        if was is None and now is not None:
            added.append({"path": path, "hash": now[0]})
        elif now is None and was is not None:
            deleted.append({"path": path, "hash": was[0]})
        elif was != now and was is not None and now is not None:
            modified.append({"path": path, "hash": {"old": was[0], "new": now[0]}})


def counts(doc: Mapping[str, Any]) -> dict[str, int]:
    """Files added, deleted and modified (see the module docstring)."""
    unlisted = set(doc.get("not_in_cache", ()))
    return {kind: sum(1 for item in doc[kind]
                      if not item["path"].endswith("/") or item["path"] in unlisted)
            for kind in ("added", "deleted", "modified")}


def _summary(doc: Mapping[str, Any]) -> str:
    c = counts(doc)
    return f"files summary: {c['added']} added, {c['deleted']} deleted, {c['modified']} modified"


def render_text(doc: Mapping[str, Any]) -> str:
    """Sections ``Added:``, ``Deleted:``, ``Modified:`` (paths indented), the directories not
    compared, then the summary line."""
    lines: list[str] = []
    for kind, title in (("added", "Added"), ("deleted", "Deleted"), ("modified", "Modified")):
        if doc[kind]:
            lines.append(f"{title}:")
            lines.extend(f"    {item['path']}" for item in doc[kind])
            lines.append("")
    if doc.get("not_in_cache"):
        lines.append("Not compared file by file (a directory manifest is not in the cache; "
                     "fetch it to see inside):")
        lines.extend(f"    {path}" for path in doc["not_in_cache"])
        lines.append("")
    lines.append(_summary(doc))
    return "\n".join(lines) + "\n"


def render_md(doc: Mapping[str, Any]) -> str:
    """A Markdown table ``| Status | Path |`` and the summary line, for a pull request."""
    lines = ["| Status | Path |", "|---|---|"]
    for kind in ("added", "deleted", "modified"):
        lines.extend(f"| {kind} | {_md(item['path'])} |" for item in doc[kind])
    lines += ["", _summary(doc)]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")
