"""Every line and progress bar the user sees while pivotbuild works, from one writer.

``LINES`` is the one writer: stage output (stdout, or stderr with ``--json``), the
reporter's lines, warnings and errors (stderr), from every thread. It holds one lock and
writes each line whole and flushed before the next, so lines never glue together.

While a console-pool stage has the terminal (``Reporter.console``) the writer holds every
line, the reporter's and other stages' alike, and writes them when it ends.

On a terminal a bar may be shown (rich, on stderr): a run's (``LiveReporter``: the stages
running, done and left) or a transfer's (``Progress``: objects moved). While a bar is shown
the writer hands it the lines bound for the terminal, and it prints them above itself. When
stderr is not a terminal nothing fancy happens: one line per stage started, one summary line.

rich is imported only when a bar is actually shown.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Self

from pivotbuild.plan import FAILED, NOT_RUN, RESTORE, RUN, RUN_CACHE, SKIP
from pivotbuild.urls import redact_text

if TYPE_CHECKING:
    from pivotbuild.execute import StageResult
    from pivotbuild.plan import Decision


class LineWriter:
    """The one writer of the lines pivotbuild prints, thread-safe. While a display (a bar) is
    attached, lines bound for the terminal (stderr; stdout too if it is a terminal) go
    through it, above the bar."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._display: Callable[[str], None] | None = None
        self._terminal: list[IO[str]] = []
        self._holds = 0
        self._held: list[tuple[str, IO[str]]] = []

    def line(self, text: str, stream: IO[str] | None = None) -> None:
        """Write ``text`` (one line or several) to ``stream`` (None: sys.stdout now)."""
        text = text if text.endswith("\n") else text + "\n"
        with self._lock:
            target = stream or sys.stdout
            if self._holds:
                self._held.append((text, target))
                return
            if self._display is not None and any(target is s for s in self._terminal):
                self._display(text[:-1])
                return
            target.write(text)
            target.flush()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Keep every line until the block ends, then write them in order (nested holds
        release at the outermost's end)."""
        with self._lock:
            self._holds += 1
        try:
            yield
        finally:
            with self._lock:
                self._holds -= 1
                lines, self._held = (self._held, []) if not self._holds else ([], self._held)
            for text, target in lines:
                self.line(text, target)

    def attach(self, display: Callable[[str], None]) -> None:
        """Send the lines for the terminal to ``display`` until detach(display)."""
        with self._lock:
            self._display = display
            streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
            self._terminal = [s for s in streams if s is not None and (
                s is sys.stderr or s is sys.__stderr__ or _isatty(s))]

    def detach(self, display: Callable[[str], None] | None = None) -> None:
        """Stop sending lines to ``display`` (None: whichever is attached)."""
        with self._lock:
            if display is None or self._display == display:
                self._display = None
                self._terminal = []


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


LINES = LineWriter()


def warn(text: str) -> None:
    """``pivotbuild: warning: TEXT`` on stderr (a URL's userinfo never shown)."""
    LINES.line(f"pivotbuild: warning: {redact_text(text)}", sys.stderr)


def error(text: str) -> None:
    """``pivotbuild: error: TEXT`` on stderr (a URL's userinfo never shown)."""
    LINES.line(f"pivotbuild: error: {redact_text(text)}", sys.stderr)


_PLAIN_PATH = re.compile(r"[\w./@+=:-]+")  # named as it is; any other path quoted
UNDECLARED_SHOWN = 10  # paths an undeclared-reads warning names before "and N more"


def undeclared_warning(stage: str, paths: list[str], shown: int = UNDECLARED_SHOWN) -> str:
    """The one warning of `repro --audit` for a stage that read files it did not declare."""
    named = ", ".join(p if _PLAIN_PATH.fullmatch(p) else repr(p) for p in paths[:shown])
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    files = "file" if len(paths) == 1 else "files"
    return (f"stage '{stage}' read {len(paths)} undeclared {files}: {named}{more} "
            "(declare them in its deps)")


# ---- bars -----------------------------------------------------------------------------------


class _Bar:
    """A transient rich bar on stderr, attached to LINES while shown."""

    def __init__(self, columns: tuple[str, ...], label: str = "", total: int = 0) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        made = {"spinner": SpinnerColumn, "bar": BarColumn, "count": MofNCompleteColumn,
                "elapsed": TimeElapsedColumn}
        parts = [TextColumn(label) if c == "label" else TextColumn("{task.description}")
                 if c == "description" else made[c]() for c in columns]
        self._rich = Progress(*parts, console=Console(stderr=True), transient=True,
                              redirect_stdout=False)  # stage output stays on stdout
        self._task = self._rich.add_task("", total=total)
        self._lock = threading.Lock()
        self._rich.start()
        LINES.attach(self._show)

    def _show(self, text: str) -> None:
        self._rich.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def update(self, *, more: int = 0, done: int = 0, description: str | None = None) -> None:
        with self._lock:
            total = (self._rich.tasks[0].total or 0) + more
            self._rich.update(self._task, total=total, advance=done, description=description)

    def stop(self) -> None:
        LINES.detach(self._show)
        self._rich.stop()  # the terminal gets its cursor back

    def restart(self) -> None:
        """Show the bar again after ``stop`` (as it was)."""
        self._rich.start()
        LINES.attach(self._show)


class Progress:
    """A count of work items done (objects sent or fetched) as a bar on stderr, when shown;
    every method does nothing otherwise. ``show``: None for "when stderr is a terminal"."""

    def __init__(self, label: str, show: bool | None = None) -> None:
        if show is None:
            show = _isatty(sys.stderr)
        self._bar = _Bar(("label", "bar", "count"), label) if show else None

    def add(self, count: int) -> None:
        """``count`` more items to do."""
        if self._bar is not None and count:
            self._bar.update(more=count)

    def advance(self, count: int = 1) -> None:
        """``count`` items done."""
        if self._bar is not None:
            self._bar.update(done=count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- a run of stages ------------------------------------------------------------------------


class Reporter:
    """Tells the user what a run is doing (stderr) and passes stage output on, all through
    LINES. The executor calls it from its threads."""

    def __init__(self, verbose: int = 0, quiet: bool = False, explain: bool = False) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self.explain = explain

    def say(self, text: str) -> None:
        if not self.quiet:
            LINES.line(text, sys.stderr)

    def stage_lines(self, stage: str, prefix: bool, stream: IO[str] | None
                    ) -> Callable[[str], None]:
        """Where a stage's output goes, a whole line at a time: ``stream`` (None: whatever
        sys.stdout is when a line is written), prefixed ``[stage]`` when several stages may
        run at once."""
        if prefix:
            return lambda text: LINES.line(f"[{stage}] {text}", stream)
        return lambda text: LINES.line(text, stream)

    def start(self, total: int) -> None:
        pass

    @contextlib.contextmanager
    def console(self, stage: str) -> Iterator[None]:
        """A console-pool stage has the terminal: every line waits until it is done."""
        with LINES.held():
            yield

    def interrupted(self) -> None:
        """The run was interrupted (its commands stopped): no finish() will come."""

    def decided(self, decision: Decision) -> None:
        if self.explain and decision.action != SKIP:
            why = "; ".join(str(r) for r in decision.reasons) or "forced"
            self.say(f"stage '{decision.name}' {decision.action}: {why}")

    def stage_started(self, name: str, action: str) -> None:
        if action == RUN:
            self.say(f"Running stage '{name}'")
        elif action == RESTORE:
            self.say(f"Restoring outputs of '{name}' from the cache")
        elif action == RUN_CACHE:
            self.say(f"Restoring '{name}' from the run cache")

    def stage_finished(self, result: StageResult) -> None:
        if result.undeclared_reads:  # repro --audit: shown even when quiet, as warnings are
            warn(undeclared_warning(result.name, result.undeclared_reads))
        if result.status == FAILED:
            self.say(f"pivotbuild: error: stage '{result.name}' failed: {result.error}")
        elif result.action == SKIP and self.verbose:
            self.say(f"Stage '{result.name}' is up to date")

    def finish(self, results: list[StageResult], wall_s: float) -> None:
        counts = dict.fromkeys(("ran", "skipped", "restored", "failed", "not run"), 0)
        for r in results:
            if r.status == FAILED:
                counts["failed"] += 1
            elif r.status == NOT_RUN:
                counts["not run"] += 1
            elif r.action == RUN:
                counts["ran"] += 1
            elif r.action == SKIP:
                counts["skipped"] += 1
            else:
                counts["restored"] += 1
        parts = [f"{n} {k}" for k, n in counts.items() if n or k in ("ran", "failed")]
        self.say(f"pivotbuild: {', '.join(parts)} in {wall_s:.2f}s")


class LiveReporter(Reporter):
    """A bar on stderr with the running stages, above which lines scroll."""

    def __init__(self, verbose: int = 0, quiet: bool = False, explain: bool = False) -> None:
        super().__init__(verbose, quiet, explain)
        self._running: list[str] = []
        self._lock = threading.Lock()
        self._bar: _Bar | None = None

    def start(self, total: int) -> None:
        self._bar = _Bar(("spinner", "bar", "count", "elapsed", "description"), total=total)

    @contextlib.contextmanager
    def console(self, stage: str) -> Iterator[None]:
        """The bar leaves the terminal to the console stage, and comes back after it."""
        with self._lock:
            bar = self._bar
            if bar is not None:
                bar.stop()
        try:
            with LINES.held():
                yield
        finally:
            with self._lock:
                if bar is not None and self._bar is bar:
                    bar.restart()

    def _update(self, done: int = 0) -> None:
        text = "running: " + ", ".join(self._running) if self._running else ""
        if self._bar is not None:
            self._bar.update(done=done, description=text)

    def stage_started(self, name: str, action: str) -> None:
        with self._lock:
            self._running.append(name)
            self._update()
        super().stage_started(name, action)

    def stage_finished(self, result: StageResult) -> None:
        with self._lock:
            if result.name in self._running:
                self._running.remove(result.name)
            self._update(done=1)
        super().stage_finished(result)

    def _stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def interrupted(self) -> None:
        self._stop()

    def finish(self, results: list[StageResult], wall_s: float) -> None:
        self._stop()
        super().finish(results, wall_s)


def make_reporter(verbose: int, quiet: bool, explain: bool) -> Reporter:
    """The live display on a terminal, plain lines otherwise (or when quiet)."""
    if _isatty(sys.stderr) and not quiet:
        return LiveReporter(verbose, quiet, explain)
    return Reporter(verbose, quiet, explain)

