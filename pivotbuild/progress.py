"""Live progress on a terminal (rich): what is running, done and left.

When stderr is not a terminal nothing fancy happens: the plain Reporter prints
one line per stage started and one summary line. Either way every line goes
through the one line writer (execute.LINES); while the bar is shown, the writer
hands the lines for the terminal to rich, which prints them above it.
"""

from __future__ import annotations

import sys
import threading

from pivotbuild.execute import LINES, Reporter, StageResult


class LiveReporter(Reporter):
    """A progress bar on stderr with the running stages, above which lines scroll."""

    def __init__(self, verbose: int = 0, quiet: bool = False, explain: bool = False) -> None:
        super().__init__(verbose, quiet, explain)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            SpinnerColumn(), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=Console(stderr=True), transient=True,
            redirect_stdout=False,  # stage output stays on stdout unless that is the terminal
        )
        self._running: list[str] = []
        self._lock = threading.Lock()
        self._task = None

    def _show(self, text: str) -> None:
        self._progress.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def start(self, total: int) -> None:
        self._task = self._progress.add_task("", total=total)
        self._progress.start()
        LINES.attach(self._show)

    def _describe(self) -> None:
        text = "running: " + ", ".join(self._running) if self._running else ""
        self._progress.update(self._task, description=text)

    def stage_started(self, name: str, action: str) -> None:
        with self._lock:
            self._running.append(name)
            self._describe()
        super().stage_started(name, action)

    def stage_finished(self, result: StageResult) -> None:
        with self._lock:
            if result.name in self._running:
                self._running.remove(result.name)
            self._describe()
            self._progress.advance(self._task)
        super().stage_finished(result)

    def interrupted(self) -> None:
        LINES.detach()
        self._progress.stop()  # the terminal gets its cursor back

    def finish(self, results: list[StageResult], wall_s: float) -> None:
        LINES.detach()
        self._progress.stop()
        print_plain = Reporter(self.verbose, self.quiet, self.explain)
        print_plain.finish(results, wall_s)


def make_reporter(verbose: int, quiet: bool, explain: bool) -> Reporter:
    """The live display on a terminal, plain lines otherwise (or when quiet)."""
    if sys.stderr.isatty() and not quiet:
        return LiveReporter(verbose, quiet, explain)
    return Reporter(verbose, quiet, explain)
