"""Stage tables → Stage instances: expansion (matrix, foreach, globs), templating, path checks.

``StageBuilder.build_all`` turns every ``[stages.X]`` table into its instances, in the order
the tables are written. On the way:

- Globs (SPEC §9): a ``foreach`` or matrix axis ``{ glob, exclude }`` (templated with
  ``[vars]``) is walked with globs.py; each match is an item with ``path``, ``name``,
  ``stem``, ``dir`` and ``key``, and its part of the instance name is ``key``
  (``cc@net.io``). A glob that matches nothing gives no instance (as a Make pattern rule
  with no sources builds nothing). Every directory a walk looked into is kept
  (``glob_dirs``) so that a no-op check can see a file appear or vanish. Patterns and the
  item's ``path`` / ``dir`` are project-relative, whatever the stage's wdir (deps and outs are
  wdir-relative: a stage with a wdir writes ``../${item.path}``). A match whose path holds a
  character the shell acts on (``$``, a backquote, quotes, ``\\``, ``;&|<>()``) is an error:
  the item's fields enter cmd unquoted (exclude such files). So is a key holding a non-ASCII
  character (``cc@ünï.é``): it is part of a stage name, and stage names are ASCII (SPEC §1;
  mapping it would make names nobody wrote, and collisions). Other generated-name rules are
  template.py's (no ``/``, whitespace or control character).
- Group references: a deps entry that is exactly ``${stages.NAME.outs}`` stands for every
  out of every instance of table NAME, in instance order (each instance's outs in declared
  order); in cmd the reference renders those paths relative to the stage's wdir (its cmd's
  cwd), each shell-quoted, space-separated. Tables are built in an order where every
  referenced table comes first; an unknown NAME, a table naming itself or a cycle of
  references is a ConfigError at the referencing key. Anywhere else (outs, wdir, depfile,
  params, inside a longer deps entry) a group reference is an error.
- Params (SPEC §10): an entry ``dotted.key`` reads the project's params file; an entry
  ``FILE:dotted.key`` reads FILE (project-relative, TOML / YAML / JSON by extension). The
  entry is kept as written (after templating): it keys ``Stage.param_values`` and the lock.
  Each other params file read joins ``sources`` and the protected files no out may touch.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pivotbuild.config_check import GlobSpec, StageSpec
from pivotbuild.config_models import CONSOLE_POOL, STAGE_NAME_RE, Out, Stage
from pivotbuild.config_read import PARAMS_EXTENSIONS, read_params, unrecordable
from pivotbuild.errors import ConfigError, key_path
from pivotbuild.globs import GlobError, Pattern, walk
from pivotbuild.lock import stage_name_size_problem
from pivotbuild.paths import (
    PROJECT_FILE,
    STATE_DIR,
    PathProblem,
    is_inside,
    normalize_path,
    protected_files,
    protected_out_problem,
)
from pivotbuild.template import DOTTED_KEY_RE, TemplateProblem, instances, lookup, render

# ${stages.NAME.outs}, with the spaces ${...} allows; NAME is a stage table's name.
GROUP_REF_RE = re.compile(r"\$\{\s*stages\.([A-Za-z0-9_][A-Za-z0-9_.-]*)\.outs\s*\}")
_KeyPart = str | int


# Characters a POSIX shell acts on inside an unquoted word: a glob match holding one would be
# expanded, split or run by the shell when ${item.path} (or name, stem, dir, key) enters cmd.
_SHELL_SPECIAL = frozenset("$`\"'\\;&|<>()")

class StageBuilder:
    """Builds every stage table of one pivot.toml; holds what all of them share."""

    def __init__(self, root: Path, variables: dict[str, Any], params: dict[str, Any],
                 params_file: str, has_params: bool, forbidden: list[str],
                 pools: Mapping[str, int]) -> None:
        self.root = root
        self.root_text = str(root)  # os.path.join's argument, made once
        self.variables = variables
        self.params = params
        self.params_file = params_file
        self.has_params = has_params
        # Project-relative directories no dep or out may lie in (pivotbuild's own state).
        self.forbidden = forbidden
        # Project files no out may be or hold: path -> what it is (protected_files()).
        self.protected = protected_files([params_file])
        self.pools = pools
        self.other_params: dict[str, dict[str, Any]] = {}  # FILE: entries' files, as read
        self.glob_dirs: set[str] = set()
        self.group_outs: dict[str, list[str]] = {}  # table -> its instances' out paths
        self.refs: dict[str, list[tuple[str, str]]] = {}  # table -> (table it names, key)

    # ---- every table ----------------------------------------------------------------------

    def build_all(self, tables: Mapping[str, StageSpec], cmd_is_str: Mapping[str, bool]
                  ) -> dict[str, Stage]:
        built: dict[str, list[Stage]] = {}
        for base in self._order(tables, cmd_is_str):
            built[base] = self.build(base, tables[base], cmd_is_str[base])
            self.group_outs[base] = [out.path for stage in built[base] for out in stage.outs]
        stages: dict[str, Stage] = {}
        for base in tables:  # definition order, whatever order they were built in
            for stage in built[base]:
                stages[stage.name] = stage
        self._check_other_params_protected(stages)
        return stages

    def _order(self, tables: Mapping[str, StageSpec], cmd_is_str: Mapping[str, bool]
               ) -> list[str]:
        """Table names, each after every table its group references name."""
        refs: dict[str, list[tuple[str, str]]] = {}  # base -> [(named table, key path)]
        for base, raw in tables.items():
            found = refs.setdefault(base, [])
            self.refs[base] = found
            texts: list[tuple[str, tuple[_KeyPart, ...]]] = []
            for field, values in (("cmd", raw.cmd), ("deps", raw.deps)):
                for i, text in enumerate(values):
                    if "stages" in text:  # most stages name none: skip the regex
                        plain = field == "cmd" and cmd_is_str[base]  # a string cmd: `cmd`
                        texts.append((text, (field,) if plain else (field, i)))
            if raw.desc and "stages" in raw.desc:
                texts.append((raw.desc, ("desc",)))
            for text, key in texts:
                for match in GROUP_REF_RE.finditer(text):
                    name, where = match.group(1), key_path("stages", base, *key)
                    if name == base:
                        raise ConfigError(PROJECT_FILE, where, f"'{match.group(0)}' refers to "
                                          "this stage's own outs")
                    if name not in tables:
                        raise ConfigError(PROJECT_FILE, where, f"'{match.group(0)}': no stage "
                                          f"named {name!r}")
                    found.append((name, where))
        order: list[str] = []
        done: set[str] = set()
        for top in tables:
            if top in done:
                continue
            # An explicit stack (a chain of references may be longer than Python's recursion
            # limit): each entry is a table on the current path and its next reference.
            stack: list[tuple[str, int]] = [(top, 0)]
            on_path = {top}
            while stack:
                base, i = stack[-1]
                if i == len(refs[base]):
                    stack.pop()
                    on_path.discard(base)
                    done.add(base)
                    order.append(base)
                    continue
                stack[-1] = (base, i + 1)
                name, where = refs[base][i]
                if name in on_path:
                    path = [b for b, _ in stack]
                    cycle = [*path[path.index(name):], name]
                    raise ConfigError(PROJECT_FILE, where, "group references form a cycle: "
                                      + " -> ".join(cycle))
                if name not in done:
                    stack.append((name, 0))
                    on_path.add(name)
        return order

    def _check_other_params_protected(self, stages: Mapping[str, Stage]) -> None:
        extra = {f: what for f, what in protected_files(list(self.other_params)).items()
                 if f not in self.protected}
        if not extra:
            return
        for stage in stages.values():
            for i, out in enumerate(stage.outs):
                problem = protected_out_problem(out.path, extra)
                if problem:
                    raise ConfigError(PROJECT_FILE, key_path("stages", stage.base, "outs", i),
                                      f"{problem}: {out.path!r}")

    # ---- one table ------------------------------------------------------------------------

    def build(self, base: str, raw: StageSpec, cmd_is_str: bool) -> list[Stage]:
        if not STAGE_NAME_RE.fullmatch(base):
            raise ConfigError(PROJECT_FILE, key_path("stages", base),
                              f"invalid stage name {base!r} (allowed: letters, digits, '_', "
                              "'.', '-', not starting with '.' or '-')")
        too_long = stage_name_size_problem(base)
        if too_long:
            raise ConfigError(PROJECT_FILE, key_path("stages", base), too_long)
        foreach = (self._glob(base, raw.foreach, ("foreach",))
                   if isinstance(raw.foreach, GlobSpec) else raw.foreach)
        matrix = None if raw.matrix is None else {
            axis: self._glob(base, values, ("matrix", axis)) if isinstance(values, GlobSpec)
            else values for axis, values in raw.matrix.items()}
        globbed_empty = ((isinstance(raw.foreach, GlobSpec) and not foreach)
                         or any(isinstance(v, GlobSpec) and not matrix[a]  # type: ignore[index]
                                for a, v in (raw.matrix or {}).items()))
        if globbed_empty and not (raw.foreach is not None and raw.matrix is not None):
            return []  # a glob matched nothing: no instance
        stages = []
        for name, item in instances(base, matrix, foreach):
            context: dict[str, Any] = dict(self.variables)
            context["params"] = self.params
            if item is not None:
                context["item"] = item
            stages.append(self._instance(base, name, raw, context, cmd_is_str))
        return stages

    def _glob(self, base: str, spec: GlobSpec, where: tuple[str, ...]) -> list[dict[str, str]]:
        """The items of a glob foreach / matrix axis: one per matching file, sorted."""
        def tmpl(text: str, *key: _KeyPart) -> str:
            try:
                return render(text, self.variables)
            except TemplateProblem as exc:
                raise ConfigError(PROJECT_FILE, key_path("stages", base, *where, *key),
                                  str(exc)) from None

        pattern = tmpl(spec.glob, "glob")
        excludes = [tmpl(text, "exclude", i) for i, text in enumerate(spec.exclude)]
        try:
            Pattern(pattern)
        except GlobError as exc:
            raise ConfigError(PROJECT_FILE, key_path("stages", base, *where, "glob"),
                              str(exc)) from None
        for i, text in enumerate(excludes):
            try:
                Pattern(text)
            except GlobError as exc:
                raise ConfigError(PROJECT_FILE, key_path("stages", base, *where, "exclude", i),
                                  str(exc)) from None
        try:
            result = walk(self.root, pattern, excludes)
        except GlobError as exc:  # two matches with one key
            raise ConfigError(PROJECT_FILE, key_path("stages", base, *where, "glob"),
                              str(exc)) from None
        except OSError as exc:
            raise ConfigError(PROJECT_FILE, key_path("stages", base, *where, "glob"),
                              f"cannot list {exc.filename or 'a directory'}: "
                              f"{exc.strerror or exc}") from None
        self.glob_dirs.update(stamp.path for stamp in result.stamps)
        for m in result.matches:
            special = next((ch for ch in m.path if ch in _SHELL_SPECIAL), None)
            if special is not None:
                raise ConfigError(PROJECT_FILE, key_path("stages", base, *where, "glob"),
                                  f"glob {pattern!r} matches {m.path!r}, whose name holds the "
                                  f"shell character {special!r}: ${{item...}} enters cmd "
                                  "unquoted, so the shell would act on it (rename the file, "
                                  "or exclude it)")
            odd = next((ch for ch in m.key if not ch.isascii()), None)
            if odd is not None:
                raise ConfigError(PROJECT_FILE, key_path("stages", base, *where, "glob"),
                                  f"glob {pattern!r} matches {m.path!r}, whose key {m.key!r} "
                                  f"holds the non-ASCII character {odd!r}: stage names are "
                                  "ASCII (rename the file, or exclude it)")
        return [{"path": m.path, "name": m.name, "stem": m.stem, "dir": m.dir, "key": m.key}
                for m in result.matches]

    def _instance(self, base: str, name: str, raw: StageSpec, context: dict[str, Any],
                  cmd_is_str: bool) -> Stage:
        suffix = f" (in {name})" if name != base else ""

        def fail(key: str, problem: str) -> ConfigError:
            return ConfigError(PROJECT_FILE, key, problem + suffix)

        def tmpl(text: str, *key: _KeyPart, groups: bool = False) -> str:
            if not groups and "stages" in text and GROUP_REF_RE.search(text):
                raise ConfigError(PROJECT_FILE, key_path("stages", base, *key),
                                  "a ${stages.NAME.outs} reference can only be a whole deps "
                                  "entry or part of cmd")
            try:
                return render(text, context)
            except TemplateProblem as exc:
                # Template problems do not depend on the item, so no instance suffix.
                raise ConfigError(PROJECT_FILE, key_path("stages", base, *key),
                                  str(exc)) from None

        wdir_text = tmpl(raw.wdir, "wdir")
        try:
            wdir = normalize_path(wdir_text)
        except PathProblem as exc:
            raise fail(key_path("stages", base, "wdir"), str(exc)) from None
        if self.refs.get(base):  # it names other tables (in cmd, deps or desc)
            context = {**context, "stages": self._group_context(
                wdir, {name for name, _ in self.refs[base]})}

        cmd: list[str] = []
        if not raw.cmd:
            raise fail(key_path("stages", base, "cmd"), "must not be empty")
        for i, part in enumerate(raw.cmd):
            # A string cmd is reported as `cmd`, an entry of a list as `cmd[i]`.
            key: tuple[_KeyPart, ...] = ("cmd",) if cmd_is_str else ("cmd", i)
            text = tmpl(part, *key, groups=True)
            if not text.strip():
                raise fail(key_path("stages", base, *key), "must not be empty")
            cmd.append(text)

        def path(text: str, *key: _KeyPart) -> str:
            rendered = tmpl(text, *key)
            try:
                result = normalize_path(rendered, wdir)
            except PathProblem as exc:
                raise fail(key_path("stages", base, *key), str(exc)) from None
            if result == ".":
                raise fail(key_path("stages", base, *key),
                           f"path is the project root itself: {rendered!r}")
            for bad in self.forbidden:
                if is_inside(result, bad):
                    raise fail(key_path("stages", base, *key),
                               f"path lies inside {bad}/, which pivotbuild manages: "
                               f"{rendered!r}")
            return result

        deps: list[str] = []
        first_seen: dict[str, int] = {}
        for i, dep in enumerate(raw.deps):
            group = GROUP_REF_RE.fullmatch(dep.strip()) if "stages" in dep else None
            for norm in (self.group_outs[group.group(1)] if group else [path(dep, "deps", i)]):
                if norm in first_seen:
                    raise fail(key_path("stages", base, "deps", i),
                               f"{norm!r} is listed twice (also deps[{first_seen[norm]}])")
                first_seen[norm] = i
                deps.append(norm)

        outs = self._outs(base, raw, wdir, fail, tmpl, path)

        depfile = None
        if raw.depfile is not None:
            depfile = path(raw.depfile, "depfile")
            problem = protected_out_problem(depfile, self.protected, None)
            if problem:
                raise fail(key_path("stages", base, "depfile"), f"{problem}: {raw.depfile!r}")
        if raw.pool is not None and raw.pool not in self.pools:
            raise fail(key_path("stages", base, "pool"),
                       f"no pool named {raw.pool!r} (define it in [pools], or use "
                       f"{CONSOLE_POOL!r})")
        for i, kind in enumerate(raw.discover):
            if kind in raw.discover[:i]:
                raise fail(key_path("stages", base, "discover", i), f"{kind!r} is listed twice")

        params: list[str] = []
        values: dict[str, Any] = {}
        for i, key_text in enumerate(raw.params):
            entry = tmpl(key_text, "params", i)
            where = key_path("stages", base, "params", i)
            if entry in values:
                raise fail(where, f"{entry!r} is listed twice")
            values[entry] = self._param(entry, where, fail)
            params.append(entry)

        desc = None if raw.desc is None else tmpl(raw.desc, "desc", groups=True)
        return Stage(
            name=name, cmd=cmd, deps=deps, outs=outs, params=params, param_values=values,
            wdir=wdir, desc=desc, always_changed=raw.always_changed, frozen=raw.frozen,
            base=base, depfile=depfile, discover=list(raw.discover), pool=raw.pool,
        )

    def _group_context(self, wdir: str, names: set[str]) -> dict[str, Any]:
        """``${stages.NAME.outs}`` for cmd: each built table's outs, relative to ``wdir``,
        shell-quoted, space-separated; a dotted NAME nests as its parts do."""
        tree: dict[str, Any] = {}
        for base in sorted(names):
            paths = self.group_outs[base]
            node = tree
            for part in base.split("."):
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    break
                node = child
            else:
                node["outs"] = " ".join(
                    shlex.quote(p if wdir == "." else posixpath.relpath(p, wdir)) for p in paths)
        return tree

    def _outs(self, base: str, raw: StageSpec, wdir: str, fail: Callable[[str, str], ConfigError],
              tmpl: Callable[..., str], path: Callable[..., str]) -> list[Out]:
        outs: list[Out] = []
        out_seen: dict[str, int] = {}
        for i, out in enumerate(raw.outs):
            norm = path(out.path, "outs", i)
            problem = protected_out_problem(norm, self.protected, self.root_text)
            if problem:
                raise fail(key_path("stages", base, "outs", i), f"{problem}: {out.path!r}")
            if norm in out_seen:
                raise fail(key_path("stages", base, "outs", i),
                           f"{norm!r} is listed twice (also outs[{out_seen[norm]}])")
            out_seen[norm] = i
            where = ("stages", base, "outs", i)
            metric = _flag_paths(out.metric, norm, wdir, fail, tmpl, (*where, "metric"))
            plot = out.plot
            if isinstance(plot, dict):
                from pivotbuild.plots import parse_plot_flag  # only projects with plot tables

                parse_plot_flag(plot, key_path(*where, "plot"))
            else:
                plot = _flag_paths(plot, norm, wdir, fail, tmpl, (*where, "plot"))
            outs.append(Out(path=norm, cache=out.cache, persist=out.persist, metric=metric,
                            plot=plot))
        return outs

    # ---- params ---------------------------------------------------------------------------

    def _param(self, entry: str, where: str, fail: Callable[[str, str], ConfigError]) -> Any:
        """The value a params entry (``key`` or ``FILE:key``) names."""
        file_text, colon, dotted = entry.rpartition(":")
        if not DOTTED_KEY_RE.fullmatch(dotted):
            raise fail(where, f"malformed params key {entry!r} (expected dotted keys like "
                       "'train.lr', or 'FILE:train.lr' for another params file)")
        if not colon:
            file, data, exists = self.params_file, self.params, self.has_params
        else:
            file = self._other_file(file_text, entry, where, fail)
            data = self._read_other(file, where, fail)
            exists = True
        try:
            value = lookup(data, dotted)
        except KeyError:
            hint = "" if exists else f" (there is no {file})"
            raise fail(where, f"{dotted!r} not found in {file}{hint}") from None
        bad = unrecordable(value, dotted)
        if bad:
            raise fail(where, f"{bad} in {file}: a lock records params as JSON, which has no "
                       "dates or times (write it as a string)")
        return value

    def _other_file(self, text: str, entry: str, where: str,
                    fail: Callable[[str, str], ConfigError]) -> str:
        try:
            file = normalize_path(text) if text else ""
        except PathProblem as exc:
            raise fail(where, f"params file of {entry!r}: {exc}") from None
        if not file or file == "." or is_inside(file, STATE_DIR):
            raise fail(where, f"malformed params entry {entry!r} (expected FILE:dotted.key "
                       "with FILE a params file of the project)")
        if file.casefold() == PROJECT_FILE:
            raise fail(where, f"params file of {entry!r}: {PROJECT_FILE} is the pipeline "
                       "file, not a params file")
        if not file.endswith(PARAMS_EXTENSIONS):
            raise fail(where, f"params file of {entry!r}: expected a .toml, .yaml, .yml or "
                       ".json file")
        return file

    def _read_other(self, file: str, where: str, fail: Callable[[str, str], ConfigError]
                    ) -> dict[str, Any]:
        if file == self.params_file:
            if not self.has_params:
                raise fail(where, f"params file {file!r} does not exist")
            return self.params
        if file not in self.other_params:
            if not (self.root / file).is_file():
                raise fail(where, f"params file {file!r} does not exist")
            self.other_params[file] = read_params(self.root, file, file)
        return self.other_params[file]


def _flag_paths(value: bool | list[str], out: str, wdir: str,
                fail: Callable[[str, str], ConfigError], tmpl: Callable[..., str],
                where: tuple[_KeyPart, ...]) -> bool | list[str]:
    """A metric/plot flag: a boolean as is, or its files, each strictly inside ``out``."""
    if isinstance(value, bool):
        return value
    files: list[str] = []
    for j, text in enumerate(value):
        rendered = tmpl(text, *where[2:], j)
        try:
            norm = normalize_path(rendered, wdir)
        except PathProblem as exc:
            raise fail(key_path(*where, j), str(exc)) from None
        if norm == out or not is_inside(norm, out):
            raise fail(key_path(*where, j), f"{rendered!r} is not a file inside the directory "
                       f"output {out!r}")
        if norm in files:
            raise fail(key_path(*where, j), f"{norm!r} is listed twice")
        files.append(norm)
    return files


__all__ = ["GROUP_REF_RE", "StageBuilder"]
