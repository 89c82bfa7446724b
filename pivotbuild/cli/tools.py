"""Small commands around the pipeline: ``schema``, ``completion`` and ``list``.

- ``schema`` prints the JSON Schema of pivot.toml (editorschema.py makes it). Editors read
  it through a first line ``#:schema ./pivot.schema.json`` (taplo, and VS Code's Even
  Better TOML, which uses taplo).
- ``completion SHELL`` prints click's completion script for bash, zsh or fish. The script
  calls pivotbuild back with ``_PIVOTBUILD_COMPLETE`` set; ``complete`` answers that (cli's
  ``_invoke`` routes to it). Stage arguments complete stage names read from pivot.toml with
  tomlread only (no pydantic, no graph), so a completion costs a few milliseconds.
- ``list`` prints every stage (matrix and foreach instances expanded) with its ``desc``.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem

from pivotbuild import tomlread
from pivotbuild.cli.common import Context, say

PROG = "pivotbuild"
COMPLETE_VAR = "_PIVOTBUILD_COMPLETE"
SHELLS = ("bash", "zsh", "fish")
#: Arguments that take stage names (or output paths) in the commands: they complete stages.
STAGE_ARGUMENTS = frozenset({"targets", "stages", "stage"})

# ---- schema -------------------------------------------------------------------------------


@click.command("schema")
def schema_command() -> None:
    """Print the JSON Schema of pivot.toml, for editors.

    Save it beside pivot.toml and make this the first line of pivot.toml:

    \b
    #:schema ./pivot.schema.json

    taplo and VS Code's Even Better TOML then check keys and types as you type and complete
    key names."""
    from pivotbuild.editorschema import pivot_schema

    say(json.dumps(pivot_schema(), indent=2))


# ---- completion ---------------------------------------------------------------------------


def _stage_names(start: Path) -> list[str]:
    """Stage names from the pivot.toml at or above ``start``: plain tables, and the
    instances of scalar matrix / foreach tables (their base names too); [] on any problem."""
    from pivotbuild.paths import find_project_root

    root = find_project_root(start.resolve())
    if root is None:
        return []
    try:
        stages = tomlread.loads((root / "pivot.toml").read_text()).get("stages", {})
    except (OSError, UnicodeDecodeError, tomlread.TOMLDecodeError):
        return []
    names: list[str] = []
    for base, table in stages.items() if isinstance(stages, dict) else []:
        names.append(str(base))
        if not isinstance(table, dict):
            continue
        axes: dict[str, Any] = {}
        if isinstance(table.get("foreach"), list):
            axes = {"": table["foreach"]}
        elif isinstance(table.get("matrix"), dict):
            axes = table["matrix"]
        if axes and all(isinstance(v, list) for v in axes.values()):
            from pivotbuild.template import instances

            with contextlib.suppress(Exception):  # a bad table completes as its base name
                names.extend(name for name, _ in instances(
                    str(base), None if "" in axes else axes, axes.get("") if "" in axes else None))
    return list(dict.fromkeys(names))


def complete_stages(ctx: click.Context, param: click.Parameter, incomplete: str
                    ) -> list[CompletionItem]:
    """Stage names starting with ``incomplete``; paths when none does or it has a '/'."""
    start = Path.cwd()
    top = ctx.find_root().params.get("directory")
    if top:
        start = Path(top)
    names = [] if "/" in incomplete else [
        n for n in _stage_names(start) if n.startswith(incomplete)]
    if names:
        return [CompletionItem(n) for n in names]
    return [CompletionItem(incomplete, type="file")]


def add_stage_completion(group: click.Group) -> None:
    """Make every command's stage argument (STAGE_ARGUMENTS) complete stage names."""
    for command in group.commands.values():
        for param in command.params:
            if isinstance(param, click.Argument) and param.name in STAGE_ARGUMENTS:
                param._custom_shell_complete = complete_stages  # click's hook for this


def complete(group: click.Group) -> int:
    """Answer the completion request the shell script makes (``_PIVOTBUILD_COMPLETE`` set)."""
    from click.shell_completion import shell_complete

    return shell_complete(group, {}, PROG, COMPLETE_VAR, os.environ[COMPLETE_VAR])


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion_command(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish).

    \b
    bash: eval "$(pivotbuild completion bash)"         (in ~/.bashrc)
    zsh:  eval "$(pivotbuild completion zsh)"          (in ~/.zshrc)
    fish: pivotbuild completion fish > ~/.config/fish/completions/pivotbuild.fish

    Commands, options and stage names complete."""
    from click.shell_completion import get_completion_class

    root = ctx.find_root().command
    cls = get_completion_class(shell)
    if cls is None or not isinstance(root, click.Group):  # click knows the three shells
        raise click.UsageError(f"no completion for {shell}")
    say(cls(root, {}, PROG, COMPLETE_VAR).source())


# ---- list ---------------------------------------------------------------------------------


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
@click.pass_obj
def list_command(obj: Context | None, as_json: bool) -> None:
    """List the stages (matrix and foreach instances expanded) with their desc."""
    from pivotbuild.cli.common import project_root
    from pivotbuild.projectcache import load_project

    project = load_project(project_root())
    stages = [{"name": s.name, "desc": s.desc} for s in project.stages.values()]
    if as_json:
        say(json.dumps({"stages": stages}, indent=2))
        return
    width = max((len(s["name"] or "") for s in stages), default=0)
    for s in stages:
        say(f"{s['name']:<{width}}  {s['desc']}" if s["desc"] else str(s["name"]))


COMMANDS = (schema_command, completion_command, list_command)
