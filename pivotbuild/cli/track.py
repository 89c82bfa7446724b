"""The `track` command: store data no stage produces and record it in ``PATH.pvt`` (tracked.py)."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from pivotbuild.cli.common import Context, is_quiet, opened, say, wait_option


@click.command("track")
@click.argument("paths", nargs=-1, required=True)
@wait_option
@click.pass_obj
def track_command(obj: Context | None, paths: tuple[str, ...], wait: float | None) -> None:
    """Store files or directories no stage produces in the cache and record each in PATH.pvt.

    PATH is added to the .gitignore of its directory; commit PATH.pvt to git instead. Tracking
    a path again records its new content. A stage output, anything in .pivotbuild or .git,
    and a path outside the project cannot be tracked (exit 2)."""
    with opened(write=True, wait=wait) as pipeline:
        from pivotbuild import snapshot, tracked

        rel = [tracked.project_path(pipeline.root, p) for p in paths]
        done = tracked.track(pipeline.project, rel, pipeline.hasher, pipeline.cache)
        snapshot.forget(str(pipeline.root))  # the no-op fast path knows no tracked paths yet
    if is_quiet(obj):
        return
    for item in done:
        record = item.record
        what = ("unchanged" if not item.changed else
                "new content recorded" if item.previous is not None else "tracked")
        count = (f", {record.nfiles} file{'' if record.nfiles == 1 else 's'}"
                 if record.nfiles is not None else "")
        say(f"{record.path}: {what} in {record.file} ({record.hash}{count})")
    changed = [item.record for item in done if item.changed]
    if changed:
        files = sorted({r.file for r in changed} | {
            (r.path.rpartition("/")[0] + "/" if "/" in r.path else "") + ".gitignore"
            for r in changed})
        say(f"To record this in git: {_git_add(pipeline.root, files)}", err=True)


def _git_add(root: Path, files: list[str]) -> str:
    """A git add command line a user can paste: names shell-quoted, and run in the project
    root (``git -C ROOT``) when the user's directory is another one (the names are
    project-relative; after ``pivotbuild -C DIR`` the shell is still elsewhere)."""
    quoted = " ".join(shlex.quote(name) for name in files)
    ctx = click.get_current_context(silent=True)
    moved = ctx is not None and ctx.find_root().params.get("directory") is not None
    try:
        here = not moved and Path.cwd().resolve() == root.resolve()
    except OSError:
        here = False
    return f"git add {quoted}" if here else f"git -C {shlex.quote(str(root))} add {quoted}"


COMMANDS = (track_command,)
