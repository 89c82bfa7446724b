"""dvc.yaml stages (with dvc.lock, params and vars) → pivot.toml text and per-stage lock checks.

How DVC maps onto pivot.toml (SPEC sections 1, 9, 10, 11):
- Stages keep cmd (a string or a list), deps, outs (``cache: false`` and ``persist: true``
  kept), wdir, desc, frozen and always_changed; a stage's ``metrics`` and ``plots`` are outs
  flagged ``metric = true`` / ``plot = true`` (or ``plot = { x, y = [...] }``).
- ``${...}`` follows interp.py. ``vars`` (inline, and from files: copied) become ``[vars]``.
- Instance names carry over where pivot.toml can express the stage: a list ``foreach`` of
  scalars and a ``matrix`` of scalars keep their form, and so DVC's names (``featurize@en``,
  ``evaluate@small-val``); a dict ``foreach`` whose stage uses only ``${key}`` becomes a
  foreach over its keys (``train@small`` stays ``train@small``). pivotbuild's foreach and
  matrix items are scalars (they make the instance names), so a stage that reads values of a
  dict or a list of tables (``${item.units}``) is unrolled into one stage per instance named
  ``BASE-KEY`` (``train@small`` → ``train-small``: stage names cannot hold ``@``), each table
  preceded by a ``# dvc.yaml: train@small`` comment, and a note lists the new names.
- Params: ``[project] params_file = "params.yaml"``; a key of another file is written
  ``FILE:key``, FILE project-relative; a whole-file entry lists the file's top-level keys, as
  DVC's lock does. DVC reads a stage's params files relative to its wdir; so does this.
- The top-level ``metrics:`` / ``plots:`` sections flag the outs they name; a file inside a
  directory out is listed on it (``metric = ["summary/metrics.json"]``, in the out's own
  wdir-relative spelling). A file no stage outputs is reported as not converted.
- ``artifacts``, ``datasets``, per-out ``remote`` / ``push``, external deps and outs, unknown
  keys, and ``dvc.yaml`` files below the root are reported as not converted.
"""

from __future__ import annotations

import itertools
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pivotbuild import tomlwrite as tw
from pivotbuild.dvc.files import NAME_RE, DvcConfig, load, locked_path, norm, scan_side_files
from pivotbuild.dvc.files import scrub_url as _scrub
from pivotbuild.dvc.hashes import LockedPath
from pivotbuild.dvc.interp import Interpolator, NeedsUnroll, Scope, lookup, to_str
from pivotbuild.dvc.model import Conversion, StageCheck
from pivotbuild.errors import ConfigError

DVC_YAML = "dvc.yaml"
DVC_LOCK = "dvc.lock"
PARAMS_YAML = "params.yaml"

_STAGE_KEYS = {"cmd", "wdir", "deps", "outs", "metrics", "plots", "params", "frozen",
               "always_changed", "desc", "meta", "vars"}
_OUT_KEYS = {"cache", "persist", "x", "y"}
_NOTE_KEYS = {"desc", "type", "labels", "meta", "template", "title", "x_label", "y_label",
              "header"}
_OUT_SECTIONS = ("outs", "metrics", "plots")


@dataclass
class _Instance:
    """One DVC stage (a foreach / matrix instance, or a plain stage), resolved as DVC would."""

    dvc_name: str
    pivot_name: str
    wdir: str
    cmd: Any
    deps: list[str] = field(default_factory=list)  # relative to wdir
    outs: list[str] = field(default_factory=list)  # outs, metrics, plots in that order
    params: list[tuple[str, str]] = field(default_factory=list)  # (project-relative file, key)
    flags: dict[str, bool] = field(default_factory=dict)
    check: StageCheck | None = None


@dataclass
class _Group:
    """One [stages.NAME] table of pivot.toml and the DVC instances it stands for."""

    name: str
    mode: str  # "plain" | "foreach" | "keys" (a dict foreach over its keys) | "matrix"
    items: list[Any]  # foreach values
    matrix: dict[str, list[Any]]
    instances: list[_Instance] = field(default_factory=list)
    table: dict[str, Any] = field(default_factory=dict)
    out_index: list[int] = field(default_factory=list)  # instance out n → table["outs"] index


def _name_key(key: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(key))


def _yaml(value: Any) -> str:
    return tw.value(value) if tw.representable(value) else str(value)


def _bad_suffix(suffix: str) -> bool:
    """Whether pivotbuild would refuse ``BASE@suffix`` as a generated instance name."""
    return ("/" in suffix or suffix.startswith(".") or
            any(c.isspace() or not c.isprintable() for c in suffix))


class _Converter:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.result = Conversion()
        self.config = DvcConfig(root, self.result)
        self.pivot_vars: dict[str, Any] = {}
        self.interp = Interpolator(self.config.parsing, self.pivot_vars)
        self.lock: dict[str, Any] = {}
        self.data: dict[str, Any] = {}  # params files read so far

    def file_data(self, rel: str) -> Any:
        if rel not in self.data:
            self.data[rel] = load(self.root, rel) if (self.root / rel).is_file() else None
        return self.data[rel]

    def run(self) -> Conversion:
        dvc_yaml = load(self.root, DVC_YAML) if (self.root / DVC_YAML).is_file() else {}
        if not isinstance(dvc_yaml, dict):
            raise ConfigError(DVC_YAML, "", "expected a mapping at the top level")
        lock = load(self.root, DVC_LOCK) if (self.root / DVC_LOCK).is_file() else {}
        self.lock = (lock.get("stages") if isinstance(lock, dict) else None) or {}
        if lock and not (isinstance(lock, dict) and str(lock.get("schema")) == "2.0"):
            self.result.note("dvc.lock is not in the format DVC 2 and 3 write (schema 2.0); "
                             "no stage can be proven up to date from it")
        params = self.file_data(PARAMS_YAML)
        scope = Scope({}, {})
        if isinstance(params, dict):
            scope = scope.child(params, "params")
        scope = self.load_vars(dvc_yaml.get("vars") or [], scope, ".", "vars")
        groups: list[_Group] = []
        for base, definition in (dvc_yaml.get("stages") or {}).items():
            groups.extend(self.stage_group(str(base), definition, scope))
        self.top_level(dvc_yaml, scope, groups)
        outs = {p for g in groups for i in g.instances for p in (norm(i.wdir, o) for o in i.outs)}
        scan_side_files(self.root, self.result, {p for p in outs if p})
        if self.interp.lossy:
            self.result.note("written out as plain text, so later edits to the file it came "
                             "from no longer reach the stage: " +
                             ", ".join(sorted(self.interp.lossy)))
        uses_params = params is not None or any(
            f == PARAMS_YAML for g in groups for i in g.instances for f, _ in i.params)
        self.result.toml = self.render(groups, uses_params)
        return self.result

    def load_vars(self, items: Any, scope: Scope, wdir: str, where: str) -> Scope:
        stage_level = where != "vars"
        for i, item in enumerate(items if isinstance(items, list) else [items]):
            if isinstance(item, dict):
                scope = scope.child(item, "stage" if stage_level else "vars")
                if not stage_level:
                    self.pivot_vars.update(item)
                continue
            path, _, keys = str(item).partition(":")
            rel = norm(wdir, path)
            if rel is None or rel.endswith(".py") or not (self.root / rel).is_file():
                reason = ("Python params files are not read" if path.endswith(".py") else
                          "no such file inside the project")
                raise ConfigError(DVC_YAML, f"{where}[{i}]", f"{item!r}: {reason}")
            data = self.file_data(rel)
            if not isinstance(data, dict):
                raise ConfigError(rel, "", "expected a mapping at the top level")
            if keys:
                data = {k: data[k] for k in keys.split(",") if k in data}
            if rel == PARAMS_YAML and not stage_level:
                continue  # already in scope as the default params file
            scope = scope.child(data, "stagefile:" if stage_level else f"file:{rel}")
            if not stage_level:
                self.pivot_vars.update(data)
                self.result.note(f"vars from {rel} were copied into [vars] of pivot.toml; "
                                 f"later edits to {rel} do not reach it")
        return scope

    # -- one stage definition -----------------------------------------------------------------
    def iterable(self, value: Any, scope: Scope, where: str) -> Any:
        resolved = self.interp.resolve(value, scope, where)
        head = value.strip("${} ").replace("[", ".").split(".")[0] if isinstance(
            value, str) else ""
        if scope.source.get(head, "").startswith(("params", "file:", "stagefile:")):
            self.interp.lossy.add(value)
        return resolved

    def stage_group(self, base: str, d: Any, scope: Scope) -> list[_Group]:
        where = f"stages.{base}"
        if not isinstance(d, dict):
            raise ConfigError(DVC_YAML, where, "expected a mapping")
        name = base
        if not NAME_RE.fullmatch(base):
            name = _name_key(base).lstrip(".-") or "stage"
            self.result.note(f"stage {base!r} is named {name!r} (pivotbuild's name rule)")
        insts: list[tuple[str, dict[str, Any]]]
        matrix: dict[str, list[Any]] = {}
        if "foreach" in d:
            if "do" not in d:
                raise ConfigError(DVC_YAML, where, "'foreach' without 'do'")
            items = self.iterable(d["foreach"], scope, f"{where}.foreach")
            template = d["do"]
            if isinstance(items, dict):
                insts = [(to_str(k), {"item": v, "key": to_str(k)}) for k, v in items.items()]
                mode = "keys"
            elif isinstance(items, list) and items:
                if any(isinstance(v, (dict, list)) for v in items):
                    insts = [(str(i), {"item": v, "key": str(i)}) for i, v in enumerate(items)]
                    mode = "unroll"
                else:
                    insts = [(to_str(v), {"item": v}) for v in items]
                    mode = "foreach"
            else:
                raise ConfigError(DVC_YAML, f"{where}.foreach",
                                  "expected a non-empty list or mapping")
        elif "matrix" in d:
            template = {k: v for k, v in d.items() if k != "matrix"}
            raw = d["matrix"] if isinstance(d["matrix"], dict) else {}
            matrix = {str(k): self.iterable(v, scope, f"{where}.matrix.{k}")
                      for k, v in raw.items()}
            if not matrix or not all(isinstance(v, list) and v for v in matrix.values()):
                raise ConfigError(DVC_YAML, f"{where}.matrix", "expected non-empty lists")
            insts = []
            for combo in itertools.product(*(list(enumerate(v)) for v in matrix.values())):
                key = "-".join(f"{a}{i}" if isinstance(v, (dict, list)) else to_str(v)
                               for a, (i, v) in zip(matrix, combo, strict=True))
                item = {a: v for a, (_, v) in zip(matrix, combo, strict=True)}
                insts.append((key, {"item": item, "key": key}))
            scalar = not any(isinstance(v, (dict, list)) for vs in matrix.values() for v in vs)
            plain_axes = all(re.fullmatch(r"[A-Za-z0-9_-]+", a) for a in matrix)
            mode = "matrix" if scalar and plain_axes else "unroll"
        else:
            return [self.group(name, base, d, [(None, {})], "plain", scope)]
        unique = dict(insts)  # DVC keys instances by name: a repeated name is one stage
        if len(unique) != len(insts):
            mode = "unroll" if mode == "matrix" else mode
            insts = list(unique.items())
        if mode != "unroll" and not any(_bad_suffix(k) for k, _ in insts):
            try:
                return [self.group(name, base, template, insts, mode, scope, matrix)]
            except NeedsUnroll:
                pass
        names = [f"{name}-{_name_key(k)}" for k, _ in insts]
        self.result.note(f"stages.{base}: pivotbuild's foreach/matrix cannot express it, so "
                         "each instance is its own stage: " + ", ".join(names))
        return [self.group(n, base, template, [(k, extra)], "plain", scope)
                for n, (k, extra) in zip(names, insts, strict=True)]

    def group(self, name: str, base: str, d: Any,
              insts: Sequence[tuple[str | None, dict[str, Any]]], mode: str, scope: Scope,
              matrix: dict[str, list[Any]] | None = None) -> _Group:
        where = f"stages.{base}"
        if not isinstance(d, dict) or "cmd" not in d:
            raise ConfigError(DVC_YAML, where, "a stage needs a 'cmd'")
        for k in d:
            if k == "meta":
                self.result.note(f"{where}.meta is not carried over (pivotbuild has no meta)")
            elif k not in _STAGE_KEYS:
                self.result.skip(f"{DVC_YAML}: {where}.{k}", "pivotbuild has no such field")
        g = _Group(name=name, mode=mode, items=[k if mode == "keys" else e.get("item")
                                                for k, e in insts], matrix=matrix or {})
        scopes = []
        for key, extra in insts:
            inst_scope = scope.child(extra, "item", mode, tuple(g.matrix))
            wdir = posixpath.normpath(str(self.interp.resolve(d.get("wdir") or ".", inst_scope,
                                                              f"{where}.wdir")))
            if wdir == ".." or wdir.startswith("../") or posixpath.isabs(wdir):
                raise ConfigError(DVC_YAML, f"{where}.wdir", f"leaves the project: {wdir!r}")
            inst_scope = self.load_vars(d.get("vars") or [], inst_scope, wdir, f"{where}.vars")
            dvc_name = base if key is None else f"{base}@{key}"
            pivot_name = name if mode == "plain" else f"{name}@{key}"
            g.instances.append(self.instance(d, dvc_name, pivot_name, wdir, inst_scope, where))
            scopes.append(inst_scope)
        self.template(g, d, scopes[0], where)
        self.result.checks.extend(inst.check for inst in g.instances if inst.check)
        return g

    def instance(self, d: dict[str, Any], dvc_name: str, pivot_name: str, wdir: str, scope: Scope,
                 where: str) -> _Instance:
        cmd = d["cmd"]
        parts = [self.interp.resolve(c, scope, f"{where}.cmd", in_cmd=True)
                 for c in ([cmd] if isinstance(cmd, str) else cmd)]
        inst = _Instance(dvc_name=dvc_name, pivot_name=pivot_name, wdir=wdir,
                         cmd=parts[0] if isinstance(cmd, str) else parts)
        for i, dep in enumerate(d.get("deps") or []):
            inst.deps.append(str(self.interp.resolve(dep, scope, f"{where}.deps[{i}]")))
        for section in _OUT_SECTIONS:
            for i, entry in enumerate(d.get(section) or []):
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                spot = f"{where}.{section}[{i}]"
                inst.outs.append(str(self.interp.resolve(path, scope, spot)))
        for k in ("frozen", "always_changed"):
            inst.flags[k] = bool(self.interp.resolve(d.get(k, False), scope, f"{where}.{k}"))
        inst.params = self.params(d.get("params") or [], scope, wdir, where)
        inst.check = self.check(inst)
        return inst

    def params(self, entries: list[Any], scope: Scope, wdir: str, where: str
               ) -> list[tuple[str, str]]:
        """(project-relative file, key) pairs a stage's params name."""
        found: list[tuple[str, str]] = []
        default = norm(wdir, PARAMS_YAML) or PARAMS_YAML
        for i, entry in enumerate(entries):
            spot = f"{where}.params[{i}]"
            if not isinstance(entry, dict):
                found.append((default, str(self.interp.resolve(entry, scope, spot))))
                continue
            for file, keys in entry.items():
                rel = norm(wdir, str(self.interp.resolve(file, scope, spot)))
                if rel is None or rel.endswith(".py"):
                    self.result.skip(f"{DVC_YAML}: {spot}", f"params file {file!r} cannot be "
                                     "read (outside the project, or Python)")
                    continue
                if keys is None:
                    data = self.file_data(rel)
                    keys = list(data) if isinstance(data, dict) else []
                    self.result.note(f"{spot}: every key of {rel} is listed; keys added to it "
                                     "later are not tracked until added to pivot.toml")
                found.extend((rel, str(self.interp.resolve(k, scope, spot))) for k in keys)
        return found

    # -- the [stages.NAME] table --------------------------------------------------------------
    def template(self, g: _Group, d: dict[str, Any], scope: Scope, where: str) -> None:
        tr = self.interp.translate
        first = g.instances[0]
        cmd = d["cmd"]
        cmds = [tr(c, scope, f"{where}.cmd", in_cmd=True)
                for c in ([cmd] if isinstance(cmd, str) else cmd)]
        g.table["cmd"] = cmds[0] if isinstance(cmd, str) else cmds
        if d.get("desc"):
            g.table["desc"] = tr(str(d["desc"]), scope, f"{where}.desc")
        if d.get("wdir") not in (None, ".", ""):
            g.table["wdir"] = tr(str(d["wdir"]), scope, f"{where}.wdir")
        deps = []
        for i, dep in enumerate(d.get("deps") or []):
            if norm(first.wdir, first.deps[i]):
                deps.append(tr(str(dep), scope, f"{where}.deps[{i}]"))
            else:
                self.result.skip(f"{DVC_YAML}: {where}.deps[{i}]", "a dependency outside the "
                                 f"project ({_scrub(first.deps[i])}) is not converted")
        g.table["deps"] = deps
        g.table["outs"] = self.outs(g, d, scope, where)
        keys = [[k if f == PARAMS_YAML else f"{f}:{k}" for f, k in inst.params]
                for inst in g.instances]
        if any(k != keys[0] for k in keys):
            raise NeedsUnroll
        g.table["params"] = keys[0]
        for flag in ("frozen", "always_changed"):
            values = {inst.flags[flag] for inst in g.instances}
            if len(values) > 1:
                raise NeedsUnroll
            if values == {True}:
                g.table[flag] = True

    def outs(self, g: _Group, d: dict[str, Any], scope: Scope, where: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = []
        outs = iter(g.instances[0].outs)
        for section in _OUT_SECTIONS:
            for i, entry in enumerate(d.get(section) or []):
                spot = f"{where}.{section}[{i}]"
                resolved = next(outs)
                path, props = next(iter(entry.items())) if isinstance(entry, dict) else (
                    entry, None)
                props = props if isinstance(props, dict) else {}
                if norm(g.instances[0].wdir, resolved) is None:
                    self.result.skip(f"{DVC_YAML}: {spot}", "an output outside the project "
                                     f"({_scrub(resolved)}) is not converted")
                    g.out_index.append(-1)
                    continue
                out: dict[str, Any] = {"path": self.interp.translate(str(path), scope, spot)}
                if props.get("cache") is False:
                    out["cache"] = False
                if props.get("persist"):
                    out["persist"] = True
                if section == "metrics":
                    out["metric"] = True
                elif section == "plots":
                    axes = {k: self.interp.resolve(props[k], scope, spot) for k in ("x", "y")
                            if k in props}
                    if "y" in axes and not isinstance(axes["y"], list):
                        axes["y"] = [axes["y"]]
                    out["plot"] = axes or True
                for k, v in props.items():
                    if k in ("remote", "push", "checkpoint"):
                        self.result.skip(f"{DVC_YAML}: {spot}.{k}", f"{k}: {_yaml(v)} has "
                                         "no pivotbuild equivalent")
                    elif k in _NOTE_KEYS:
                        self.result.note(f"{spot}.{k} is not carried over (pivotbuild outs "
                                         "have no such field)")
                    elif k not in _OUT_KEYS:
                        self.result.skip(f"{DVC_YAML}: {spot}.{k}", "pivotbuild has no such "
                                         "out field")
                result.append(out)
                g.out_index.append(len(result) - 1)
        return result

    # -- dvc.lock -----------------------------------------------------------------------------
    def check(self, inst: _Instance) -> StageCheck:
        """The stage's check against dvc.lock. Its problems do not repeat the stage's name (the
        CLI prints 'stale: NAME: ...'), except the DVC name of one renamed (``m@1`` → ``m-1``)."""
        lock = self.lock.get(inst.dvc_name)
        problems: list[str] = []
        found: dict[str, list[LockedPath]] = {"deps": [], "outs": []}
        params: dict[str, Any] = {}
        if not isinstance(lock, dict):
            problems.append(f"{_who(inst)}not in dvc.lock (DVC never ran it)")
        else:
            def as_list(c: Any) -> list[Any]:
                return [c] if isinstance(c, str) else list(c or [])

            if as_list(lock.get("cmd")) != as_list(inst.cmd):
                problems.append(f"{_who(inst)}cmd differs from dvc.lock")
            for section, paths in (("deps", inst.deps), ("outs", inst.outs)):
                locked: dict[str, LockedPath] = {}
                for e in lock.get(section) or []:
                    entry = locked_path(inst.wdir, e)
                    if entry is None:
                        label = e.get("path") if isinstance(e, dict) else e
                        problems.append(f"{_who(inst)}dvc.lock {section} entry {label!r} "
                                        "has no md5 inside the project to check")
                    else:
                        locked[entry.path] = entry
                wanted = {p for p in (norm(inst.wdir, x) for x in paths) if p}
                if set(locked) != wanted:
                    problems.append(f"{_who(inst)}{section} differ from dvc.lock")
                found[section] = [locked[p] for p in sorted(locked)]
            params = self.locked_params(inst, lock.get("params") or {}, problems)
        return StageCheck(
            stage=inst.pivot_name, dvc_stage=inst.dvc_name, deps=tuple(found["deps"]),
            outs=tuple(found["outs"]), params=params, problems=tuple(problems),
            frozen=inst.flags["frozen"], always_changed=inst.flags["always_changed"])

    def locked_params(self, inst: _Instance, lock: Any, problems: list[str]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        recorded = {(norm(inst.wdir, str(f)) or str(f), str(k)): v
                    for f, kv in (lock.items() if isinstance(lock, dict) else [])
                    for k, v in (kv.items() if isinstance(kv, dict) else [])}
        if set(recorded) != set(inst.params):
            problems.append(f"{_who(inst)}params differ from dvc.lock")
        for (file, k), v in sorted(recorded.items()):
            values[k if file == PARAMS_YAML else f"{file}:{k}"] = v
            try:
                current = lookup(self.file_data(file), k)
            except KeyError:
                problems.append(f"{_who(inst)}param {k!r} is no longer in {file}")
                continue
            if current != v:
                problems.append(f"{_who(inst)}param {k!r} in {file} differs from dvc.lock")
        return values

    # -- top-level sections -------------------------------------------------------------------
    def top_level(self, dvc_yaml: dict[str, Any], scope: Scope, groups: list[_Group]) -> None:
        for k, section in dvc_yaml.items():
            if k in ("artifacts", "datasets"):
                for entry in section or []:
                    label = entry if k == "artifacts" else (entry or {}).get("name", "?")
                    self.result.skip(f"{DVC_YAML}: {k}.{label}", f"pivotbuild has no {k} (they "
                                     "stay DVC / GTO metadata)")
            elif k == "params":
                self.result.note("dvc.yaml: the top-level params section is not needed: "
                                 "pivotbuild compares the params its stages use")
            elif k not in ("stages", "vars", "metrics", "plots"):
                self.result.skip(f"{DVC_YAML}: {k}", "pivotbuild has no such section")
        for i, path in enumerate(dvc_yaml.get("metrics") or []):
            file = str(self.interp.resolve(path, scope, f"metrics[{i}]"))
            self.flag(groups, file, "metric", True, f"metrics[{i}]")
        for i, entry in enumerate(dvc_yaml.get("plots") or []):
            spot = f"plots[{i}]"
            if not isinstance(entry, dict):
                self.flag(groups, str(self.interp.resolve(entry, scope, spot)), "plot", True,
                          spot)
                continue
            for plot_id, props in entry.items():
                props = props if isinstance(props, dict) else {}
                x, y = props.get("x"), props.get("y")
                for file in (list(y) if isinstance(y, dict) else [plot_id]):
                    fx = x.get(file) if isinstance(x, dict) else x
                    fy = y.get(file) if isinstance(y, dict) else y
                    spec: dict[str, Any] = {k: v for k, v in (("x", fx), ("y", fy)) if v}
                    if isinstance(spec.get("y"), str):
                        spec["y"] = [spec["y"]]
                    file = str(self.interp.resolve(file, scope, spot))
                    self.flag(groups, file, "plot", spec or True, f"{spot}.{plot_id}")
                for k in props:
                    if k not in ("x", "y"):
                        self.result.note(f"dvc.yaml: {spot}.{plot_id}.{k} is not carried over")

    def flag(self, groups: list[_Group], file: str, kind: str, value: Any, spot: str) -> None:
        """Flag the out that is ``file`` or holds it; report a file no stage outputs."""
        path = norm(".", file)
        for g in groups:
            for inst in g.instances:
                for n, out in enumerate(inst.outs):
                    out_path = norm(inst.wdir, out)
                    if path is None or out_path is None or g.out_index[n] < 0:
                        continue
                    table = g.table["outs"][g.out_index[n]]
                    if g.mode != "plain" and (out_path == path or
                                              path.startswith(out_path + "/")):
                        self.result.note(f"dvc.yaml: {spot} names {file!r}, an output of "
                                         f"{inst.dvc_name}; the flag applies to every "
                                         f"instance of stages.{g.name}")
                    if out_path == path:
                        if table.get(kind) in (None, True):
                            table[kind] = value
                        return
                    if path.startswith(out_path + "/"):
                        listed = table.get(kind) if isinstance(table.get(kind), list) else []
                        inside = table["path"].rstrip("/") + path[len(out_path):]
                        table[kind] = listed if inside in listed else [*listed, inside]
                        if value is not True:
                            self.result.note(f"dvc.yaml: {spot}: x/y of a plot inside a "
                                             "directory output are not carried over")
                        return
        self.result.skip(f"{DVC_YAML}: {spot}", f"{file!r} is not an output of any stage "
                         "(pivotbuild flags outputs only)")

    # -- pivot.toml ---------------------------------------------------------------------------
    def render(self, groups: list[_Group], params_file: bool) -> str:
        lines = ["# Converted from dvc.yaml by pivotbuild import-dvc.", ""]

        def table(header: str, fields: dict[str, Any]) -> None:
            lines.append(header)
            for k, v in fields.items():
                if k == "outs":
                    v = [o["path"] if set(o) == {"path"} else o for o in v]
                if not (isinstance(v, list) and not v):
                    text = tw.array(v) if isinstance(v, list) else tw.value(v)
                    lines.append(f"{tw.key(k)} = {text}")
            lines.append("")

        remotes = self.config.usable_remotes()
        project = {**({"params_file": PARAMS_YAML} if params_file else {}),
                   **self.config.project}
        if project.get("default_remote") not in remotes:
            project.pop("default_remote", None)
        if project:
            table("[project]", project)
        for name, fields in remotes.items():
            table(f"[{tw.dotted('remotes', name)}]", fields)
        written = {k: v for k, v in self.pivot_vars.items()
                   if k not in ("item", "params") and tw.representable(v)}
        for k in self.pivot_vars.keys() - written.keys():
            self.result.note(f"vars.{k} cannot be written to pivot.toml (a null value or a "
                             "reserved name); its uses were written out as text")
        if written:
            table("[vars]", written)
        seen: set[str] = set()
        for g in groups:
            if g.name in seen:
                self.result.skip(f"{DVC_YAML}: stages.{g.name}", "its pivotbuild name is "
                                 "taken by another stage")
                continue
            seen.add(g.name)
            head: dict[str, Any] = {}
            if g.mode in ("foreach", "keys"):
                head["foreach"] = g.items
            elif g.mode == "plain" and g.instances[0].dvc_name != g.name:
                lines.append(f"# dvc.yaml: {g.instances[0].dvc_name}")
            elif g.mode == "matrix":
                head["matrix"] = g.matrix
            table(f"[{tw.dotted('stages', g.name)}]", {**head, **g.table})
        return "\n".join(lines).rstrip("\n") + "\n"


def convert(root: Path) -> Conversion:
    """Read the DVC project at ``root`` (nothing is written) and convert it.

    Raises ConfigError (exit 2) for a file DVC itself would reject; everything else that
    cannot be converted is listed in ``Conversion.not_converted``.
    """
    if not (root / DVC_YAML).is_file() and not (root / ".dvc").is_dir():
        raise ConfigError(DVC_YAML, "", f"not found in {root} (and no .dvc directory either)")
    return _Converter(root).run()


def _who(inst: _Instance) -> str:
    """What a problem of ``inst`` starts with: the DVC stage's name when pivotbuild's differs."""
    return "" if inst.dvc_name == inst.pivot_name else f"DVC stage {inst.dvc_name!r}: "
