"""Comparing results across git revisions: what `metrics`, `params`, `plots` and `diff` read.

The CLI (cli/compare.py) opens the project and calls one function here per command; the
groundwork modules do the rest: ``gitrev`` reads a revision's files (one ``git cat-file
--batch`` for all of them), ``metrics`` parses and diffs metrics and params, ``plots`` draws,
``datadiff`` compares outputs and tracked paths.

Which files. The workspace's pivot.toml says which outputs are metrics (``metric = true``,
or a list of files inside a directory output) and plots, and which params its stages use;
``params diff`` adds the params the revision's locks record (a stage since removed still
shows its params). A file of a revision is read, in this order:

1. from git, when it is committed there (a ``cache = false`` output, a params file);
2. else through the revision's lock that records it and the local cache (for a file inside
   a directory output, through the directory's manifest), each object rehashed before use;
3. with ``--pull``, what the cache lacks is fetched from the remote first, in one transfer.

A file the revision neither holds nor records is absent (``null`` on that side of a diff);
one it records but whose object cannot be had is an error naming the file, the revision and
``--pull``.

Two memos in ``.pivotbuild/`` (per machine, never committed) keep a 1,000-stage project's
commands near a tenth of a second: ``compare-targets`` (what pivot.toml marks, see
``project_targets``) and ``compare-params`` (parsed params values per file content).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pivotbuild import metrics
from pivotbuild.datadiff import LOCKS_PATH, Entry, records_from_locks
from pivotbuild.errors import OperationError
from pivotbuild.gitrev import Revision, TreeEntry, open_revision
from pivotbuild.paths import PROJECT_FILE

if TYPE_CHECKING:
    from pivotbuild.config import Project
    from pivotbuild.pipeline import Pipeline
    from pivotbuild.plots import PlotSpec

__all__ = [
    "WORKSPACE", "ObjectReader", "Targets", "data_diff", "metrics_diff", "metrics_show",
    "params_diff", "plots_page", "project_targets", "remote_fetch", "revision_files",
    "targets", "workspace_files",
]

WORKSPACE = "workspace"  # how tables and legends name the files on disk
#: Fetch these ``(path, hash)`` objects from the remote into the local cache (``--pull``).
Fetch = Callable[[Sequence[tuple[str, str]]], None]


@dataclass(slots=True)
class Targets:
    """What the workspace's pivot.toml marks: metrics files, plot files (with their flag),
    and per params file the keys its stages use."""

    metrics: list[str] = field(default_factory=list)
    plots: dict[str, PlotSpec] = field(default_factory=dict)
    params: dict[str, set[str]] = field(default_factory=dict)
    params_file: str = "params.toml"
    #: The workspace's values of those params, as the project read them (JSON-safe):
    #: ``params diff`` need not parse the workspace's params files again.
    param_values: dict[str, dict[str, Any]] = field(default_factory=dict)


def targets(project: Project) -> Targets:
    """The Targets of a loaded project, in stage and out order."""
    found = Targets(params_file=project.params_file)
    plot_flags: list[tuple[str, Any, str]] = []
    for stage in project.stages.values():
        for index, out in enumerate(stage.outs):
            if out.metric is True:
                found.metrics.append(out.path)
            elif isinstance(out.metric, list):
                found.metrics.extend(out.metric)
            where = f"stages.{stage.base}.outs[{index}].plot"
            if out.plot is True or isinstance(out.plot, dict):
                plot_flags.append((out.path, out.plot, where))
            elif isinstance(out.plot, list):
                plot_flags.extend((path, True, where) for path in out.plot)
        for given in stage.params:
            name, sep, key = given.rpartition(":")
            file = name if sep else project.params_file
            found.params.setdefault(file, set()).add(key)
            if given in stage.param_values:
                found.param_values.setdefault(file, {})[key] = metrics.plain(
                    stage.param_values[given])
    found.metrics = list(dict.fromkeys(found.metrics))
    if plot_flags:
        from pivotbuild.plots import parse_plot_flag

        for path, flag, where in plot_flags:
            spec = parse_plot_flag(flag, where)
            if spec is not None:
                found.plots.setdefault(path, spec)
    return found


# ---- the targets memo: pivot.toml's answer without loading pivot.toml ------------------------

MEMO_FILE = "compare-targets"  # in .pivotbuild/, per machine, never committed
MEMO_VERSION = 3  # 3: keyed on HOME and the root; sealed


def _memo_path(root: Path) -> str:
    from pivotbuild.paths import STATE_DIR

    return os.path.join(root, STATE_DIR, MEMO_FILE)


def _memo_header() -> dict[str, Any]:
    import sys

    from pivotbuild import __version__
    from pivotbuild.snapshot import cache_env

    return {"version": MEMO_VERSION, "pivotbuild": __version__,
            "python": sys.implementation.cache_tag, "env": cache_env()}


#: A template expression that reads a params file: ``${params.x}``, ``${ params['x'] }``.
_PARAMS_TEMPLATE = re.compile(rb"\$\{[^}]*params")


def project_targets(root: Path) -> tuple[Targets, Path]:
    """(the Targets of the project at ``root``, its cache directory).

    Loading a big pivot.toml costs more than the rest of `metrics diff` (a thousand stages: a
    third of a second, pydantic included), so the answer is kept in ``.pivotbuild/
    compare-targets`` (marshal, snapshot.sealed) with what it was read from, as the no-op
    snapshot is (snapshot.py): the content hash of every file the expansion read (pivot.toml,
    the params files, config.local.toml), the stamps of every directory a glob walked, the
    project root's real path and the environment the cache directory is resolved from. Any
    difference, anything unreadable, or an out that now holds ``.git`` (loading refuses it),
    and the project is loaded again; a file changed while it was being read leaves no memo
    (the racy rule).

    One exception, for the usual edit of a params value: when no ``${...}`` of pivot.toml
    names ``params``, a params file decides no stage, out or flag, only the values of its
    params and whether pivot.toml is valid; then a change of its content keeps the memo
    while the file still parses and holds every key the stages list (``_reread_params``,
    which puts the new values in ``Targets.param_values``); else the project is loaded, and
    its ConfigError says what is wrong."""
    from pivotbuild import snapshot

    path = _memo_path(root)
    header = {**_memo_header(), "root": os.path.realpath(root)}  # a copy has its own cache
    try:
        doc = snapshot.read_sealed(path)
        if (isinstance(doc, dict) and {k: doc.get(k) for k in header} == header
                and snapshot.dir_stamps(str(root), [d[0] for d in doc["stamps"]])
                == doc["stamps"]):
            now = snapshot.config_key(str(root), [f for f, _ in doc["configs"]])
            changed = {f for (f, h), (_, was) in zip(now, doc["configs"]) if h != was}
            if changed <= set(doc["values_only"]) and not _holds_git(root, doc["outs"]):
                found = _targets_from(doc["targets"])
                if _reread_params(root, changed, found):
                    return found, Path(doc["cache_dir"])
    except (OSError, ValueError, EOFError, TypeError, KeyError, IndexError):
        pass
    from pivotbuild.projectcache import load_project

    key = snapshot.key_before(str(root), with_locks=False)
    project = load_project(root)
    found = targets(project)
    # None: a file or directory it was read from changed during the load, or so shortly
    # before it that what was read cannot be told from what is there now (the racy rule).
    expansion = snapshot.expansion_key(str(root), project, key)
    if expansion is not None and os.path.isdir(os.path.dirname(path)):
        configs, stamps = expansion
        keyed = {rel for rel, _ in configs}

        values_only: list[str] = []
        try:
            text = (root / PROJECT_FILE).read_bytes()
        except OSError:
            text = b"${params}"  # unknown: as if templated
        if not _PARAMS_TEMPLATE.search(text):
            values_only = sorted({found.params_file, *found.params} & keyed)
        outs = [out.path for stage in project.stages.values() for out in stage.outs]
        doc = {**header, "configs": configs, "stamps": stamps, "values_only": values_only,
               "cache_dir": str(project.cache_dir), "targets": _targets_doc(found),
               "outs": outs}
        snapshot.write_sealed(path, doc)  # a memo only: else pivot.toml is loaded again
    return found, project.cache_dir


def _holds_git(root: Path, outs: list[str]) -> bool:
    """Whether an out has become a directory holding ``.git``, which loading pivot.toml
    refuses (paths.protected_out_problem): then it is loaded, to say so."""
    from pivotbuild.paths import GIT_DIR

    return any(os.path.lexists(os.path.join(root, out, GIT_DIR)) for out in outs)


def _reread_params(root: Path, files: set[str], found: Targets) -> bool:
    """Read each changed params file as loading pivot.toml would, and take its values for
    the keys the stages use into ``found``; False if one no longer parses or lacks one of
    them (or, when they use it, is gone), for loading pivot.toml to report."""
    if not files:
        return True
    from pivotbuild.config_read import read_params
    from pivotbuild.errors import ConfigError
    from pivotbuild.template import lookup

    for file in files:
        wanted = sorted(found.params.get(file, ()))
        found.param_values.pop(file, None)
        if not os.path.isfile(os.path.join(root, file)):
            if wanted:
                return False
            continue
        try:
            data = read_params(root, file, file)
            found.param_values[file] = {key: metrics.plain(lookup(data, key)) for key in wanted}
        except (ConfigError, KeyError):
            return False
    return True


def _targets_doc(found: Targets) -> dict[str, Any]:
    return {"metrics": list(found.metrics), "params_file": found.params_file,
            "params": {f: sorted(k) for f, k in found.params.items()},
            "param_values": found.param_values,
            "plots": [(p, s.x, list(s.y) if s.y is not None else None, s.title, s.template)
                      for p, s in found.plots.items()]}


def _targets_from(doc: dict[str, Any]) -> Targets:
    plots: dict[str, PlotSpec] = {}
    if doc["plots"]:
        from pivotbuild.plots import PlotSpec

        plots = {p: PlotSpec(x=x, y=tuple(y) if y is not None else None, title=title,
                             template=template) for p, x, y, title, template in doc["plots"]}
    return Targets(metrics=list(doc["metrics"]), plots=plots, params_file=doc["params_file"],
                   params={f: set(k) for f, k in doc["params"].items()},
                   param_values=doc["param_values"])


# ---- reading files: the workspace, a revision, the cache -------------------------------------


def workspace_files(root: Path, paths: Iterable[str]) -> dict[str, bytes | None]:
    """``{path: bytes}`` from disk; None for a path that is not a readable file."""
    found: dict[str, bytes | None] = {}
    for path in paths:
        try:
            found[path] = (root / path).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            found[path] = None
        except OSError as exc:
            raise OperationError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return found


class ObjectReader:
    """Cache objects by hash, each rehashed before it is trusted; ``fetch`` (``--pull``)
    brings what the cache lacks from the remote."""

    def __init__(self, objects_file: Callable[[str], str], fetch: Fetch | None = None) -> None:
        self._file = objects_file
        self.fetch = fetch

    def read(self, digest: str, shown: str) -> bytes | None:
        """The object's bytes; None if the cache has no such object. A corrupt object is an
        OperationError naming ``shown``."""
        try:
            with open(self._file(digest), "rb") as handle:
                data = handle.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise OperationError(f"{shown}: cannot read cache object {digest}: "
                                 f"{exc.strerror or exc}") from None
        if not digest.endswith(".dir"):
            from pivotbuild.hashing import get_backend

            if get_backend().hash_bytes(data) != digest:
                raise OperationError(f"{shown}: cache object {digest} does not match its hash "
                                     f"(corrupt: 'pivotbuild verify --cache' finds such objects)")
        return data


def _record_of(path: str, records: Mapping[str, Entry]) -> Entry | None:
    """The output recording ``path``: the path's own, or a directory output above it."""
    if path in records:
        return records[path]
    parent = path
    while "/" in parent:
        parent = parent.rpartition("/")[0]
        if parent in records and records[parent].is_dir:
            return records[parent]
    return None


def _locate(path: str, record: Entry, objects: ObjectReader, label: str
            ) -> tuple[str | None, str]:
    """(the object hash holding ``path`` or None if it is not to be had yet, the hash that
    is missing). For a file in a directory output: its manifest's entry."""
    if not record.is_dir:
        return record.hash, record.hash
    from pivotbuild import manifest as manifest_format

    data = objects.read(record.hash, f"{record.path}/ at {label}")
    if data is None:
        return None, record.hash
    try:
        entries = manifest_format.parse(data)
    except manifest_format.ManifestError as exc:
        raise OperationError(f"{record.path}/ at {label}: unreadable manifest "
                             f"{record.hash}: {exc}") from None
    inner = path[len(record.path) + 1:]
    for entry in entries:
        if entry.path == inner:
            return entry.hash, entry.hash
    raise OperationError(f"{path}: not a file of the directory output {record.path}/ at "
                         f"{label}")


def revision_files(revision: Revision, paths: Sequence[str], objects: ObjectReader
                   ) -> dict[str, bytes | None]:
    """``{path: bytes | None}`` for output files at ``revision`` (see the module docstring).
    One ``cat-file`` reads the paths; only if one is not committed to git are the
    revision's locks listed and read (one more ``ls-tree`` and ``cat-file``) and parsed."""
    found = revision.read_files(paths) if paths else {}
    absent = [p for p in paths if found[p] is None]
    if not absent:
        return found
    lock_entries = [e for e in revision.list_dir(LOCKS_PATH)
                    if e.kind == "blob" and e.path.endswith(".json")]
    contents = revision.read_files(lock_entries)
    records = records_from_locks({e.path: contents[e.path] or b"" for e in lock_entries},
                                 revision.label)
    wanted = {p: r for p in absent if (r := _record_of(p, records)) is not None}
    for attempt in (1, 2):
        missing: list[tuple[str, str]] = []
        for path, record in wanted.items():
            digest, lacking = _locate(path, record, objects, revision.label)
            data = objects.read(digest, f"{path} at {revision.label}") if digest else None
            if data is None:
                missing.append((record.path if record.is_dir else path,
                                record.hash if record.is_dir else lacking))
            found[path] = data
        if not missing:
            break
        if attempt == 1 and objects.fetch is not None:
            objects.fetch(list(dict.fromkeys(missing)))
            continue
        path, digest = missing[0]
        hint = ("the remote does not have it either" if objects.fetch is not None
                else "fetch it from the remote with --pull")
        raise OperationError(f"{path}: recorded at {revision.label} as {digest}, which is not "
                             f"in the cache ({hint})")
    return found


# ---- metrics and params ---------------------------------------------------------------------


def metrics_show(root: Path, found: Targets) -> dict[str, dict[str, Any]]:
    """``metrics show``: the workspace's metrics files, flattened (a missing one: error)."""
    return metrics.show(workspace_files(root, found.metrics))


def _loaded(files: Mapping[str, bytes | None], rev: str | None) -> dict[str, dict[str, Any]]:
    return {path: metrics.load(path, data, rev) for path, data in files.items()
            if data is not None}


def metrics_diff(root: Path, found: Targets, rev: str, objects: ObjectReader,
                 all: bool = False) -> tuple[Revision, dict[str, Any]]:
    """``metrics diff REV``: (the revision, SPEC §11's document: REV against the workspace)."""
    revision = open_revision(root, rev)
    old_files = revision_files(revision, found.metrics, objects)
    new_files = workspace_files(root, found.metrics)
    for path in found.metrics:
        if old_files[path] is None and new_files[path] is None:
            raise OperationError(f"{path}: metrics file found neither in the workspace nor in "
                                 f"{revision.label} (has its stage run?)")
    doc = metrics.diff(_loaded(old_files, revision.label), _loaded(new_files, None), all=all)
    return revision, doc


def params_diff(root: Path, found: Targets, rev: str, all: bool = False
                ) -> tuple[Revision, dict[str, Any]]:
    """``params diff REV``: the params the workspace's stages and REV's locks use, keyed by
    params file, REV (from git) against the workspace."""
    revision = open_revision(root, rev)
    memo = _ParamsMemo(root)
    keys: dict[str, set[str]] = {f: set(k) for f, k in found.params.items()}
    files = [*keys, found.params_file]
    # REV's locks directory, by git's id of its tree: the same id, the same locks.
    locks_tree = next((e.oid for e in revision.list_dir(LOCKS_PATH.rpartition("/")[0])
                       if e.path == LOCKS_PATH and e.kind == "tree"), None)
    locked = memo.lock_keys(locks_tree, found.params_file)
    if locked is not None:
        contents = revision.read_files(files)
    else:
        listed = revision.list_dir(LOCKS_PATH)
        lock_entries = [e for e in listed if e.kind == "blob" and e.path.endswith(".json")]
        same = _same_as_workspace(root, lock_entries)
        contents = revision.read_files([*(e for e in lock_entries if e.path not in same),
                                        *files])
        contents.update(same)
        locked = metrics.param_keys_from_lock_files(
            {e.path: contents[e.path] for e in lock_entries}, found.params_file)
        if locks_tree is not None and not any(e.is_symlink for e in listed):
            memo.keep_lock_keys(locks_tree, found.params_file, locked)
    for file, names in locked.items():
        keys.setdefault(file, set()).update(names)
    extra = [f for f in keys if f not in contents]
    if extra:
        contents.update(revision.read_files(extra))
    order = sorted(keys, key=lambda f: (f != found.params_file, f))
    disk = workspace_files(root, order)
    old: dict[str, dict[str, Any]] = {}
    new: dict[str, dict[str, Any]] = {}
    for file in order:
        if not all and contents.get(file) is not None and contents.get(file) == disk[file]:
            continue  # the same bytes: no param of it changed (and no parse needed)
        wanted = sorted(keys[file])
        if contents.get(file) is not None:
            old[file] = memo.values(file, contents[file] or b"", wanted, revision.label)
        known = found.param_values.get(file, {})
        if disk[file] is None:
            continue
        if known.keys() >= set(wanted):  # as the project read them: no second parse
            new[file] = {k: known[k] for k in wanted}
        else:
            new[file] = memo.values(file, disk[file] or b"", wanted, None)
    memo.save()
    return revision, metrics.params_diff(old, new, all=all)


def _same_as_workspace(root: Path, entries: Sequence[TreeEntry]) -> dict[str, bytes]:
    """``{path: bytes}`` of the files whose workspace copy is the revision's blob (git's own
    object id of the bytes on disk equals the entry's): read from disk, they need not be
    inflated from git's objects (a thousand loose ones: a tenth of a second)."""
    import hashlib

    same: dict[str, bytes] = {}
    for entry in entries:
        if entry.kind != "blob" or entry.is_symlink:
            continue
        try:
            with open(os.path.join(root, entry.path), "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        algorithm = hashlib.sha1 if len(entry.oid) == 40 else hashlib.sha256
        digest = algorithm(b"blob %d\0" % len(data))
        digest.update(data)
        if digest.hexdigest() == entry.oid:
            same[entry.path] = data
    return same


class _ParamsMemo:
    """The values of the keys a params diff wants, per params file content: parsing a big
    TOML file costs more than reading it from git (a thousand tables: ~70 ms), and the
    revision compared with (HEAD) seldom changes between two runs. ``.pivotbuild/
    compare-params`` (marshal, snapshot.sealed) holds the last few ``(file, content hash,
    keys) -> values``, and the last few ``("locks", tree id, default params file) ->
    {params file: keys}``: the params a revision's locks use, by git's object id of its
    locks directory (a tree holding no symlink), which names their content exactly: the
    thousand locks need not be listed, read or parsed again."""

    KEEP = 8

    def __init__(self, root: Path) -> None:
        from pivotbuild.paths import STATE_DIR
        from pivotbuild.snapshot import read_sealed

        self.path = os.path.join(root, STATE_DIR, "compare-params")
        self.entries: dict[tuple[str, str, tuple[str, ...]], dict[str, Any]] = {}
        self.changed = False
        try:
            doc = read_sealed(self.path)
            if isinstance(doc, dict) and doc.get("header") == _memo_header():
                self.entries = dict(doc["entries"])
        except (OSError, ValueError, EOFError, TypeError, KeyError, AttributeError):
            pass

    def values(self, file: str, data: bytes, wanted: list[str], rev: str | None
               ) -> dict[str, Any]:
        from pivotbuild.snapshot import content_hash

        key = (file, content_hash(data), tuple(wanted))
        found = self.entries.get(key)
        if found is None:
            found = metrics.load_params(file, data, wanted, rev)
            self.entries.pop(key, None)
            self.entries[key] = found
            self.changed = True
        return found

    def lock_keys(self, tree: str | None, default_file: str) -> dict[str, set[str]] | None:
        found = self.entries.get(("locks", tree, (default_file,))) if tree else None
        return None if found is None else {file: set(keys) for file, keys in found.items()}

    def keep_lock_keys(self, tree: str, default_file: str, keys: dict[str, set[str]]) -> None:
        self.entries[("locks", tree, (default_file,))] = {
            file: sorted(names) for file, names in keys.items()}
        self.changed = True

    def save(self) -> None:
        if not self.changed or not os.path.isdir(os.path.dirname(self.path)):
            return
        from pivotbuild.snapshot import write_sealed

        kept = list(self.entries.items())[-self.KEEP:]
        write_sealed(self.path, {"header": _memo_header(), "entries": kept})  # a memo only


# ---- plots ----------------------------------------------------------------------------------


def plots_page(root: Path, found: Targets, revs: Sequence[str], objects: ObjectReader,
               workspace: bool, title: str) -> tuple[str, dict[str, Any]]:
    """(the HTML page, the plots document) for the plot outputs of ``revs`` in order, then
    the workspace's if ``workspace``. Needs the ``plots`` extra (a one-line error without)."""
    from pivotbuild import plots

    plots._converter()  # without the extra, say so before reading anything
    sides: dict[str, Mapping[str, bytes | None]] = {}
    paths = list(found.plots)
    for rev in revs:
        revision = open_revision(root, rev)
        label = revision.rev if revision.rev not in sides else revision.label
        sides[label] = revision_files(revision, paths, objects)
    if workspace:
        sides[WORKSPACE] = workspace_files(root, paths)
    doc = plots.show(found.plots, sides)
    return plots.render_html(doc, title), doc


# ---- data diff ------------------------------------------------------------------------------


def data_diff(pipeline: Pipeline, rev: str) -> tuple[Revision, dict[str, Any]]:
    """``diff REV``: outputs and tracked paths, REV's locks and ``.pvt`` files against the
    workspace (hashed as ``status`` hashes it), per file inside directories whose two
    manifests can be had (the workspace's from hashing it, the revision's from the cache)."""
    from pivotbuild import datadiff, tracked

    revision = open_revision(pipeline.root, rev)
    old = datadiff.revision_records(revision)
    cached = {out.path: out.cache for stage in pipeline.project.stages.values()
              for out in stage.outs}
    paths = list(cached)
    paths += [r.path for r in tracked.project_records(pipeline.project) if r.path not in cached]
    new: dict[str, Entry] = {}
    manifests: dict[str, bytes] = {}
    for path, digest in zip(paths, pipeline.hasher.hash_paths(paths)):
        if digest.hash is None:
            if digest.missing:
                continue  # not in the workspace: deleted (or never produced)
            raise OperationError(digest.problem(str(pipeline.root)))
        new[path] = Entry(path, digest.hash, digest.size, digest.nfiles, cached.get(path, True))
        if digest.manifest is not None:
            manifests[digest.hash] = digest.manifest
    objects = ObjectReader(pipeline.cache.objects.object_file)

    def manifest(digest: str) -> bytes | None:
        if digest in manifests:
            return manifests[digest]
        try:
            return objects.read(digest, digest)
        except OperationError:
            return None

    return revision, datadiff.diff(old, new, manifest)


def remote_fetch(project: Project, cache: Any, remote_name: str | None) -> Fetch:
    """A Fetch for ``--pull``: one transfer from the remote, every object rehashed. The
    remote is opened now: a wrong name is an error even when nothing needs fetching."""
    from pivotbuild.remote import open_remote

    remote = open_remote(project, remote_name)

    def fetch(wanted: Sequence[tuple[str, str]]) -> None:
        from pivotbuild.remote.fetcher import Fetcher
        from pivotbuild.remote.refs import OutputRef, TransferReport
        from pivotbuild.remote.transfer import default_jobs
        from pivotbuild.report import Progress

        report = TransferReport(remote.name, "fetch")
        remote.check()
        os.makedirs(cache.cache_dir, exist_ok=True)
        with Progress(f"fetch ← {remote.name}") as bar:
            Fetcher(cache, remote, default_jobs(), report, bar).objects(
                OutputRef("", path, digest) for path, digest in wanted)
        if report.failed:
            what, why = report.failed[0]
            raise OperationError(f"{what}: could not be fetched from remote '{remote.name}': "
                                 f"{why}")

    return fetch
