"""A rich progress bar on stderr, fed by the library's progress callbacks."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from convkit.cli.render import error_console
from convkit.processes import pausable

#: Default task labels by stage; any other stage is shown as "Converting STAGE".
STAGE_LABELS = {"scan": "Scanning headers"}


#: How often the bar is redrawn (its elapsed time moves between updates too).
REDRAW_PER_SECOND = 10


@contextmanager
def progress_bar(enabled: bool = True, labels: dict[str, str] | None = None) -> Iterator:
    """Yield a callback(stage, done, total); draws only when stderr is a terminal.

    labels: task label per stage name (added to STAGE_LABELS). The bar (and the thread
    that redraws it) starts at the first call: until then the command runs one thread.
    The thread is stopped for a moment whenever workers are forked (processes.pausable).
    """
    known = {**STAGE_LABELS, **(labels or {})}
    console = error_console()
    if not enabled or not console.is_terminal:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    bar = Progress(*columns, console=console, transient=True, auto_refresh=False)
    redrawing = _Redrawing(bar)
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        if not tasks:
            bar.start()
            redrawing.start()
        if stage not in tasks:
            label = known.get(stage, f"Converting {stage}")
            tasks[stage] = bar.add_task(label, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    try:
        with pausable(redrawing.pause):
            yield update
    finally:
        redrawing.stop()
        bar.stop()


class _Redrawing:
    """The thread that redraws a bar, REDRAW_PER_SECOND times a second: rich's own would go
    on while workers are forked, and rich does not wait for its end when it stops."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.thread: threading.Thread | None = None
        self.done = threading.Event()

    def start(self) -> None:
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._redraw, args=(self.done,), daemon=True,
                                       name="convkit-progress")
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.done.set()
            self.thread.join()
            self.thread = None

    def pause(self) -> Callable[[], None] | None:
        """Stop the thread: what starts it again (None when it was not running)."""
        if self.thread is None:
            return None
        self.stop()
        return self.start

    def _redraw(self, done: threading.Event) -> None:
        while not done.wait(1 / REDRAW_PER_SECOND):
            self.bar.refresh()
