"""`progress_bar`: a small rich progress bar for long jobs (training steps, evaluation batches)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["progress_bar"]


@contextmanager
def progress_bar(
    total: int | None, description: str = "", *, console: Console | None = None, transient: bool = False
) -> Iterator[Callable[[float], None]]:
    """Show a progress bar while the block runs; yields `advance(n=1)`.

    Example::

        with progress_bar(len(batches), "evaluating") as advance:
            for batch in batches:
                run(batch)
                advance(1)

    Args:
        total: Steps in the job (None: unknown, the bar pulses).
        description: Text left of the bar. Defaults to "".
        console: Where to draw. Defaults to a new `Console` on stderr.
        transient: Erase the bar when the block ends. Defaults to False.
    """
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console if console is not None else Console(stderr=True),
        transient=transient,
    )
    task = progress.add_task(description, total=total)

    def advance(n: float = 1) -> None:
        progress.advance(task, n)

    with progress:
        yield advance
