"""The validated models of a loaded project (Project, Stage, Out, Remote, ExecutorSettings).

config.py builds them from pivot.toml (config_schema.py's pydantic models check the raw
file first); projectcache.py keeps them between runs. Every path in them is project-relative
and normalised; a ``Stage`` is one runnable instance (a matrix / foreach / glob table expands
to several, sharing ``base``).

They are plain dataclasses, not pydantic models, on purpose: everything after loading
(planning, running, committing) only reads them, and a command whose pivot.toml did not
change takes them from the project cache without importing pydantic at all (the import and
the model classes cost more than an incremental build's own work). Import them from here;
``pivotbuild.config`` re-exports them but loads the validator.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pivotbuild.paths import CHECKOUT_METHODS, DEFAULT_CACHE_DIR, PARAMS_FILE, STATE_DIR

STAGE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
CONSOLE_POOL = "console"  # the built-in pool of size 1 that gets the terminal (SPEC §9)
EXECUTOR_KINDS = ("local", "dask")
TRANSFER_MODES = ("remote", "shared")


@dataclass(frozen=True, kw_only=True, slots=True)
class Out:
    """One declared output of a stage."""

    path: str  # project-relative, normalised
    cache: bool = True  # False: hashed and locked, but never stored in the cache
    persist: bool = False  # True: not deleted before the stage runs
    # SPEC §11; neither enters the input hash. A list names files inside a directory out
    # (project-relative, normalised); a plot table has x, y (str or list), title, template.
    metric: bool | list[str] = False
    plot: bool | list[str] | dict[str, Any] = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Stage:
    """One runnable stage: a plain stage table, or one instance of a matrix/foreach table."""

    name: str
    cmd: list[str]
    deps: list[str] = field(default_factory=list)  # project-relative, normalised
    outs: list[Out] = field(default_factory=list)
    params: list[str] = field(default_factory=list)  # dotted keys of params.toml
    param_values: dict[str, Any] = field(default_factory=dict)
    wdir: str = "."  # project-relative; "." is the root
    desc: str | None = None
    always_changed: bool = False
    frozen: bool = False
    base: str = ""  # the [stages.X] table it came from; defaults to name
    depfile: str | None = None  # project-relative, normalised (SPEC §9)
    discover: list[str] = field(default_factory=list)  # only "python" (SPEC §13)
    pool: str | None = None  # a [pools] name or "console"

    def __post_init__(self) -> None:
        # Hand-built stages (tests, other modules) need not spell out base = name.
        if not self.base:
            object.__setattr__(self, "base", self.name)


@dataclass(frozen=True, kw_only=True, slots=True)
class Remote:
    """A place to push cache objects to and pull them from."""

    url: str
    endpoint_url: str | None = None  # e.g. a MinIO endpoint for s3:// urls
    region: str | None = None
    profile: str | None = None  # credentials profile; only from config.local.toml


@dataclass(frozen=True, kw_only=True, slots=True)
class ExecutorSettings:
    """The ``[executor]`` table (SPEC §12), merged with config.local.toml's."""

    kind: Literal["local", "dask"] = "local"
    address: str | None = None  # scheduler address (tcp://, tls://, ...)
    cluster: Literal["local"] | None = None  # "local": start a loopback LocalCluster
    workers: int | None = None  # with cluster = "local"
    transfer: Literal["remote", "shared"] = "remote"
    remote: str | None = None  # a [remotes] name; resolved to project.default_remote if unset
    env: list[str] = field(default_factory=list)  # environment variable names forwarded
    local: list[str] = field(default_factory=list)  # stage (or base) names run on the client
    retries: int = 1  # re-runs after a worker is lost
    insecure: bool = False  # allow a non-loopback tcp:// address


@dataclass(kw_only=True, slots=True)
class Project:
    """A loaded, validated project: everything pivot.toml and its params files say."""

    root: Path
    name: str | None = None
    jobs: int | None = None
    checkout: list[str] = field(default_factory=lambda: list(CHECKOUT_METHODS))
    cache_dir: Path = Path()  # absolute once validated; Path() means root/.pivotbuild/cache
    default_remote: str | None = None
    remotes: dict[str, Remote] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)  # the default params file's content
    stages: dict[str, Stage] = field(default_factory=dict)
    pools: dict[str, int] = field(default_factory=lambda: {CONSOLE_POOL: 1})
    params_file: str = PARAMS_FILE  # the default params file, project-relative
    # Project-relative files read to expand the config (pivot.toml, every params file read),
    # and every directory a glob walked: what a no-op snapshot must stat to stay valid.
    sources: tuple[str, ...] = ()
    glob_dirs: tuple[str, ...] = ()
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)

    def __post_init__(self) -> None:
        self.pools.setdefault(CONSOLE_POOL, 1)
        # Downstream code compares and joins these; relative ones would silently depend on cwd,
        # and a root reached through a symlink would fail containment checks on real paths.
        self.root = Path(self.root).resolve()
        self.cache_dir = Path(self.cache_dir)
        if self.cache_dir == Path():
            self.cache_dir = self.root / DEFAULT_CACHE_DIR
        elif not self.cache_dir.is_absolute():
            self.cache_dir = Path(os.path.abspath(self.root / self.cache_dir))

    @property
    def state_dir(self) -> Path:
        """The project's ``.pivotbuild/`` directory (it may not exist yet)."""
        return self.root / STATE_DIR


__all__ = [
    "CONSOLE_POOL", "EXECUTOR_KINDS", "STAGE_NAME_RE", "TRANSFER_MODES", "ExecutorSettings",
    "Out", "Project", "Remote", "Stage",
]
