"""compdb: a JSON compilation database (compile_commands.json) from the stages that compile."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pivotbuild.config import Project, Stage


def compdb_entries(project: Project, stages: Iterable[Stage]) -> tuple[list[dict[str, str]],
                                                                       list[str]]:
    """One compilation-database entry per stage with a dep and an out: ``directory`` (the
    absolute wdir), ``command`` (the expanded cmd: of several, the first that names the
    file, else the first that names the output; a stage with neither is left out),
    ``file`` (the first declared dep) and ``output`` (the first out), both relative to
    ``directory``. The second list: stages left out, and why."""
    entries: list[dict[str, str]] = []
    skipped: list[str] = []
    for stage in stages:
        if not stage.deps or not stage.outs:
            missing = "deps" if not stage.deps else "outs"
            skipped.append(f"stage '{stage.name}' has no {missing}: left out of compdb")
            continue
        directory = os.path.normpath(os.path.join(project.root, stage.wdir))
        source = os.path.relpath(os.path.join(project.root, stage.deps[0]), directory)
        output = os.path.relpath(os.path.join(project.root, stage.outs[0].path), directory)
        command = _command(stage.cmd, source, output)
        if command is None:
            skipped.append(f"no command of stage '{stage.name}' names its file {source!r} or "
                           f"its output {output!r}: left out of compdb")
            continue
        entries.append({"directory": directory, "command": command,
                        "file": source, "output": output})
    return entries, skipped


def _command(cmds: list[str], source: str, output: str) -> str | None:
    """The first command naming ``source`` as a word, else the first naming ``output``, else
    None (a 'mkdir -p build' is no compile command for clangd)."""
    split: list[list[str]] = []
    for cmd in cmds:
        try:
            split.append(shlex.split(cmd))
        except ValueError:
            split.append(cmd.split())
    for wanted in (source, output):
        for cmd, words in zip(cmds, split, strict=True):
            if wanted in words:
                return cmd
    return None


__all__ = ["compdb_entries"]
