"""pivot.toml's parsed document → plain immutable raw values, checked by hand without pydantic.

``check_file`` (pivot.toml) and ``check_local`` (config.local.toml) walk the document TOML
parsed into and check what the strict pydantic ``Raw*`` models of config_schema.py check:
no unknown key, exact types (``true`` is not an integer, ``1`` not a float), ``ge`` bounds,
the ``cmd`` (a string) and ``outs`` (a path string) shorthands, a foreach or matrix axis (an
array of scalars, or a ``{ glob, exclude }`` table), ``metric`` / ``plot`` flags (a boolean,
a non-empty array of paths, for ``plot`` also a table), and the fixed choices (``discover``,
``checkout``, executor ``kind`` / ``cluster`` / ``transfer``). A document they accept
becomes the ``*Spec`` values below, defaults filled, which config.py and
config_build.StageBuilder consume. They are NamedTuples, not dataclasses: eleven classes
cost ~2 ms to define instead of ~15, and a thousand stages build ~3x faster. Their lists
and tables (a new empty one for each default) are never changed by anyone.

Anything they do not accept (whatever the reason) goes to the pydantic models, imported
only then: they name the problem (``config_schema.translate``: the messages are theirs), and
in the unlikely case they accept what the checks here refused, their instance is turned
into the same values (``from_model``). So the checks here may be stricter than the models,
never looser: an explicit ``None`` (TOML has no null) is refused even where a model would
take it as its default. The models stay the schema's one source for messages and for
``pivotbuild schema``; ``MODEL_SPECS`` pairs each model with its twin here, and
tests/test_config_check.py fails when their field names or defaults drift apart.
Importing pydantic and building the models costs ~150 ms of CPU: more than a 1,000-stage
pivot.toml takes to parse, check and expand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from pivotbuild.config_models import EXECUTOR_KINDS, TRANSFER_MODES
from pivotbuild.paths import CHECKOUT_METHODS

# ---- the raw values (twins of config_schema's Raw* models: same fields, same defaults) ----
# Only scalar defaults are class defaults here. A list or table default ([], {}) is filled by
# the checks, a new one each time, so no two values share one; a class with such a field has
# no class defaults at all (a NamedTuple's defaulted fields must come last).


class GlobSpec(NamedTuple):
    """``{ glob = PATTERN, exclude = [PATTERN...] }``: a foreach or a matrix axis."""

    glob: str
    exclude: list[str]


Axis = list[Any] | GlobSpec  # an array of scalars (str, int, float, bool), or a glob table


class OutSpec(NamedTuple):
    path: str
    cache: bool = True
    persist: bool = False
    metric: bool | list[str] = False
    plot: bool | list[str] | dict[str, Any] = False  # a table: plots.parse_plot_flag checks it


class StageSpec(NamedTuple):
    cmd: list[str]  # a string cmd is a one-command list (config.py knows which was written)
    deps: list[str]
    outs: list[OutSpec]
    params: list[str]
    wdir: str
    desc: str | None
    always_changed: bool
    frozen: bool
    matrix: dict[str, Axis] | None
    foreach: Axis | None
    depfile: str | None
    discover: list[str]
    pool: str | None


class ProjectSpec(NamedTuple):
    name: str | None = None
    jobs: int | None = None
    checkout: list[str] | None = None
    cache_dir: str | None = None
    default_remote: str | None = None
    params_file: str | None = None


class ExecutorSpec(NamedTuple):
    kind: str
    address: str | None
    cluster: str | None
    workers: int | None
    transfer: str
    remote: str | None
    env: list[str]
    local: list[str]
    retries: int
    insecure: bool


class RemoteSpec(NamedTuple):
    url: str
    endpoint_url: str | None = None
    region: str | None = None


class FileSpec(NamedTuple):
    """pivot.toml as written (before expansion)."""

    project: ProjectSpec
    remotes: dict[str, RemoteSpec]
    vars: dict[str, Any]
    stages: dict[str, StageSpec]
    pools: dict[str, int]
    executor: ExecutorSpec


class LocalProjectSpec(NamedTuple):
    jobs: int | None = None
    checkout: list[str] | None = None
    cache_dir: str | None = None
    default_remote: str | None = None


class LocalExecutorSpec(NamedTuple):
    kind: str | None = None
    address: str | None = None
    cluster: str | None = None
    workers: int | None = None
    insecure: bool | None = None


class LocalRemoteSpec(NamedTuple):
    url: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None


class LocalFileSpec(NamedTuple):
    """.pivotbuild/config.local.toml as written."""

    project: LocalProjectSpec
    remotes: dict[str, LocalRemoteSpec]
    executor: LocalExecutorSpec


#: Each pydantic model of config_schema.py (by class name) → its plain twin here.
MODEL_SPECS: dict[str, type[Any]] = {
    "RawGlob": GlobSpec, "RawOut": OutSpec, "RawStage": StageSpec, "RawProject": ProjectSpec,
    "RawExecutor": ExecutorSpec, "RawRemote": RemoteSpec, "RawFile": FileSpec,
    "RawLocalProject": LocalProjectSpec, "RawLocalExecutor": LocalExecutorSpec,
    "RawLocalRemote": LocalRemoteSpec, "RawLocalFile": LocalFileSpec,
}


def as_dict(spec: Any) -> dict[str, Any]:
    """A spec's fields by name (a list value copied), as pydantic's ``model_dump`` gave."""
    return {name: (list(value) if type(value) is list else value)
            for name, value in zip(spec._fields, spec)}


# ---- the checks ---------------------------------------------------------------------------


class _Refused(Exception):
    """The document is not plainly valid: the pydantic models judge it."""


_ABSENT: Any = object()
_SCALARS = (str, int, float, bool)
_T = TypeVar("_T")


def _keys(spec: type[Any]) -> frozenset[str]:
    return frozenset(spec._fields)


def _table(value: Any, keys: frozenset[str]) -> dict[str, Any]:
    if type(value) is not dict or not value.keys() <= keys:
        raise _Refused
    return value


def _str(value: Any) -> str:
    if type(value) is not str:
        raise _Refused
    return value


def _opt_str(table: dict[str, Any], key: str) -> str | None:
    value = table.get(key, _ABSENT)
    return None if value is _ABSENT else _str(value)


def _str_or(table: dict[str, Any], key: str, default: str) -> str:
    value = table.get(key, _ABSENT)
    return default if value is _ABSENT else _str(value)


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise _Refused
    return value


def _bool_or(table: dict[str, Any], key: str, default: bool) -> bool:
    value = table.get(key, _ABSENT)
    return default if value is _ABSENT else _bool(value)


def _opt_bool(table: dict[str, Any], key: str) -> bool | None:
    value = table.get(key, _ABSENT)
    return None if value is _ABSENT else _bool(value)


def _int(value: Any, least: int) -> int:
    if type(value) is not int or value < least:  # type(True) is bool, not int
        raise _Refused
    return value


def _int_or(table: dict[str, Any], key: str, least: int, default: int) -> int:
    value = table.get(key, _ABSENT)
    return default if value is _ABSENT else _int(value, least)


def _opt_int(table: dict[str, Any], key: str, least: int) -> int | None:
    value = table.get(key, _ABSENT)
    return None if value is _ABSENT else _int(value, least)


def _strs(value: Any) -> list[str]:
    if type(value) is not list:
        raise _Refused
    for item in value:
        if type(item) is not str:
            raise _Refused
    return list(value)


def _strs_at(table: dict[str, Any], key: str) -> list[str]:
    value = table.get(key, _ABSENT)
    return [] if value is _ABSENT else _strs(value)


def _one_of(value: Any, allowed: tuple[str, ...]) -> str:
    if type(value) is not str or value not in allowed:
        raise _Refused
    return value


def _choice_or(table: dict[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = table.get(key, _ABSENT)
    return default if value is _ABSENT else _one_of(value, allowed)


def _opt_choice(table: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str | None:
    value = table.get(key, _ABSENT)
    return None if value is _ABSENT else _one_of(value, allowed)


def _checkout(table: dict[str, Any]) -> list[str] | None:
    value = table.get("checkout", _ABSENT)
    if value is _ABSENT:
        return None
    methods = _strs(value)
    for method in methods:
        if method not in CHECKOUT_METHODS:
            raise _Refused
    return methods


def _section(data: dict[str, Any], key: str, check: Callable[[Any], _T]) -> _T:
    """A table such as ``[project]``; absent, as an empty one (its defaults)."""
    return check(data.get(key, {}))


def _named(data: dict[str, Any], key: str, check: Callable[[Any], _T]) -> dict[str, _T]:
    """A table of named tables (``[remotes.NAME]``, ``[stages.NAME]``), each checked."""
    value = data.get(key, _ABSENT)
    if value is _ABSENT:
        return {}
    if type(value) is not dict:
        raise _Refused
    return {_str(name): check(item) for name, item in value.items()}


_GLOB_KEYS = _keys(GlobSpec)
_OUT_KEYS = _keys(OutSpec)
_STAGE_KEYS = _keys(StageSpec)
_PROJECT_KEYS = _keys(ProjectSpec)
_EXECUTOR_KEYS = _keys(ExecutorSpec)
_REMOTE_KEYS = _keys(RemoteSpec)
_FILE_KEYS = _keys(FileSpec)
_LOCAL_PROJECT_KEYS = _keys(LocalProjectSpec)
_LOCAL_EXECUTOR_KEYS = _keys(LocalExecutorSpec)
_LOCAL_REMOTE_KEYS = _keys(LocalRemoteSpec)
_LOCAL_FILE_KEYS = _keys(LocalFileSpec)


def _axis(value: Any) -> Axis:
    if type(value) is list:
        for item in value:
            if type(item) not in _SCALARS:  # a date, an array or a table is no stage name part
                raise _Refused
        return list(value)
    table = _table(value, _GLOB_KEYS)
    return GlobSpec(glob=_str(table.get("glob")), exclude=_strs_at(table, "exclude"))


def _flag(table: dict[str, Any], key: str) -> bool | list[str]:
    """``metric`` / ``plot``: a boolean, or a non-empty array of paths."""
    value = table.get(key, _ABSENT)
    if value is _ABSENT:
        return False
    if type(value) is bool:
        return value
    paths = _strs(value)
    if not paths:
        raise _Refused
    return paths


def _plot(table: dict[str, Any]) -> bool | list[str] | dict[str, Any]:
    value = table.get("plot")
    if type(value) is dict:
        return value  # its keys are plots.parse_plot_flag's to check
    return _flag(table, "plot")


def _out(value: Any) -> OutSpec:
    if type(value) is str:
        return OutSpec(path=value)
    table = _table(value, _OUT_KEYS)
    return OutSpec(path=_str(table.get("path")), cache=_bool_or(table, "cache", True),
                   persist=_bool_or(table, "persist", False),
                   metric=_flag(table, "metric"), plot=_plot(table))


def _stage(value: Any) -> StageSpec:
    table = _table(value, _STAGE_KEYS)
    cmd = table.get("cmd")
    outs = table.get("outs", _ABSENT)
    if outs is not _ABSENT and type(outs) is not list:
        raise _Refused
    matrix = table.get("matrix", _ABSENT)
    if matrix is not _ABSENT and type(matrix) is not dict:
        raise _Refused
    foreach = table.get("foreach", _ABSENT)
    discover = _strs_at(table, "discover")
    for kind in discover:
        if kind != "python":
            raise _Refused
    return StageSpec(
        cmd=[cmd] if type(cmd) is str else _strs(cmd),
        deps=_strs_at(table, "deps"),
        outs=[] if outs is _ABSENT else [_out(out) for out in outs],
        params=_strs_at(table, "params"),
        wdir=_str_or(table, "wdir", "."),
        desc=_opt_str(table, "desc"),
        always_changed=_bool_or(table, "always_changed", False),
        frozen=_bool_or(table, "frozen", False),
        matrix=(None if matrix is _ABSENT else
                {_str(axis): _axis(values) for axis, values in matrix.items()}),
        foreach=None if foreach is _ABSENT else _axis(foreach),
        depfile=_opt_str(table, "depfile"),
        discover=discover,
        pool=_opt_str(table, "pool"),
    )


def _project(value: Any) -> ProjectSpec:
    table = _table(value, _PROJECT_KEYS)
    return ProjectSpec(name=_opt_str(table, "name"), jobs=_opt_int(table, "jobs", 1),
                       checkout=_checkout(table), cache_dir=_opt_str(table, "cache_dir"),
                       default_remote=_opt_str(table, "default_remote"),
                       params_file=_opt_str(table, "params_file"))


def _executor(value: Any) -> ExecutorSpec:
    table = _table(value, _EXECUTOR_KEYS)
    return ExecutorSpec(
        kind=_choice_or(table, "kind", EXECUTOR_KINDS, "local"),
        address=_opt_str(table, "address"), cluster=_opt_choice(table, "cluster", ("local",)),
        workers=_opt_int(table, "workers", 1),
        transfer=_choice_or(table, "transfer", TRANSFER_MODES, "remote"),
        remote=_opt_str(table, "remote"), env=_strs_at(table, "env"),
        local=_strs_at(table, "local"), retries=_int_or(table, "retries", 0, 1),
        insecure=_bool_or(table, "insecure", False),
    )


def _remote(value: Any) -> RemoteSpec:
    table = _table(value, _REMOTE_KEYS)
    return RemoteSpec(url=_str(table.get("url")), endpoint_url=_opt_str(table, "endpoint_url"),
                      region=_opt_str(table, "region"))


def _pool_size(value: Any) -> int:
    return _int(value, 1)


def _file(data: Any) -> FileSpec:
    table = _table(data, _FILE_KEYS)
    variables = table.get("vars", _ABSENT)
    if variables is not _ABSENT and (type(variables) is not dict
                                     or any(type(name) is not str for name in variables)):
        raise _Refused
    return FileSpec(
        project=_section(table, "project", _project),
        remotes=_named(table, "remotes", _remote),
        vars={} if variables is _ABSENT else dict(variables),
        stages=_named(table, "stages", _stage),
        pools=_named(table, "pools", _pool_size),
        executor=_section(table, "executor", _executor),
    )


def _local_project(value: Any) -> LocalProjectSpec:
    table = _table(value, _LOCAL_PROJECT_KEYS)
    return LocalProjectSpec(jobs=_opt_int(table, "jobs", 1), checkout=_checkout(table),
                            cache_dir=_opt_str(table, "cache_dir"),
                            default_remote=_opt_str(table, "default_remote"))


def _local_executor(value: Any) -> LocalExecutorSpec:
    table = _table(value, _LOCAL_EXECUTOR_KEYS)
    return LocalExecutorSpec(kind=_opt_choice(table, "kind", EXECUTOR_KINDS),
                             address=_opt_str(table, "address"),
                             cluster=_opt_choice(table, "cluster", ("local",)),
                             workers=_opt_int(table, "workers", 1),
                             insecure=_opt_bool(table, "insecure"))


def _local_remote(value: Any) -> LocalRemoteSpec:
    table = _table(value, _LOCAL_REMOTE_KEYS)
    return LocalRemoteSpec(url=_opt_str(table, "url"),
                           endpoint_url=_opt_str(table, "endpoint_url"),
                           region=_opt_str(table, "region"), profile=_opt_str(table, "profile"))


def _local_file(data: Any) -> LocalFileSpec:
    table = _table(data, _LOCAL_FILE_KEYS)
    return LocalFileSpec(
        project=_section(table, "project", _local_project),
        remotes=_named(table, "remotes", _local_remote),
        executor=_section(table, "executor", _local_executor),
    )


# ---- entry points -------------------------------------------------------------------------


def accept_file(data: Any) -> FileSpec | None:
    """pivot.toml's raw values if ``data`` is plainly valid; None: the models must judge."""
    try:
        return _file(data)
    except _Refused:
        return None


def accept_local(data: Any) -> LocalFileSpec | None:
    """config.local.toml's raw values if ``data`` is plainly valid; None otherwise."""
    try:
        return _local_file(data)
    except _Refused:
        return None


def from_model(model: Any) -> Any:
    """The plain twin of a validated ``Raw*`` model instance (anything else as it is)."""
    spec = MODEL_SPECS.get(type(model).__name__)
    if spec is None:
        return model
    values: dict[str, Any] = {}
    for name in spec._fields:
        value = getattr(model, name)
        # Models sit directly in a field, or one level down in a list or a table of them.
        if type(value) is list:
            value = [from_model(item) for item in value]
        elif type(value) is dict:
            value = {key: from_model(item) for key, item in value.items()}
        else:
            value = from_model(value)
        values[name] = value
    return spec(**values)


def check_file(data: dict[str, Any], label: str) -> FileSpec:
    """pivot.toml's raw values; a document the checks refuse is judged by the pydantic
    models, whose first problem is raised as one ConfigError(label, key path, problem)."""
    accepted = accept_file(data)
    if accepted is not None:
        return accepted
    from pivotbuild.config_schema import RawFile, validate  # pydantic: only for a doubtful file

    result: FileSpec = from_model(validate(RawFile, data, label))
    return result


def check_local(data: dict[str, Any], label: str) -> LocalFileSpec:
    """config.local.toml's raw values, as ``check_file`` gives pivot.toml's."""
    accepted = accept_local(data)
    if accepted is not None:
        return accepted
    from pivotbuild.config_schema import RawLocalFile, validate

    result: LocalFileSpec = from_model(validate(RawLocalFile, data, label))
    return result


__all__ = [
    "MODEL_SPECS", "Axis", "ExecutorSpec", "FileSpec", "GlobSpec", "LocalExecutorSpec",
    "LocalFileSpec", "LocalProjectSpec", "LocalRemoteSpec", "OutSpec", "ProjectSpec",
    "RemoteSpec", "StageSpec", "accept_file", "accept_local", "as_dict", "check_file",
    "check_local", "from_model",
]
