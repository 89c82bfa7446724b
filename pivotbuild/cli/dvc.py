"""The ``import-dvc`` command: switch a DVC project to pivotbuild (dvc/importer.py does it)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pivotbuild.cli.common import Context, count, error, is_quiet, jobs_option, say, wait_option
from pivotbuild.errors import EXIT_FAILED


@click.command("import-dvc")
@click.option("--force", is_flag=True, help="Replace an existing pivot.toml.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
@jobs_option
@wait_option
@click.pass_obj
def import_dvc_command(obj: Context | None, force: bool, as_json: bool, jobs: int | None,
                       wait: float | None) -> None:
    """Convert dvc.yaml (with params, dvc.lock, .dvc/config) into pivot.toml.

    Then every stage whose workspace matches dvc.lock is committed, so 'pivotbuild repro'
    runs nothing for it; the others stay stale and are listed. Data added with 'dvc add'
    becomes tracked paths (PATH.pvt) when it matches its .dvc file. What cannot be
    converted is listed with the reason, and the command then exits 1. DVC's own files
    are left in place."""
    from pivotbuild.dvc.importer import find_dvc_root, import_dvc

    root = find_dvc_root(Path.cwd())
    result = import_dvc(root, force=force, wait=wait, jobs=jobs or 0)
    conv = result.conversion
    if as_json:
        say(json.dumps(result.to_dict(), indent=2))
    else:
        quiet = is_quiet(obj)
        if not quiet:
            say(f"Wrote pivot.toml from dvc.yaml ({count(len(conv.checks), 'stage', 'stages')})")
            for dvc_name, name in result.renamed.items():
                say(f"  DVC stage {dvc_name} is '{name}'")
            if result.committed:
                say(f"Committed {count(len(result.committed), 'stage', 'stages')} that match "
                    f"dvc.lock: {', '.join(result.committed)}")
            for path in result.tracked:
                say(f"Tracked {path} (as dvc add did): {path}.pvt")
            for note in conv.notes:
                say(f"note: {note}", err=True)
        for name, reasons in result.stale:
            say(f"stale: {name}: {'; '.join(reasons)}")
        for path, reason in result.not_tracked:
            say(f"not tracked: {path}: {reason}")
    for stage, problem in result.failed:
        error(f"stage '{stage}': {problem}")
    for path, problem in result.track_failed:
        error(f"{path}: not tracked: {problem}")
    for item in conv.not_converted:
        error(f"not converted: {item.what}: {item.reason}")
    if not result.ok:
        if conv.not_converted:
            error(f"import-dvc: {count(len(conv.not_converted), 'item', 'items')} could not be "
                  "converted (listed above); everything else was")
        raise SystemExit(EXIT_FAILED)


COMMANDS = (import_dvc_command,)
