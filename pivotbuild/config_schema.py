"""pivot.toml's raw schema as pydantic models: they judge and word what config_check refuses.

The ``Raw*`` pydantic models are strict (unknown keys and wrong types are errors, never
coerced); ``validate`` checks a parsed document against one and turns pydantic's first error
into one ``ConfigError(file, key path, problem)`` line. A valid document never comes here:
config_check.py accepts it by hand-written checks (pydantic costs ~150 ms to import and
build), and passes everything else to these models, imported only then, so every message
stays theirs. They remain the schema's source: ``pivotbuild schema`` prints their JSON
Schema, and tests/test_config_check.py fails when config_check's raw values drift from them.
The file readers moved to config_read.py (re-exported here).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from pivotbuild.config_models import EXECUTOR_KINDS, TRANSFER_MODES
from pivotbuild.config_read import PARAMS_EXTENSIONS, read_params, read_toml, unrecordable
from pivotbuild.errors import ConfigError, key_path
from pivotbuild.paths import CHECKOUT_METHODS
from pivotbuild.template import toml_type
from pivotbuild.urls import redact_text

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


class RawGlob(BaseModel):
    """``{ glob = PATTERN, exclude = [PATTERN...] }``: a foreach or a matrix axis (SPEC §9)."""

    model_config = _STRICT
    glob: str
    exclude: list[str] = []


# Pydantic adds a union member's tag to an error's location; _translate drops these.
_TAGS = ("<values>", "<glob>")


def _axis_tag(value: Any) -> str | None:
    # A table without 'glob' (a DVC-style foreach over a dict, or a typo such as 'glb') is
    # refused as a whole rather than as "glob: required key is missing".
    if isinstance(value, list):
        return "<values>"
    return "<glob>" if isinstance(value, dict) and ("glob" in value or "exclude" in value) \
        else None


# A foreach, or one matrix axis: an array of scalars, or a glob table.
_Axis = Annotated[
    Annotated[list[_Scalar], Tag("<values>")] | Annotated[RawGlob, Tag("<glob>")],
    Discriminator(_axis_tag, custom_error_type="axis_type",
                  custom_error_message="expected an array of values or a table "
                  "{ glob = PATTERN }"),
]


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


@dataclasses.dataclass(frozen=True)
class _Choice(BeforeValidator):
    """A validator accepting a fixed set of strings, shown as an ``enum`` in ``schema``."""

    allowed: tuple[str, ...] = ()

    def __get_pydantic_json_schema__(self, core: Any, handler: Any) -> Any:
        schema = handler(core)
        schema["enum"] = list(self.allowed)
        return schema


def _choice(*allowed: str) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, str) and value in allowed:
            return value
        raise PydanticCustomError("choice", "expected one of {allowed}, got {got}",
                                  {"allowed": ", ".join(repr(a) for a in allowed),
                                   "got": _describe(value)})
    return _Choice(check, allowed=allowed)


class RawOut(BaseModel):
    model_config = _STRICT
    path: str
    cache: bool = True
    persist: bool = False
    metric: Annotated[Any, BeforeValidator(lambda v: _flag(v, tables=False))] = False
    plot: Annotated[Any, BeforeValidator(lambda v: _flag(v, tables=True))] = False


class RawStage(BaseModel):
    model_config = _STRICT
    cmd: Annotated[list[str], BeforeValidator(_as_cmd_list)]
    # default_factory: pydantic deep-copies a [] default for every one of 5,000 stages.
    deps: list[str] = Field(default_factory=list)
    outs: list[Annotated[RawOut, BeforeValidator(_as_out_table)]] = Field(default_factory=list)
    params: list[str] = Field(default_factory=list)
    wdir: str = "."
    desc: str | None = None
    always_changed: bool = False
    frozen: bool = False
    matrix: dict[str, _Axis] | None = None
    foreach: _Axis | None = None
    depfile: str | None = None
    discover: list[Annotated[str, _choice("python")]] = Field(default_factory=list)
    pool: str | None = None


class RawProject(BaseModel):
    model_config = _STRICT
    name: str | None = None
    jobs: Annotated[int, Field(ge=1)] | None = None
    checkout: list[Literal["reflink", "hardlink", "copy"]] | None = None
    cache_dir: str | None = None
    default_remote: str | None = None
    params_file: str | None = None


class RawExecutor(BaseModel):
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


class RawLocalExecutor(BaseModel):
    model_config = _STRICT
    kind: Annotated[str, _choice(*EXECUTOR_KINDS)] | None = None
    address: str | None = None
    cluster: Annotated[str, _choice("local")] | None = None
    workers: Annotated[int, Field(ge=1)] | None = None
    insecure: bool | None = None


class RawRemote(BaseModel):
    model_config = _STRICT
    url: str
    endpoint_url: str | None = None
    region: str | None = None


class RawFile(BaseModel):
    model_config = _STRICT
    project: RawProject = RawProject()
    remotes: dict[str, RawRemote] = {}
    vars: dict[str, Any] = {}
    stages: dict[str, RawStage] = {}
    pools: dict[str, Annotated[int, Field(ge=1)]] = {}
    executor: RawExecutor = RawExecutor()


class RawLocalProject(BaseModel):
    model_config = _STRICT
    jobs: Annotated[int, Field(ge=1)] | None = None
    checkout: list[Literal["reflink", "hardlink", "copy"]] | None = None
    cache_dir: str | None = None
    default_remote: str | None = None


class RawLocalRemote(BaseModel):
    model_config = _STRICT
    url: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None


class RawLocalFile(BaseModel):
    model_config = _STRICT
    project: RawLocalProject = RawLocalProject()
    remotes: dict[str, RawLocalRemote] = {}
    executor: RawLocalExecutor = RawLocalExecutor()


# ---------------------------------------------------------------------------------------------
# Translating pydantic's errors
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


def translate(file: str, error: ValidationError) -> ConfigError:
    """Turn the first pydantic error into one ConfigError line with a TOML key path."""
    first = error.errors()[0]
    # BeforeValidator/function wrappers never add loc parts; the one union (_Axis) adds its
    # member's tag, which is dropped, so every remaining part is a real key or index.
    loc = tuple(part for part in first["loc"]
                if isinstance(part, (str, int)) and part not in _TAGS)
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
    elif kind == "axis_type":
        got = (f"a table without 'glob' (keys: {', '.join(map(repr, value))})"
               if isinstance(value, dict) and value else _describe(value))
        problem = f"{first['msg']}, got {got}"
    else:
        problem = first["msg"].splitlines()[0]
    return ConfigError(file, where, problem)


def validate(model: type[BaseModel], data: dict[str, Any], label: str) -> Any:
    """``model.model_validate(data)``; a validation error becomes one ConfigError(label, ...)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise translate(label, exc) from None


__all__ = [
    "PARAMS_EXTENSIONS", "RawExecutor", "RawFile", "RawGlob", "RawLocalExecutor", "RawLocalFile",
    "RawLocalProject", "RawProject", "RawStage", "read_params", "read_toml", "translate",
    "unrecordable", "validate",
]
