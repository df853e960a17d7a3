"""Progress reporting for long passes: a Rich bar with rate and ETA on a terminal, plain log lines
otherwise. Sync and image sync take a `ProgressReporter` (or `None` for silence).

Usage::

    progress = make_progress()             # Rich on a TTY, log lines otherwise
    progress.start("records", total=5000)
    progress.advance("records", 200)
    progress.note("records", "rate 80.0/s")
    progress.finish("records")
    progress.close()
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

logger = logging.getLogger("met_harvester.progress")


class ProgressReporter(Protocol):
    """What a long pass reports: named tasks with a total, advances and a short note."""

    def start(self, name: str, total: int | None) -> None:
        """Begin (or restart) task `name` with `total` items (None: unknown)."""

    def advance(self, name: str, n: int = 1) -> None:
        """Count `n` more items of task `name` as done."""

    def note(self, name: str, text: str) -> None:
        """Show a short status text next to task `name` (e.g. the current rate)."""

    def finish(self, name: str) -> None:
        """Mark task `name` as done."""

    def close(self) -> None:
        """Stop drawing; call once at the end."""


def format_eta(seconds: float | None) -> str:
    """A human ETA: `3d 4h`, `2h 05m`, `4m 10s`, `12s`, or `?` when unknown."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(max(0.0, seconds))
    days, rem = divmod(s, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


@dataclass
class _TaskState:
    total: int | None
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    note: str = ""
    last_logged: float = 0.0


class LogProgress:
    """Plain log lines (for pipes, files and the daemon): one line per task every `interval` s."""

    def __init__(self, interval: float = 10.0, *, log: logging.Logger | None = None) -> None:
        self.interval = interval
        self.log = log or logger
        self._tasks: dict[str, _TaskState] = {}

    def start(self, name: str, total: int | None) -> None:
        """Begin task `name`."""
        self._tasks[name] = _TaskState(total=total, last_logged=time.monotonic())
        self.log.info("%s: starting, %s to do", name, "?" if total is None else total)

    def advance(self, name: str, n: int = 1) -> None:
        """Count `n` items; log a line when `interval` seconds have passed since the last."""
        task = self._tasks.get(name)
        if task is None:
            self.start(name, None)
            task = self._tasks[name]
        task.done += n
        now = time.monotonic()
        if now - task.last_logged >= self.interval:
            task.last_logged = now
            self.log.info("%s: %s", name, self._line(task, now))

    def note(self, name: str, text: str) -> None:
        """Remember a note; it appears on the next line logged."""
        if name in self._tasks:
            self._tasks[name].note = text

    def finish(self, name: str) -> None:
        """Log the final line of task `name`."""
        task = self._tasks.pop(name, None)
        if task is not None:
            self.log.info("%s: done, %s", name, self._line(task, time.monotonic()))

    def close(self) -> None:
        """Nothing to tear down."""

    @staticmethod
    def _line(task: _TaskState, now: float) -> str:
        elapsed = max(now - task.started, 1e-9)
        speed = task.done / elapsed
        parts = [f"{task.done}" + (f"/{task.total}" if task.total is not None else "")]
        if task.total:
            parts.append(f"({100.0 * task.done / task.total:.1f}%)")
        parts.append(f"{speed:.1f}/s")
        if task.total is not None and speed > 0:
            parts.append(f"eta {format_eta((task.total - task.done) / speed)}")
        if task.note:
            parts.append(task.note)
        return " ".join(parts)


class RichProgress:
    """A Rich progress bar per task, with count, percentage, rate, elapsed time and ETA."""

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._ids: dict[str, TaskID] = {}
        original = sys.stderr
        self._progress.start()
        self._swapped = _redirect_log_handlers(original, sys.stderr)

    def start(self, name: str, total: int | None) -> None:
        """Add (or reset) the bar of task `name`."""
        if name in self._ids:
            self._progress.reset(self._ids[name], total=total, completed=0)
        else:
            self._ids[name] = self._progress.add_task(name, total=total, speed="", note="")

    def advance(self, name: str, n: int = 1) -> None:
        """Advance the bar and refresh its rate column."""
        if name not in self._ids:
            self.start(name, None)
        task_id = self._ids[name]
        self._progress.advance(task_id, n)
        speed = self._progress.tasks[self._task_index(task_id)].speed
        self._progress.update(task_id, speed=f"{speed:.1f}/s" if speed else "")

    def note(self, name: str, text: str) -> None:
        """Show `text` at the end of the bar."""
        if name in self._ids:
            self._progress.update(self._ids[name], note=text)

    def finish(self, name: str) -> None:
        """Fill the bar when its total is known."""
        task_id = self._ids.get(name)
        if task_id is None:
            return
        task = self._progress.tasks[self._task_index(task_id)]
        if task.total is not None:
            self._progress.update(task_id, completed=task.total)

    def close(self) -> None:
        """Stop the live display (log handlers write to stderr directly again)."""
        for handler, stream in self._swapped:
            handler.setStream(stream)
        self._swapped = []
        self._progress.stop()

    def _task_index(self, task_id: TaskID) -> int:
        for index, task in enumerate(self._progress.tasks):
            if task.id == task_id:
                return index
        raise KeyError(task_id)


def _redirect_log_handlers(old: TextIO, new: TextIO) -> list[tuple[logging.StreamHandler, TextIO]]:
    """Point stream handlers writing to `old` at `new` (Rich's proxy, which prints log lines
    above the bar instead of through it); returns what to restore."""
    if new is old:
        return []
    swapped: list[tuple[logging.StreamHandler, TextIO]] = []
    for name in ("", "met_harvester"):
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler and handler.stream is old:
                handler.setStream(new)
                swapped.append((handler, old))
    return swapped


def make_progress(rich: bool | None = None, *, stream: TextIO | None = None) -> ProgressReporter:
    """A Rich bar when `stream` (default stderr) is a terminal or `rich` is True, else log lines."""
    stream = stream or sys.stderr
    use_rich = stream.isatty() if rich is None else rich
    if use_rich:
        return RichProgress(Console(file=stream))
    return LogProgress()
