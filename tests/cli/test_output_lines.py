"""Parallel stages print through one writer: every line of stdout and stderr is whole, even
with both streams in one pipe (SPEC §4 progress and stage output; issue 11 hole 12)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

STAGES = 40
LINES = 60

STAGE_LINE = re.compile(r"\[s(\d+)\] s\1 line (\d+) [a-z]+$")
REPORTER_LINE = re.compile(
    r"Running stage 's\d+'$"
    r"|stage 's\d+' run: never run$"
    r"|pivotbuild: \d+ ran, \d+ failed in \d+\.\d+s$"
)


def many_printing_stages(root: Path) -> Path:
    text = ""
    for i in range(STAGES):
        # Lines of different lengths, written by the shell one write() at a time.
        text += (f'[stages.s{i}]\ncmd = "i=0; while [ $i -lt {LINES} ]; do '
                 f'echo s{i} line $i {"x" * (i % 7 + 1)}; i=$((i+1)); done; '
                 f'echo done > o{i}"\nouts = ["o{i}"]\n\n')
    (root / "pivot.toml").write_text(text)
    return root


def run_merged(root: Path, *args: str) -> list[str]:
    """Run pivotbuild with stdout and stderr in one pipe; its lines."""
    proc = subprocess.run([sys.executable, "-m", "pivotbuild", *args], cwd=root,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout
    return proc.stdout.splitlines()


def check_whole(lines: list[str], reporter_lines: int) -> None:
    seen: dict[int, list[int]] = {}
    others = []
    for line in lines:
        match = STAGE_LINE.fullmatch(line)
        if match:
            seen.setdefault(int(match.group(1)), []).append(int(match.group(2)))
        elif REPORTER_LINE.fullmatch(line):
            others.append(line)
        else:
            raise AssertionError(f"a line that is not whole: {line!r}")
    # Every stage's lines, each once and in its order; every reporter line.
    assert seen == {i: list(range(LINES)) for i in range(STAGES)}
    assert len(others) == reporter_lines


def test_parallel_stage_and_progress_lines_never_glue(project):
    many_printing_stages(project)
    lines = run_merged(project, "repro", "-j", "8", "--explain")
    # Per stage "Running stage" and the --explain line, then one summary line.
    check_whole(lines, 2 * STAGES + 1)


def test_json_mode_stage_lines_on_stderr_stay_whole(project):
    """With --json, stage output goes to stderr, and the document to stdout."""
    many_printing_stages(project)
    proc = subprocess.run([sys.executable, "-m", "pivotbuild", "repro", "-j", "8", "--json"],
                          cwd=project, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    check_whole(proc.stderr.splitlines(), 0)
    assert '"ok": true' in proc.stdout
