"""pivot.toml and its params files → a validated Project: loading and the project-wide rules.

Loading happens in two passes. First the parsed TOML is checked against the strict raw schema
(config_check.py, by hand; what it refuses, config_schema.py's pydantic models judge and word:
unknown keys and wrong types are errors), then every stage table is expanded
(matrix / foreach / glob) and templated (``${...}``) and its paths normalised and checked
(config_build.py), giving the public ``Project`` / ``Stage`` / ``Out`` models
(config_models.py, re-exported here) the rest of pivotbuild works with. Every problem is
raised as one ``ConfigError(file, key_path, problem)``; loading never writes anything to disk.

Decisions worth knowing:
- Paths are normalised lexically (``./a//b/`` → ``a/b``, ``a/../b`` → ``b``); symlinks are not
  resolved here. A dep, out or depfile may not be the root itself nor lie inside
  ``.pivotbuild/``.
- An out (or a depfile) can never be one of the project's own files (SPEC §8;
  ``paths.protected_out_problem``): it may not be, lie inside or hold ``pivot.toml`` or a
  params file read (the default one and every ``FILE:`` one), nor be or lie inside a ``.git``
  (at any depth), nor be a ``*.pvt`` record; and an out directory that exists may not hold a
  ``.git`` directly (one lstat per out at load time). Names are compared without case.
- A stage name (a matrix instance's included) is at most 250 bytes of UTF-8, so that its lock
  file ``<name>.json`` fits the 255-byte file name limit.
- A remote URL (or endpoint_url, or the executor address) that carries credentials (urls.py)
  is an error, in pivot.toml and config.local.toml alike; the message never quotes the URL.
- Duplicate deps, outs or params (after templating and normalisation) within a stage are errors.
- Templating applies to cmd, deps, outs paths, metric/plot file lists, depfile, params
  entries, wdir, desc and glob patterns; ``[vars]`` values are taken literally (not templated
  themselves). ``item``, ``params`` and ``stages`` are reserved var names.
- ``[project] params_file`` (default ``params.toml``) is the file ``${params.x}`` and plain
  params entries read; TOML, YAML or JSON by extension. ``sources`` lists pivot.toml, every
  params file read and config.local.toml (when present); ``glob_dirs`` every directory a
  glob walked: together, what a cached expansion depends on.
- ``[pools]`` sizes are integers ≥ 1; ``console`` (size 1) is built in and cannot be
  redefined; a stage's ``pool`` must name one.
- ``--set NAME=VALUE`` (``load_project(root, overrides)``) replaces a ``[vars]`` value, NAME
  dotted for nested tables. VALUE is always taken as a string: templating renders every
  scalar as text, so ``--set n=3`` gives the same cmd as ``n = 3`` would, and no TOML
  guessing is needed (``--set msg=true`` stays the text ``true``). An unknown NAME, or one
  naming a table or array, is a UsageError (exit 2).
- ``[executor]`` (SPEC §12): ``address`` and ``cluster`` exclude each other, ``workers`` needs
  ``cluster = "local"``, ``remote`` must name a remote (unset: ``default_remote``), ``local``
  names stages or stage tables, ``env`` environment variable names.
- ``.pivotbuild/config.local.toml`` (per machine, not committed) may set ``[project]`` cache_dir,
  jobs, checkout, default_remote, ``[remotes.NAME]`` url / endpoint_url / region / profile and
  ``[executor]`` kind / address / cluster / workers / insecure; it overrides pivot.toml.
  ``PIVOTBUILD_CACHE_DIR`` overrides both (relative: to the cwd).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pivotbuild.config_build import StageBuilder
from pivotbuild.config_check import (
    ExecutorSpec,
    FileSpec,
    LocalExecutorSpec,
    LocalFileSpec,
    LocalProjectSpec,
    ProjectSpec,
    as_dict,
    check_file,
    check_local,
)
from pivotbuild.config_models import (
    CONSOLE_POOL,
    STAGE_NAME_RE,
    ExecutorSettings,
    Out,
    Project,
    Remote,
    Stage,
)
from pivotbuild.config_read import PARAMS_EXTENSIONS, read_params, read_toml
from pivotbuild.errors import ConfigError, UsageError, key_path
from pivotbuild.paths import (
    CACHE_DIR_ENV,
    CHECKOUT_METHODS,
    DEFAULT_CACHE_DIR,
    LOCAL_CONFIG_FILE,
    PARAMS_FILE,
    PROJECT_FILE,
    STATE_DIR,
    PathProblem,
    is_inside,
    normalize_path,
)
from pivotbuild.template import DOTTED_KEY_RE, toml_type
from pivotbuild.urls import credential_problem

# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------


def _check_checkout(methods: list[str], file: str, key: str) -> list[str]:
    if not methods:
        raise ConfigError(file, key, "must name at least one of " + ", ".join(CHECKOUT_METHODS))
    for i, method in enumerate(methods):
        if method in methods[:i]:
            raise ConfigError(file, f"{key}[{i}]", f"{method!r} is listed twice")
    return list(methods)


def _resolve_cache_dir(root: Path, from_toml: str | None, from_local: str | None) -> Path:
    # Precedence: environment > per-machine config > pivot.toml > default.
    env = os.environ.get(CACHE_DIR_ENV, "")
    if env:
        # An environment value is typed in a shell, so a relative one means the cwd.
        return Path(os.path.abspath(os.path.expanduser(env)))
    for value, label in ((from_local, LOCAL_CONFIG_FILE), (from_toml, PROJECT_FILE)):
        if value is not None:
            if not value:
                raise ConfigError(label, "project.cache_dir", "must not be empty")
            return Path(os.path.abspath(root / os.path.expanduser(value)))
    return root / DEFAULT_CACHE_DIR


_CREDENTIALS_HINT = ("credentials never go in a URL (it is shown in messages, and pivot.toml is "
                     "committed): give them in the environment (AWS_ACCESS_KEY_ID, ...) or as "
                     "a profile in " + LOCAL_CONFIG_FILE)


def _check_credentials(file: str, name: str, fields: Mapping[str, Any]) -> None:
    """ConfigError if the remote's url or endpoint_url carries a secret; never quotes it."""
    for key in ("url", "endpoint_url"):
        value = fields.get(key)
        problem = credential_problem(value) if isinstance(value, str) else None
        if problem:
            raise ConfigError(file, key_path("remotes", name, key),
                              f"the URL {problem}; {_CREDENTIALS_HINT}")


def _remotes(raw: FileSpec, local: LocalFileSpec | None) -> dict[str, Remote]:
    merged: dict[str, dict[str, Any]] = {}
    for name, remote in raw.remotes.items():
        if not STAGE_NAME_RE.fullmatch(name):
            raise ConfigError(PROJECT_FILE, key_path("remotes", name), "invalid remote name")
        if not remote.url:
            raise ConfigError(PROJECT_FILE, key_path("remotes", name, "url"), "must not be empty")
        merged[name] = as_dict(remote)
        _check_credentials(PROJECT_FILE, name, merged[name])
    if local is not None:
        for name, over in local.remotes.items():
            fields = {k: v for k, v in as_dict(over).items() if v is not None}
            _check_credentials(LOCAL_CONFIG_FILE, name, fields)
            entry = {**merged.get(name, {}), **fields}
            if not entry.get("url"):
                raise ConfigError(LOCAL_CONFIG_FILE, key_path("remotes", name, "url"),
                                  "required key is missing (no such remote in pivot.toml)")
            merged[name] = entry
    return {name: Remote(**entry) for name, entry in merged.items()}


def load_project(root: Path, overrides: Mapping[str, str] | None = None) -> Project:
    """Load and validate ``root/pivot.toml`` (and its params files, config.local.toml if
    present). ``overrides`` (``--set NAME=VALUE``) replace ``[vars]`` values by dotted name;
    a value is always a string (templating renders every scalar as text anyway); an unknown
    name, or one naming a table, is a UsageError."""
    try:
        return _load_project(root, dict(overrides or {}))
    except RecursionError:
        # Deeply nested values that parsed can still exhaust validation or templating.
        raise ConfigError(PROJECT_FILE, "", "values are nested too deeply") from None


def _apply_overrides(variables: dict[str, Any], overrides: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``[vars]`` with each ``--set`` NAME (dotted for nested tables) replaced."""
    result = copy.deepcopy(variables) if overrides else variables
    for name, value in overrides.items():
        if not DOTTED_KEY_RE.fullmatch(name):
            raise UsageError(f"--set {name}=...: malformed name (expected a [vars] name like "
                             "'cc' or 'flags.opt')")
        *parents, last = name.split(".")
        node: Any = result
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            raise UsageError(f"--set {name}=...: no such variable in [vars] of {PROJECT_FILE}")
        if isinstance(node[last], (dict, list)):
            raise UsageError(f"--set {name}=...: [vars] {name} is {toml_type(node[last])} "
                             "(set one of its values instead)")
        node[last] = value
    return result


def _params_file(root: Path, raw: ProjectSpec) -> str:
    if raw.params_file is None:
        return PARAMS_FILE
    where = "project.params_file"
    try:
        rel = normalize_path(raw.params_file)
    except PathProblem as exc:
        raise ConfigError(PROJECT_FILE, where, str(exc)) from None
    if rel == "." or is_inside(rel, STATE_DIR) or rel.casefold() == PROJECT_FILE:
        raise ConfigError(PROJECT_FILE, where, f"not usable as a params file: "
                          f"{raw.params_file!r}")
    if not rel.endswith(PARAMS_EXTENSIONS):
        raise ConfigError(PROJECT_FILE, where, f"{raw.params_file!r}: expected a .toml, .yaml, "
                          ".yml or .json file")
    return rel


def _pools(raw: FileSpec) -> dict[str, int]:
    pools = {CONSOLE_POOL: 1}
    for name, size in raw.pools.items():
        if name == CONSOLE_POOL:
            raise ConfigError(PROJECT_FILE, key_path("pools", name),
                              f"{CONSOLE_POOL!r} is built in (size 1) and cannot be redefined")
        if not STAGE_NAME_RE.fullmatch(name):
            raise ConfigError(PROJECT_FILE, key_path("pools", name), "invalid pool name")
        pools[name] = size
    return pools


_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _executor(raw: ExecutorSpec, local: LocalExecutorSpec | None,
              remotes: Mapping[str, Remote], default_remote: str | None,
              stages: Mapping[str, Stage]) -> ExecutorSettings:
    fields: dict[str, Any] = as_dict(raw)
    file_of = dict.fromkeys(fields, PROJECT_FILE)
    if local is not None:
        for key, value in as_dict(local).items():
            if value is not None:
                fields[key], file_of[key] = value, LOCAL_CONFIG_FILE
    address = fields["address"]
    if address is not None:
        problem = credential_problem(address) if address else "must not be empty"
        if problem:
            raise ConfigError(file_of["address"], "executor.address",
                              problem if not address else f"the address {problem}")
        if fields["cluster"] is not None:
            raise ConfigError(file_of["address"], "executor.address",
                              "'address' and 'cluster' cannot both be set")
    if fields["workers"] is not None and fields["cluster"] is None:
        raise ConfigError(file_of["workers"], "executor.workers",
                          "applies only with cluster = \"local\"")
    if fields["remote"] is not None and fields["remote"] not in remotes:
        raise ConfigError(PROJECT_FILE, "executor.remote",
                          f"no remote named {fields['remote']!r} is defined")
    fields["remote"] = fields["remote"] or default_remote
    for i, name in enumerate(fields["env"]):
        if not _ENV_NAME_RE.fullmatch(name):
            raise ConfigError(PROJECT_FILE, key_path("executor", "env", i),
                              f"not an environment variable name: {name!r}")
    bases = {stage.base for stage in stages.values()}
    for i, name in enumerate(fields["local"]):
        if name not in stages and name not in bases:
            raise ConfigError(PROJECT_FILE, key_path("executor", "local", i),
                              f"no stage named {name!r}")
    return ExecutorSettings(**fields)


def _check_depfiles(stages: Mapping[str, Stage]) -> None:
    """A depfile left by an earlier run is deleted before its stage runs, so it may not be or
    lie inside a dep of any stage (its own included), nor another stage's out or depfile; it
    may be, or lie inside, one of its own stage's outs. A ConfigError at the depfile naming the
    path it overlaps."""
    with_depfile = [stage for stage in stages.values() if stage.depfile is not None]
    if not with_depfile:
        return
    claimed: dict[str, list[tuple[str, str]]] = {}  # path -> [(stage, "dep" | "out" | ...)]
    for stage in stages.values():
        for dep in stage.deps:
            claimed.setdefault(dep, []).append((stage.name, "dep"))
        for out in stage.outs:
            claimed.setdefault(out.path, []).append((stage.name, "out"))
        if stage.depfile is not None:
            claimed.setdefault(stage.depfile, []).append((stage.name, "depfile"))
    for stage in with_depfile:
        depfile = stage.depfile
        assert depfile is not None
        path = depfile
        while path:
            for owner, what in claimed.get(path, ()):
                if owner == stage.name and what in ("out", "depfile"):
                    continue
                whose = "this stage" if owner == stage.name else f"stage {owner!r}"
                raise ConfigError(PROJECT_FILE, key_path("stages", stage.base, "depfile"),
                                  f"{depfile!r} is deleted before each run, and it is or lies "
                                  f"inside the {what} {path!r} of {whose}")
            path = path.rpartition("/")[0]


def _load_project(root: Path, overrides: Mapping[str, str]) -> Project:
    root = root.resolve()
    if not (root / PROJECT_FILE).is_file():
        raise UsageError(f"no {PROJECT_FILE} in {root} (run 'pivotbuild init')")
    document = read_toml(root / PROJECT_FILE, PROJECT_FILE)
    raw = check_file(document, PROJECT_FILE)
    sources = [PROJECT_FILE]

    params_file = _params_file(root, raw.project)
    has_params = (root / params_file).is_file()
    params = read_params(root, params_file, params_file) if has_params else {}
    if has_params:
        sources.append(params_file)

    local: LocalFileSpec | None = None
    if (root / LOCAL_CONFIG_FILE).is_file():
        local = check_local(read_toml(root / LOCAL_CONFIG_FILE, LOCAL_CONFIG_FILE),
                            LOCAL_CONFIG_FILE)
        sources.append(LOCAL_CONFIG_FILE)

    for reserved in ("item", "params", "stages"):
        if reserved in raw.vars:
            raise ConfigError(PROJECT_FILE, key_path("vars", reserved),
                              f"{reserved!r} is a reserved name in ${{...}} templates")
    variables = _apply_overrides(raw.vars, overrides)
    pools = _pools(raw)

    proj = raw.project
    lproj = local.project if local is not None else LocalProjectSpec()
    checkout_src, checkout_file = ((lproj.checkout, LOCAL_CONFIG_FILE) if lproj.checkout is not None
                                   else (proj.checkout, PROJECT_FILE))
    checkout = (list(CHECKOUT_METHODS) if checkout_src is None else
                _check_checkout(list(checkout_src), checkout_file, "project.checkout"))
    cache_dir = _resolve_cache_dir(root, proj.cache_dir, lproj.cache_dir)

    remotes = _remotes(raw, local)
    default_remote = lproj.default_remote or proj.default_remote
    if default_remote is not None and default_remote not in remotes:
        file = LOCAL_CONFIG_FILE if lproj.default_remote else PROJECT_FILE
        raise ConfigError(file, "project.default_remote",
                          f"no remote named {default_remote!r} is defined (add "
                          f"[remotes.{default_remote}] with a url)")

    forbidden = [STATE_DIR]
    try:
        inside = cache_dir.relative_to(root).as_posix()
    except ValueError:
        inside = ""
    if inside and inside != "." and not is_inside(inside, STATE_DIR):
        forbidden.append(inside)  # a cache kept inside the project must not be an input

    builder = StageBuilder(root, variables, params, params_file, has_params, forbidden, pools)
    stages = builder.build_all(raw.stages, {
        base: isinstance(document["stages"][base].get("cmd"), str) for base in raw.stages})
    sources.extend(builder.other_params)
    _check_depfiles(stages)

    executor = _executor(raw.executor, local.executor if local is not None else None, remotes,
                         default_remote, stages)
    return Project(
        root=root, name=proj.name, jobs=lproj.jobs or proj.jobs, checkout=checkout,
        cache_dir=cache_dir, default_remote=default_remote, remotes=remotes, vars=variables,
        params=params, stages=stages, pools=pools, params_file=params_file,
        sources=tuple(sources), glob_dirs=tuple(sorted(builder.glob_dirs)), executor=executor,
    )


__all__ = [
    "CONSOLE_POOL", "ExecutorSettings", "Out", "Project", "Remote", "Stage", "load_project",
]
