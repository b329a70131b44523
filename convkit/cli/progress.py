"""A rich progress bar on stderr, fed by the library's progress callbacks."""

from __future__ import annotations

from collections.abc import Iterator
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

#: Default task labels by stage; any other stage is shown as "Converting STAGE".
STAGE_LABELS = {"scan": "Scanning headers"}


@contextmanager
def progress_bar(enabled: bool = True, labels: dict[str, str] | None = None) -> Iterator:
    """Yield a callback(stage, done, total); draws only when stderr is a terminal.

    labels: task label per stage name (added to STAGE_LABELS). The bar (and the thread
    that redraws it) starts at the first call: until then the command runs one thread,
    so that it may fork its workers (processes.can_fork).
    """
    known = {**STAGE_LABELS, **(labels or {})}
    console = error_console()
    if not enabled or not console.is_terminal:
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    bar = Progress(*columns, console=console, transient=True)
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        if not tasks:
            bar.start()
        if stage not in tasks:
            label = known.get(stage, f"Converting {stage}")
            tasks[stage] = bar.add_task(label, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    try:
        yield update
    finally:
        bar.stop()
