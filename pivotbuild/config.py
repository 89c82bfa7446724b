"""pivot.toml and params.toml → validated models: the schema, loading, the path rules.

Loading happens in two passes. First the parsed TOML is checked against a strict pydantic schema
(``_Raw*`` models: unknown keys and wrong types are errors), then every stage table is expanded
(matrix / foreach) and templated (``${...}``; both in template.py), and its paths normalised
(paths.py) and checked, giving the public ``Project`` / ``Stage`` / ``Out`` models the rest of
pivotbuild works with. Every problem is raised as one ``ConfigError(file, key_path, problem)``;
loading never writes anything to disk.

Decisions worth knowing:
- Paths are normalised lexically (``./a//b/`` → ``a/b``, ``a/../b`` → ``b``); symlinks are not
  resolved here. A dep or out may not be the root itself nor lie inside ``.pivotbuild/``.
- An out can never be one of the project's own files (SPEC §8;
  ``paths.protected_out_problem``): it may not be, lie inside or hold ``pivot.toml`` or a
  params file, nor be or lie inside a ``.git`` (at any depth), nor be a ``*.pvt`` record; and
  an out directory that exists may not hold a ``.git`` directly (a submodule or vendored
  clone: one lstat per out at load time; deeper repositories are not searched). Names are
  compared without case, for case-insensitive file systems.
- A stage name (a matrix instance's included) is at most 250 bytes of UTF-8, so that its lock
  file ``<name>.json`` fits the 255-byte file name limit.
- A remote URL (or endpoint_url) that carries credentials (urls.py) is an error, in pivot.toml
  and config.local.toml alike; the message never quotes the URL.
- Duplicate deps, outs or params (after templating and normalisation) within a stage are errors.
- Templating applies to cmd, deps, outs paths, params keys, wdir and desc; ``[vars]`` values are
  taken literally (not templated themselves). ``item`` and ``params`` are reserved var names.
- ``.pivotbuild/config.local.toml`` (per machine, not committed) may set ``[project]`` cache_dir,
  jobs, checkout, default_remote and ``[remotes.NAME]`` url / endpoint_url / region / profile;
  it overrides pivot.toml. ``PIVOTBUILD_CACHE_DIR`` overrides both (relative: to the cwd).
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pivotbuild.errors import ConfigError, UsageError, key_path
from pivotbuild.lock import stage_name_size_problem
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
    protected_files,
    protected_out_problem,
)
from pivotbuild.template import DOTTED_KEY_RE, TemplateProblem, instances, lookup, render, toml_type
from pivotbuild.urls import credential_problem, redact_text

STAGE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


# ---------------------------------------------------------------------------------------------
# Public models
# ---------------------------------------------------------------------------------------------


class Out(BaseModel):
    """One declared output of a stage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str  # project-relative, normalised
    cache: bool = True  # False: hashed and locked, but never stored in the cache
    persist: bool = False  # True: not deleted before the stage runs
    # SPEC §11; neither enters the input hash. A list names files inside a directory out
    # (project-relative, normalised); a plot table has x, y (str or list), title, template.
    metric: bool | list[str] = False
    plot: bool | list[str] | dict[str, Any] = False


class Stage(BaseModel):
    """One runnable stage: a plain stage table, or one instance of a matrix/foreach table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    cmd: list[str]
    deps: list[str] = Field(default_factory=list)  # project-relative, normalised
    outs: list[Out] = Field(default_factory=list)
    params: list[str] = Field(default_factory=list)  # dotted keys of params.toml
    param_values: dict[str, Any] = Field(default_factory=dict)
    wdir: str = "."  # project-relative; "." is the root
    desc: str | None = None
    always_changed: bool = False
    frozen: bool = False
    base: str = ""  # the [stages.X] table it came from; defaults to name
    depfile: str | None = None  # project-relative, normalised (SPEC §9)
    discover: list[str] = Field(default_factory=list)  # only "python" (SPEC §13)
    pool: str | None = None  # a [pools] name or "console"

    @model_validator(mode="after")
    def _default_base(self) -> Stage:
        # Hand-built stages (tests, other modules) need not spell out base = name.
        if not self.base:
            object.__setattr__(self, "base", self.name)
        return self


class Remote(BaseModel):
    """A place to push cache objects to and pull them from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    endpoint_url: str | None = None  # e.g. a MinIO endpoint for s3:// urls
    region: str | None = None
    profile: str | None = None  # credentials profile; only from config.local.toml


CONSOLE_POOL = "console"  # the built-in pool of size 1 that gets the terminal (SPEC §9)
EXECUTOR_KINDS = ("local", "dask")
TRANSFER_MODES = ("remote", "shared")


class ExecutorSettings(BaseModel):
    """The ``[executor]`` table (SPEC §12), merged with config.local.toml's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["local", "dask"] = "local"
    address: str | None = None  # scheduler address (tcp://, tls://, ...)
    cluster: Literal["local"] | None = None  # "local": start a loopback LocalCluster
    workers: int | None = None  # with cluster = "local"
    transfer: Literal["remote", "shared"] = "remote"
    remote: str | None = None  # a [remotes] name; resolved to project.default_remote if unset
    env: list[str] = Field(default_factory=list)  # environment variable names forwarded
    local: list[str] = Field(default_factory=list)  # stage (or base) names run on the client
    retries: int = 1  # re-runs after a worker is lost
    insecure: bool = False  # allow a non-loopback tcp:// address


class Project(BaseModel):
    """A loaded, validated project: everything pivot.toml and its params files say."""

    model_config = ConfigDict(extra="forbid")

    root: Path
    name: str | None = None
    jobs: int | None = None
    checkout: list[str] = Field(default_factory=lambda: list(CHECKOUT_METHODS))
    cache_dir: Path = Path()  # absolute once validated; Path() means root/.pivotbuild/cache
    default_remote: str | None = None
    remotes: dict[str, Remote] = Field(default_factory=dict)
    vars: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)  # the default params file's content
    stages: dict[str, Stage] = Field(default_factory=dict)
    pools: dict[str, int] = Field(default_factory=lambda: {CONSOLE_POOL: 1})
    params_file: str = PARAMS_FILE  # the default params file, project-relative
    # Project-relative files read to expand the config (pivot.toml, every params file read),
    # and every directory a glob walked: what a no-op snapshot must stat to stay valid.
    sources: tuple[str, ...] = ()
    glob_dirs: tuple[str, ...] = ()
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)

    @model_validator(mode="after")
    def _absolute_paths(self) -> Project:
        self.pools.setdefault(CONSOLE_POOL, 1)
        # Downstream code compares and joins these; relative ones would silently depend on cwd,
        # and a root reached through a symlink would fail containment checks on real paths.
        self.root = self.root.resolve()
        if self.cache_dir == Path():
            self.cache_dir = self.root / DEFAULT_CACHE_DIR
        elif not self.cache_dir.is_absolute():
            self.cache_dir = Path(os.path.abspath(self.root / self.cache_dir))
        return self

    @property
    def state_dir(self) -> Path:
        """The project's ``.pivotbuild/`` directory (it may not exist yet)."""
        return self.root / STATE_DIR


# ---------------------------------------------------------------------------------------------
# Raw schema: what the TOML may contain, before templating and expansion
# ---------------------------------------------------------------------------------------------

_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)


def _as_cmd_list(value: Any) -> Any:
    # A string cmd is shorthand for a one-command list; the lock always stores a list.
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return value
    raise PydanticCustomError("cmd_type", "expected a string or an array of strings, got {got}",
                              {"got": toml_type(value)})


def _as_out_table(value: Any) -> Any:
    # A plain string out is shorthand for { path = "..." } with default flags.
    if isinstance(value, str):
        return {"path": value}
    if isinstance(value, dict):
        return value
    raise PydanticCustomError("out_type", "expected a path string or a table with a path, got "
                              "{got}", {"got": toml_type(value)})


def _scalar(value: Any) -> Any:
    # Matrix/foreach values end up in stage names and strings, so only plain scalars make sense.
    if isinstance(value, (str, int, float)):  # bool is an int subclass
        return value
    raise PydanticCustomError("scalar_type", "expected a string, integer, float or boolean, "
                              "got {got}", {"got": toml_type(value)})


_Scalar = Annotated[Any, BeforeValidator(_scalar)]


def _flag(value: Any, tables: bool) -> Any:
    # metric / plot: a boolean, an array of paths inside a directory out, or (plot) a table,
    # whose keys plots.parse_plot_flag checks once the stage is built.
    if isinstance(value, bool):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    if tables and isinstance(value, dict):
        return value
    shape = "a boolean, an array of paths" + (" or a table {x, y, title, template}"
                                              if tables else "")
    raise PydanticCustomError("flag_type", "expected {shape}, got {got}",
                              {"shape": shape, "got": _describe(value)})


def _choice(*allowed: str) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, str) and value in allowed:
            return value
        raise PydanticCustomError("choice", "expected one of {allowed}, got {got}",
                                  {"allowed": ", ".join(repr(a) for a in allowed),
                                   "got": _describe(value)})
    return BeforeValidator(check)


class _RawOut(BaseModel):
    model_config = _STRICT
    path: str
    cache: bool = True
    persist: bool = False
    metric: Annotated[Any, BeforeValidator(lambda v: _flag(v, tables=False))] = False
    plot: Annotated[Any, BeforeValidator(lambda v: _flag(v, tables=True))] = False


class _RawStage(BaseModel):
    model_config = _STRICT
    cmd: Annotated[list[str], BeforeValidator(_as_cmd_list)]
    deps: list[str] = []
    outs: list[Annotated[_RawOut, BeforeValidator(_as_out_table)]] = []
    params: list[str] = []
    wdir: str = "."
    desc: str | None = None
    always_changed: bool = False
    frozen: bool = False
    matrix: dict[str, list[_Scalar]] | None = None
    foreach: list[_Scalar] | None = None
    depfile: str | None = None
    discover: list[Annotated[str, _choice("python")]] = []
    pool: str | None = None


class _RawProject(BaseModel):
    model_config = _STRICT
    name: str | None = None
    jobs: Annotated[int, Field(ge=1)] | None = None
    checkout: list[Literal["reflink", "hardlink", "copy"]] | None = None
    cache_dir: str | None = None
    default_remote: str | None = None
    params_file: str | None = None


class _RawExecutor(BaseModel):
    model_config = _STRICT
    kind: Annotated[str, _choice(*EXECUTOR_KINDS)] = "local"
    address: str | None = None
    cluster: Annotated[str, _choice("local")] | None = None
    workers: Annotated[int, Field(ge=1)] | None = None
    transfer: Annotated[str, _choice(*TRANSFER_MODES)] = "remote"
    remote: str | None = None
    env: list[str] = []
    local: list[str] = []
    retries: Annotated[int, Field(ge=0)] = 1
    insecure: bool = False


class _RawLocalExecutor(BaseModel):
    model_config = _STRICT
    kind: Annotated[str, _choice(*EXECUTOR_KINDS)] | None = None
    address: str | None = None
    cluster: Annotated[str, _choice("local")] | None = None
    workers: Annotated[int, Field(ge=1)] | None = None
    insecure: bool | None = None


class _RawRemote(BaseModel):
    model_config = _STRICT
    url: str
    endpoint_url: str | None = None
    region: str | None = None


class _RawFile(BaseModel):
    model_config = _STRICT
    project: _RawProject = _RawProject()
    remotes: dict[str, _RawRemote] = {}
    vars: dict[str, Any] = {}
    stages: dict[str, _RawStage] = {}
    pools: dict[str, Annotated[int, Field(ge=1)]] = {}
    executor: _RawExecutor = _RawExecutor()


class _RawLocalProject(BaseModel):
    model_config = _STRICT
    jobs: Annotated[int, Field(ge=1)] | None = None
    checkout: list[Literal["reflink", "hardlink", "copy"]] | None = None
    cache_dir: str | None = None
    default_remote: str | None = None


class _RawLocalRemote(BaseModel):
    model_config = _STRICT
    url: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None


class _RawLocalFile(BaseModel):
    model_config = _STRICT
    project: _RawLocalProject = _RawLocalProject()
    remotes: dict[str, _RawLocalRemote] = {}
    executor: _RawLocalExecutor = _RawLocalExecutor()


# ---------------------------------------------------------------------------------------------
# Reading files and translating pydantic's errors
# ---------------------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    # Show short scalars so the user can find the offending value; never dump whole tables.
    if isinstance(value, (dict, list)):
        return toml_type(value)
    text = repr(value) if not isinstance(value, bool) else str(value).lower()
    if len(text) > 40:
        return toml_type(value)
    return f"{toml_type(value)} {redact_text(text)}"  # a URL typed in the wrong key


_EXPECTED = {
    "string_type": "a string",
    "bool_type": "a boolean (true or false)",
    "int_type": "an integer",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


def _translate(file: str, error: ValidationError) -> ConfigError:
    """Turn the first pydantic error into one ConfigError line with a TOML key path."""
    first = error.errors()[0]
    loc = tuple(part for part in first["loc"] if isinstance(part, (str, int)))
    # BeforeValidator/function wrappers never add loc parts, but unions would (by member
    # name); our schema avoids unions, so every loc part is a real key or index.
    where = key_path(*loc)
    kind = first["type"]
    value = first.get("input")
    if kind == "extra_forbidden":
        problem = "unknown key"
    elif kind == "missing":
        problem = "required key is missing"
    elif kind in _EXPECTED:
        problem = f"expected {_EXPECTED[kind]}, got {_describe(value)}"
    elif kind == "greater_than_equal":
        problem = f"must be at least {first['ctx']['ge']}, got {_describe(value)}"
    elif kind == "literal_error":
        problem = (f"expected one of {', '.join(repr(m) for m in CHECKOUT_METHODS)}, "
                   f"got {_describe(value)}")
    elif kind in ("cmd_type", "out_type", "scalar_type", "flag_type", "choice"):
        problem = first["msg"]
    else:
        problem = first["msg"].splitlines()[0]
    return ConfigError(file, where, problem)


def _read_toml(path: Path, label: str) -> dict[str, Any]:
    """Parse one TOML file; syntax, encoding and I/O problems become ConfigError(label, ...)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(label, "", f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(label, "", f"not valid UTF-8 (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ConfigError(label, "", "values are nested too deeply") from None
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's TOMLDecodeError only carries its position inside the message text.
        message = str(exc)
        match = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message, re.DOTALL)
        if match:
            raise ConfigError(label, f"line {match.group(2)}",
                              f"{match.group(1)} (column {match.group(3)})") from None
        match = re.fullmatch(r"(.*) \(at end of document\)", message, re.DOTALL)
        if match:
            raise ConfigError(label, "end of file", match.group(1)) from None
        raise ConfigError(label, "", message) from None


def _unrecordable(value: Any, where: str) -> str | None:
    """The first TOML date, time or datetime in a params value (the lock cannot hold one)."""
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return f"{where!r} is a {toml_type(value)}"
    items = (value.items() if isinstance(value, dict) else
             enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        found = _unrecordable(item, f"{where}[{key}]" if isinstance(key, int) else
                              f"{where}.{key}")
        if found:
            return found
    return None


class _StageBuilder:
    """Turns one raw stage table into its Stage instances; holds what every instance shares."""

    def __init__(self, variables: dict[str, Any], params: dict[str, Any], has_params: bool,
                 forbidden: list[str], protected: dict[str, str], root: Path | None,
                 pools: Mapping[str, int] | None = None, params_file: str = PARAMS_FILE
                 ) -> None:
        self.params_file = params_file
        self.pools = pools if pools is not None else {CONSOLE_POOL: 1}
        self.variables = variables
        self.params = params
        self.has_params = has_params
        # Project-relative directories no dep or out may lie in (pivotbuild's own state).
        self.forbidden = forbidden
        # Project files no out may be or hold: path -> what it is (protected_files()).
        self.protected = protected
        self.root = root  # where to look for a .git inside an out directory (None: nowhere)

    def build(self, base: str, raw: _RawStage, cmd_is_str: bool) -> list[Stage]:
        if not STAGE_NAME_RE.fullmatch(base):
            raise ConfigError(PROJECT_FILE, key_path("stages", base),
                              f"invalid stage name {base!r} (allowed: letters, digits, '_', "
                              "'.', '-', not starting with '.' or '-')")
        too_long = stage_name_size_problem(base)
        if too_long:
            raise ConfigError(PROJECT_FILE, key_path("stages", base), too_long)
        stages = []
        for name, item in instances(base, raw.matrix, raw.foreach):
            context: dict[str, Any] = dict(self.variables)
            context["params"] = self.params
            if item is not None:
                context["item"] = item
            stages.append(self._instance(base, name, raw, context, cmd_is_str))
        return stages

    def _instance(self, base: str, name: str, raw: _RawStage, context: dict[str, Any],
                  cmd_is_str: bool) -> Stage:
        suffix = f" (in {name})" if name != base else ""

        def fail(key: str, problem: str) -> ConfigError:
            return ConfigError(PROJECT_FILE, key, problem + suffix)

        def tmpl(text: str, *key: str | int) -> str:
            try:
                return render(text, context)
            except TemplateProblem as exc:
                # Template problems do not depend on the item, so no instance suffix.
                raise ConfigError(PROJECT_FILE, key_path("stages", base, *key),
                                  str(exc)) from None

        cmd: list[str] = []
        if not raw.cmd:
            raise fail(key_path("stages", base, "cmd"), "must not be empty")
        for i, part in enumerate(raw.cmd):
            # A string cmd is reported as `cmd`, an entry of a list as `cmd[i]`.
            key: tuple[str | int, ...] = ("cmd",) if cmd_is_str else ("cmd", i)
            text = tmpl(part, *key)
            if not text.strip():
                raise fail(key_path("stages", base, *key), "must not be empty")
            cmd.append(text)

        wdir_text = tmpl(raw.wdir, "wdir")
        try:
            wdir = normalize_path(wdir_text)
        except PathProblem as exc:
            raise fail(key_path("stages", base, "wdir"), str(exc)) from None

        def path(text: str, *key: str | int) -> str:
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
            norm = path(dep, "deps", i)
            if norm in first_seen:
                raise fail(key_path("stages", base, "deps", i),
                           f"{norm!r} is listed twice (also deps[{first_seen[norm]}])")
            first_seen[norm] = i
            deps.append(norm)

        outs: list[Out] = []
        out_seen: dict[str, int] = {}
        for i, out in enumerate(raw.outs):
            norm = path(out.path, "outs", i)
            problem = protected_out_problem(norm, self.protected, self.root)
            if problem:
                raise fail(key_path("stages", base, "outs", i), f"{problem}: {out.path!r}")
            if norm in out_seen:
                raise fail(key_path("stages", base, "outs", i),
                           f"{norm!r} is listed twice (also outs[{out_seen[norm]}])")
            out_seen[norm] = i
            metric = self._flag_paths(out.metric, norm, wdir, fail, tmpl,
                                      ("stages", base, "outs", i, "metric"))
            plot = out.plot
            if isinstance(plot, dict):
                from pivotbuild.plots import parse_plot_flag  # only projects with plot tables

                parse_plot_flag(plot, key_path("stages", base, "outs", i, "plot"))
            else:
                plot = self._flag_paths(plot, norm, wdir, fail, tmpl,
                                        ("stages", base, "outs", i, "plot"))
            outs.append(Out(path=norm, cache=out.cache, persist=out.persist, metric=metric,
                            plot=plot))

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
            dotted = tmpl(key_text, "params", i)
            where = key_path("stages", base, "params", i)
            if not DOTTED_KEY_RE.fullmatch(dotted):
                raise fail(where, f"malformed params key {dotted!r} (expected dotted keys like "
                           "'train.lr')")
            if dotted in values:
                raise fail(where, f"{dotted!r} is listed twice")
            try:
                values[dotted] = lookup(self.params, dotted)
            except KeyError:
                hint = "" if self.has_params else f" (there is no {self.params_file})"
                raise fail(where, f"{dotted!r} not found in {self.params_file}{hint}"
                           ) from None
            unrecordable = _unrecordable(values[dotted], dotted)
            if unrecordable:
                raise fail(where, f"{unrecordable} in {self.params_file}: a lock records params as "
                           "JSON, which has no dates or times (write it as a string)")
            params.append(dotted)

        desc = None if raw.desc is None else tmpl(raw.desc, "desc")
        return Stage.model_construct(
            # Everything was validated above; skipping re-validation keeps 5,000-stage
            # projects quick to load.
            name=name, cmd=cmd, deps=deps, outs=outs, params=params, param_values=values,
            wdir=wdir, desc=desc, always_changed=raw.always_changed, frozen=raw.frozen,
            base=base, depfile=depfile, discover=list(raw.discover), pool=raw.pool,
        )

    @staticmethod
    def _flag_paths(value: bool | list[str], out: str, wdir: str,
                    fail: Any, tmpl: Any, where: tuple[str | int, ...]) -> bool | list[str]:
        """A metric/plot flag: a boolean as is, or its files, each strictly inside ``out``."""
        if isinstance(value, bool):
            return value
        files: list[str] = []
        for j, text in enumerate(value):
            rendered = tmpl(text, *where, j)
            try:
                norm = normalize_path(rendered, wdir)
            except PathProblem as exc:
                raise fail(key_path(*where, j), str(exc)) from None
            if norm == out or not is_inside(norm, out):
                raise fail(key_path(*where, j), f"{rendered!r} is not a file inside the "
                           f"directory output {out!r}")
            if norm in files:
                raise fail(key_path(*where, j), f"{norm!r} is listed twice")
            files.append(norm)
        return files


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------


def _validate(model: type[BaseModel], data: dict[str, Any], label: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _translate(label, exc) from None


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


def _remotes(raw: _RawFile, local: _RawLocalFile | None) -> dict[str, Remote]:
    merged: dict[str, dict[str, Any]] = {}
    for name, remote in raw.remotes.items():
        if not STAGE_NAME_RE.fullmatch(name):
            raise ConfigError(PROJECT_FILE, key_path("remotes", name), "invalid remote name")
        if not remote.url:
            raise ConfigError(PROJECT_FILE, key_path("remotes", name, "url"), "must not be empty")
        _check_credentials(PROJECT_FILE, name, remote.model_dump())
        merged[name] = remote.model_dump()
    if local is not None:
        for name, over in local.remotes.items():
            fields = {k: v for k, v in over.model_dump().items() if v is not None}
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


_PARAMS_EXTENSIONS = (".toml", ".yaml", ".yml", ".json")


def _read_params(root: Path, rel: str, label: str) -> dict[str, Any]:
    """Parse one params file by its extension (TOML, YAML, JSON); its top level must be a
    table. Problems are ConfigError(label, ...)."""
    path = root / rel
    if rel.endswith(".toml"):
        return _read_toml(path, label)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(label, "", f"cannot read {rel}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(label, "", f"not valid UTF-8 (byte {exc.start})") from None
    if rel.endswith(".json"):
        import json

        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(label, "", f"invalid JSON: {str(exc).splitlines()[0]}") from None
    else:
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            data = yaml.load(text, Loader=loader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(label, where, f"invalid YAML: {problem}") from None
        if data is None:
            data = {}
    if not isinstance(data, dict):
        raise ConfigError(label, "", f"expected a table (mapping) at the top, got "
                          f"{toml_type(data)}")
    return data


def _params_file(root: Path, raw: _RawProject) -> str:
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
    if not rel.endswith(_PARAMS_EXTENSIONS):
        raise ConfigError(PROJECT_FILE, where, f"{raw.params_file!r}: expected a .toml, .yaml, "
                          ".yml or .json file")
    return rel


def _pools(raw: _RawFile) -> dict[str, int]:
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


def _executor(raw: _RawExecutor, local: _RawLocalExecutor | None, remotes: Mapping[str, Remote],
              default_remote: str | None, stages: Mapping[str, Stage]) -> ExecutorSettings:
    fields: dict[str, Any] = raw.model_dump()
    file_of = dict.fromkeys(fields, PROJECT_FILE)
    if local is not None:
        for key, value in local.model_dump().items():
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


def _load_project(root: Path, overrides: Mapping[str, str]) -> Project:
    root = root.resolve()
    if not (root / PROJECT_FILE).is_file():
        raise UsageError(f"no {PROJECT_FILE} in {root} (run 'pivotbuild init')")
    document = _read_toml(root / PROJECT_FILE, PROJECT_FILE)
    raw: _RawFile = _validate(_RawFile, document, PROJECT_FILE)
    sources = [PROJECT_FILE]

    params_file = _params_file(root, raw.project)
    has_params = (root / params_file).is_file()
    params = _read_params(root, params_file, params_file) if has_params else {}
    if has_params:
        sources.append(params_file)

    local: _RawLocalFile | None = None
    if (root / LOCAL_CONFIG_FILE).is_file():
        local = _validate(_RawLocalFile, _read_toml(root / LOCAL_CONFIG_FILE, LOCAL_CONFIG_FILE),
                          LOCAL_CONFIG_FILE)
        sources.append(LOCAL_CONFIG_FILE)

    for reserved in ("item", "params", "stages"):
        if reserved in raw.vars:
            raise ConfigError(PROJECT_FILE, key_path("vars", reserved),
                              f"{reserved!r} is a reserved name in ${{...}} templates")
    variables = _apply_overrides(raw.vars, overrides)
    pools = _pools(raw)

    proj = raw.project
    lproj = local.project if local is not None else _RawLocalProject()
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

    protected = protected_files([params_file])
    builder = _StageBuilder(variables, params, has_params, forbidden, protected, root, pools,
                            params_file)
    stages: dict[str, Stage] = {}
    for base, raw_stage in raw.stages.items():
        cmd_is_str = isinstance(document["stages"][base].get("cmd"), str)
        for stage in builder.build(base, raw_stage, cmd_is_str):
            stages[stage.name] = stage

    executor = _executor(raw.executor, local.executor if local is not None else None, remotes,
                         default_remote, stages)
    return Project(
        root=root, name=proj.name, jobs=lproj.jobs or proj.jobs, checkout=checkout,
        cache_dir=cache_dir, default_remote=default_remote, remotes=remotes, vars=variables,
        params=params, stages=stages, pools=pools, params_file=params_file,
        sources=tuple(sources), glob_dirs=(), executor=executor,
    )


__all__ = [
    "CONSOLE_POOL", "ExecutorSettings", "Out", "Project", "Remote", "Stage", "load_project",
]
