"""report.py: the one line writer, the reporter's lines, the transfer bar's API."""

from __future__ import annotations

import io
import threading

from pivotbuild import report
from pivotbuild.execute import StageResult
from pivotbuild.plan import FAILED, NOT_RUN, OK, RESTORE, RUN, RUN_CACHE, SKIP


def test_lines_from_many_threads_never_glue():
    stream = io.StringIO()
    writer = report.LineWriter()

    def write(n: int) -> None:
        for i in range(200):
            writer.line(f"{n}:{i}", stream)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = stream.getvalue().splitlines()
    assert sorted(lines) == sorted(f"{n}:{i}" for n in range(4) for i in range(200))


def test_an_attached_display_gets_the_terminal_lines_until_detached(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    writer = report.LineWriter()
    shown: list[str] = []
    writer.attach(shown.append)
    writer.line("above the bar", err)
    other = io.StringIO()
    writer.line("to a file", other)  # not the terminal: written as it is
    writer.detach(lambda text: None)  # not the attached one: nothing changes
    writer.line("still above", err)
    writer.detach(shown.append)
    writer.line("plain again", err)
    assert shown == ["above the bar", "still above"]
    assert other.getvalue() == "to a file\n" and err.getvalue() == "plain again\n"


def test_stage_lines_are_prefixed_when_asked():
    out = io.StringIO()
    reporter = report.Reporter()
    reporter.stage_lines("train", True, out)("epoch 1\n")
    reporter.stage_lines("train", False, out)("epoch 2")
    assert out.getvalue() == "[train] epoch 1\nepoch 2\n"


def test_the_reporter_says_what_starts_fails_and_the_summary(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    reporter = report.Reporter(verbose=1)
    for action in (RUN, RESTORE, RUN_CACHE):
        reporter.stage_started("s", action)
    reporter.stage_finished(StageResult("s", RUN, FAILED, error="command exited with code 2"))
    reporter.stage_finished(StageResult("u", SKIP, OK))
    results = [StageResult("a", RUN, OK), StageResult("b", SKIP, OK),
               StageResult("c", RESTORE, OK), StageResult("d", RUN_CACHE, OK),
               StageResult("e", RUN, FAILED), StageResult("f", RUN, NOT_RUN)]
    reporter.finish(results, 1.5)
    assert err.getvalue().splitlines() == [
        "Running stage 's'",
        "Restoring outputs of 's' from the cache",
        "Restoring 's' from the run cache",
        "pivotbuild: error: stage 's' failed: command exited with code 2",
        "Stage 'u' is up to date",
        "pivotbuild: 1 ran, 1 skipped, 2 restored, 1 failed, 1 not run in 1.50s",
    ]
    quiet = report.Reporter(quiet=True)
    quiet.stage_started("s", RUN)
    quiet.finish(results, 1.0)
    assert err.getvalue().count("\n") == 6


def test_warnings_and_errors_never_show_a_urls_secret(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    report.warn("cannot reach s3://user:hunter2@host/bucket")
    report.error("failed")
    text = err.getvalue()
    assert "hunter2" not in text and text.startswith("pivotbuild: warning: ")
    assert text.endswith("pivotbuild: error: failed\n")


def test_a_progress_bar_not_shown_does_nothing(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)  # not a terminal: not shown by default
    with report.Progress("push → origin") as bar:
        bar.add(10)
        bar.advance(3)
    assert err.getvalue() == ""
