"""Progress of a prediction, to whoever listens: a Prefect artifact, a rich bar, a test.

The library reports ``(done, total)`` through :func:`report_progress`; listeners register
with :func:`progress_sink`. The CLI wraps a flow run in :func:`rich_progress` to draw a bar
(tasks run in threads of the same process, so they reach the same listeners).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ProgressSink = Callable[[int, int], None]

_SINKS: list[ProgressSink] = []
_LOCK = threading.Lock()


@contextmanager
def progress_sink(sink: ProgressSink) -> Iterator[None]:
    """Call ``sink(done, total)`` on every progress report while the block runs."""
    with _LOCK:
        _SINKS.append(sink)
    try:
        yield
    finally:
        with _LOCK:
            _SINKS.remove(sink)


def report_progress(done: int, total: int) -> None:
    """Tell every registered listener that ``done`` of ``total`` jobs are finished."""
    with _LOCK:
        sinks = list(_SINKS)
    for sink in sinks:
        sink(done, total)


@contextmanager
def rich_progress(description: str = "predicting tiles") -> Iterator[None]:
    """A rich progress bar (on stderr) fed by the prediction's progress reports."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=None)

        def sink(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        with progress_sink(sink):
            yield
