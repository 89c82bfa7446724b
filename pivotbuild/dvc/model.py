"""What a DVC import produces: the conversion, per-stage lock checks, tracked paths, leftovers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pivotbuild.dvc.hashes import LockedPath, Md5Memo, check_path


@dataclass(frozen=True)
class NotConverted:
    """Something in the DVC project that pivot.toml does not carry, and why."""

    what: str  # where it is: "dvc.yaml: artifacts.classifier", "data/shared.csv.dvc"
    reason: str

    def __str__(self) -> str:
        return f"{self.what}: {self.reason}"


@dataclass(frozen=True)
class StageCheck:
    """One pivotbuild stage and what dvc.lock recorded for the DVC stage it came from."""

    stage: str  # pivotbuild's name
    dvc_stage: str  # DVC's name (dvc.yaml / dvc.lock)
    deps: tuple[LockedPath, ...]
    outs: tuple[LockedPath, ...]
    params: dict[str, Any]  # pivotbuild params key → the value dvc.lock recorded
    problems: tuple[str, ...]  # why it is stale whatever the workspace holds
    frozen: bool = False
    always_changed: bool = False


@dataclass(frozen=True)
class TrackedPath:
    """A path ``dvc add`` tracks: it becomes a pivotbuild tracked path (``.pvt``)."""

    path: str  # project-relative
    dvc_file: str  # the project-relative ``.dvc`` file that recorded it
    entry: LockedPath


@dataclass
class Conversion:
    """The result of ``convert``: pivot.toml text and everything a caller must act on.

    ``not_converted`` non-empty means the import is incomplete (the command exits 1);
    ``notes`` are converted things with a caveat (values copied, credentials left out).
    """

    toml: str = ""
    tracked: list[TrackedPath] = field(default_factory=list)
    not_converted: list[NotConverted] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checks: list[StageCheck] = field(default_factory=list)

    def skip(self, what: str, reason: str) -> None:
        item = NotConverted(what, reason)
        if item not in self.not_converted:
            self.not_converted.append(item)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def check_stage(root: Path, check: StageCheck, memo: Md5Memo | None = None) -> list[str]:
    """Every reason the workspace does not match what dvc.lock recorded; empty when it does."""
    memo = memo or Md5Memo()
    found = list(check.problems)
    for entry in (*check.deps, *check.outs):
        problem = check_path(root, entry, memo)
        if problem:
            found.append(problem)
    return found


def check_tracked(root: Path, tracked: TrackedPath, memo: Md5Memo | None = None) -> str | None:
    """None when the workspace holds what the ``.dvc`` file recorded, else why not."""
    return check_path(root, tracked.entry, memo)
