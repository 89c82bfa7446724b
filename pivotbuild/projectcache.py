"""The project cache: pivot.toml as last checked and expanded, reused while nothing it read changed.

Checking pivot.toml (config_check.py) and expanding it (matrix, foreach, globs, templates)
takes Python time per stage: for a big file, more than a ``metrics diff`` of it, and for
any file, time an incremental build (one compile and a link) would rather not spend. The
files and directories that decide the expansion are known (``Project.sources``,
``Project.glob_dirs``), so a command whose pivot.toml, params files and globbed
directories are as they were takes the expanded ``Project`` from here without parsing or
checking anything, as a build system that generates its Ninja file once would.
``load_project`` is the one way in: cached, or loaded by ``config.load_project`` and then
kept.

File: ``.pivotbuild/project-cache`` (per machine, never committed), written atomically but
not durably (losing it only costs a validation). Its content is ``snapshot.sealed`` (the
XXH3-128 of what follows in 32 hex digits: a file damaged on disk fails it, and is not read)
of ``marshal.dumps(doc)`` of one dict, PROJECT_CACHE_VERSION 2:

- ``magic``: ``"pivotbuild-project"``; ``version``; ``pivotbuild``: the package version;
  ``python``: the interpreter's cache tag (marshal's format belongs to the interpreter);
- ``fields``: the field names of each model (config_models.py), in the order the rows
  below give their values: a model that gained or lost a field never reads an old row;
- ``root``: the project root's real path; ``env``: snapshot.cache_env(),
  ``PIVOTBUILD_CACHE_DIR`` made absolute (a relative one names a directory of the working
  directory) and ``HOME`` (the cache directory is resolved from them); ``overrides``: the
  ``--set`` pairs, sorted;
- ``configs``: ``[(relpath, hash or None)]``: the XXH3-128 of pivot.toml, params.toml,
  config.local.toml and every other file the expansion read (None: absent);
- ``glob_dirs``: ``[(relpath, mtime_ns, ctime_ns, ino)]`` of every directory a glob walked,
  and of every symlink one met (where it leads: snapshot.dir_stamps);
- ``project``: the Project's fields as rows (``_dump``), stages in definition order.

It is used only when every part of that key matches what is there now. One check of
loading depends on the workspace beyond those files: an out directory that holds a ``.git``
is refused (paths.protected_out_problem); it is repeated here (one lstat per out), and
when it fires the full load runs and reports it. A ``ConfigError`` is never cached: a
broken pivot.toml is validated, and reported, every time.

The cache is written only where ``.pivotbuild/`` already exists (a read-only command
never creates it), and not when a file the expansion read, or a directory a glob walked,
changed while it loaded (even back to the same bytes) or so shortly before that what was
read cannot be told from what is there now (snapshot.expansion_key's racy rule). Values
marshal cannot hold (a TOML date in ``[vars]`` or a params file) mean no cache: the next
command validates again.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from pivotbuild import __version__, snapshot
from pivotbuild.config_models import ExecutorSettings, Out, Project, Remote, Stage
from pivotbuild.paths import GIT_DIR, STATE_DIR

PROJECT_CACHE_VERSION = 2  # 2: glob_dirs holds the symlinks a glob met
MAGIC = "pivotbuild-project"
CACHE_FILE = "project-cache"


def _names(model: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(model))


_OUT = _names(Out)
_STAGE = tuple(name for name in _names(Stage) if name != "outs")
_REMOTE = _names(Remote)
_EXECUTOR = _names(ExecutorSettings)
_PROJECT = tuple(name for name in _names(Project)
                 if name not in ("root", "cache_dir", "remotes", "stages", "executor"))
_FIELDS = {"out": _OUT, "stage": _STAGE, "remote": _REMOTE, "executor": _EXECUTOR,
           "project": _PROJECT}


def cache_path(root: str) -> str:
    return os.path.join(root, STATE_DIR, CACHE_FILE)


def load_project(root: Path, overrides: Mapping[str, str] | None = None) -> Project:
    """The project at ``root`` (``--set`` ``overrides`` applied): from the cache when nothing
    it was expanded from changed, else loaded and validated by config.py (whose errors
    propagate) and kept for the next command."""
    real = os.path.realpath(root)
    pairs = sorted((overrides or {}).items())
    cached = _cached(real, pairs)
    if cached is not None:
        return cached
    key = snapshot.key_before(real, with_locks=False)
    from pivotbuild.config import load_project as load_and_validate

    project = load_and_validate(root, overrides)
    _save(real, pairs, project, key)
    return project


# ---- reading --------------------------------------------------------------------------------


def _read_doc(real: str) -> dict[str, Any] | None:
    doc = snapshot.read_sealed(cache_path(real))
    if not isinstance(doc, dict) or doc.get("magic") != MAGIC:
        return None
    if (doc.get("version"), doc.get("pivotbuild"), doc.get("python"), doc.get("fields")) != (
            PROJECT_CACHE_VERSION, __version__, sys.implementation.cache_tag, _FIELDS):
        return None
    return doc


def _cached(real: str, pairs: list[tuple[str, str]]) -> Project | None:
    doc = _read_doc(real)
    if doc is None or doc.get("root") != real or doc.get("overrides") != pairs:
        return None
    if doc.get("env") != snapshot.cache_env():
        return None
    try:
        configs, glob_dirs = doc["configs"], doc["glob_dirs"]
        if configs != snapshot.config_key(real, [rel for rel, _ in configs]):
            return None
        if glob_dirs != snapshot.dir_stamps(real, [entry[0] for entry in glob_dirs]):
            return None
        project = _build(doc["project"])
    except (KeyError, TypeError, ValueError):
        return None  # not a document this version wrote
    for stage in project.stages.values():
        for out in stage.outs:
            if os.path.lexists(os.path.join(real, out.path, GIT_DIR)):
                return None  # the full load refuses it, with its message
    return project


def _build(rows: dict[str, Any]) -> Project:
    stages = {}
    for row, outs in rows["stages"]:
        stage = Stage(**dict(zip(_STAGE, row, strict=True)),
                      outs=[Out(**dict(zip(_OUT, out, strict=True))) for out in outs])
        stages[stage.name] = stage
    remotes = {name: Remote(**dict(zip(_REMOTE, row, strict=True)))
               for name, row in rows["remotes"]}
    executor = ExecutorSettings(**dict(zip(_EXECUTOR, rows["executor"], strict=True)))
    return Project(root=Path(rows["root"]), cache_dir=Path(rows["cache_dir"]),
                   remotes=remotes, stages=stages, executor=executor,
                   **dict(zip(_PROJECT, rows["project"], strict=True)))


# ---- writing --------------------------------------------------------------------------------


def _row(obj: object, names: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(getattr(obj, name) for name in names)


def _dump(project: Project) -> dict[str, Any]:
    return {
        "root": str(project.root), "cache_dir": str(project.cache_dir),
        "remotes": [(name, _row(remote, _REMOTE)) for name, remote in project.remotes.items()],
        "stages": [(_row(stage, _STAGE), [_row(out, _OUT) for out in stage.outs])
                   for stage in project.stages.values()],
        "executor": _row(project.executor, _EXECUTOR),
        "project": _row(project, _PROJECT),
    }


def _save(real: str, pairs: list[tuple[str, str]], project: Project,
          key: dict[str, Any]) -> None:
    if str(project.root) != real or not os.path.isdir(os.path.join(real, STATE_DIR)):
        return
    expansion = snapshot.expansion_key(real, project, key)
    if expansion is None:
        return
    configs, glob_dirs = expansion
    doc = {
        "magic": MAGIC, "version": PROJECT_CACHE_VERSION, "pivotbuild": __version__,
        "python": sys.implementation.cache_tag, "fields": _FIELDS, "root": real,
        "env": snapshot.cache_env(), "overrides": pairs,
        "configs": configs, "glob_dirs": glob_dirs, "project": _dump(project),
    }
    snapshot.write_sealed(cache_path(real), doc)  # none for a TOML date: validate every time

