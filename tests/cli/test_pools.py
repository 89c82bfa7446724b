"""Pools (SPEC §9): `[pools] NAME = N` caps how many of its stages run at once, besides -j;
the built-in `console` pool gives its stage the terminal, unprefixed, with nothing printed
over it while it runs."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.cli.conftest import run
from tests.ptyrun import run_in_pty

# A pooled stage: takes a mutex (mkdir is atomic) for a while, and notes an overlap if
# another stage of its pool already holds it; appends to runs.log once per run.
POOLED = ('mkdir held 2>/dev/null || echo {name} >> overlaps; echo {name} >> runs.log; '
          'sleep 0.3; rmdir held 2>/dev/null; echo {name} > {name}.o')


def test_a_pool_of_one_runs_one_stage_at_a_time_while_other_stages_run_beside(project: Path):
    text = "[pools]\nlink = 1\n\n"
    for i in range(4):
        name = f"link{i}"
        text += (f'[stages.{name}]\ncmd = "{POOLED.format(name=name)}"\n'
                 f'outs = ["{name}.o"]\npool = "link"\n\n')
    # Not in the pool: waits until a pooled stage holds the mutex, so it ran beside one.
    text += ('[stages.free]\ncmd = "i=0; while [ ! -d held ] && [ $i -lt 600 ]; do '
             'sleep 0.05; i=$((i+1)); done; [ -d held ] && echo beside > free.o"\n'
             'outs = ["free.o"]\n')
    (project / "pivot.toml").write_text(text)
    result = run(["repro", "-j", "4"], project)
    assert result.code == 0, result.err
    assert not (project / "overlaps").exists()
    assert sorted((project / "runs.log").read_text().split()) == [f"link{i}" for i in range(4)]
    assert (project / "free.o").read_text() == "beside\n"
    # and a second repro runs nothing
    assert run(["repro", "-j", "4"], project).code == 0
    assert len((project / "runs.log").read_text().split()) == 4


def test_a_console_stage_gets_the_terminal_unprefixed_and_nothing_interleaves(project: Path):
    """Under a terminal, -j 2 with two independent stages: the console stage sees a terminal
    on stdin and stdout, reads what is typed, and prints unprefixed; the other stage prints
    (prefixed) while the console stage runs, but its line only appears after the console
    stage's last line."""
    (project / "pivot.toml").write_text(
        '[stages.ask]\n'
        'cmd = "[ -t 0 ] && [ -t 1 ] && echo ask: on a terminal; read answer; '
        'echo ask: got $answer; touch ask.started; i=0; '
        'while [ ! -e other.o ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; '
        'echo ask: end; echo $answer > ask.o"\n'
        'outs = ["ask.o"]\npool = "console"\n\n'
        '[stages.other]\n'
        'cmd = "i=0; while [ ! -e ask.started ] && [ $i -lt 600 ]; do sleep 0.05; '
        'i=$((i+1)); done; echo other line; echo done > other.o"\n'
        'outs = ["other.o"]\n')
    code, text = run_in_pty([sys.executable, "-m", "pivotbuild", "repro", "-j", "2"], project,
                            send=b"yes\n")
    assert code == 0, text
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert "ask: on a terminal" in lines, text
    assert "ask: got yes" in lines and "ask: end" in lines
    assert "[other] other line" in lines  # several stages at once: prefixed
    assert lines.index("ask: end") < lines.index("[other] other line"), text
    assert (project / "ask.o").read_text() == "yes\n"
    assert (project / "other.o").exists()


def test_a_console_stage_under_json_keeps_stdout_for_the_document(project: Path):
    """With --json, stage output goes to stderr: a console stage's stdout too, so stdout
    holds only the JSON document."""
    (project / "pivot.toml").write_text(
        '[stages.show]\ncmd = "echo shown; echo x > show.o"\nouts = ["show.o"]\n'
        'pool = "console"\n')
    result = run(["repro", "--json"], project)
    assert result.code == 0, result.err
    import json

    doc = json.loads(result.out)
    assert doc["ok"] and doc["stages"][0]["name"] == "show"
    assert "shown" in result.err.splitlines()
