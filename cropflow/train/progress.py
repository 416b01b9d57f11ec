"""A rich progress bar for training from the command line."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RichProgress:
    """One bar per epoch (batches), with the running loss; a line of metrics per epoch."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[n_epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.task: TaskID | None = None
        self._loss_sum = 0.0
        self._n = 0

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def start_epoch(self, epoch: int, n_epochs: int, n_batches: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self._loss_sum, self._n = 0.0, 0
        self.task = self.progress.add_task(
            "train", total=n_batches, epoch=epoch, n_epochs=n_epochs, loss=float("nan")
        )

    def advance(self, loss: float) -> None:
        self._loss_sum += loss
        self._n += 1
        if self.task is not None:
            self.progress.update(self.task, advance=1, loss=self._loss_sum / self._n)

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        shown = ", ".join(
            f"{k} {metrics[k]:.4f}"
            for k in ("train_loss", "val_loss", "val_overall_accuracy", "val_macro_f1")
            if k in metrics
        )
        self.progress.console.print(f"epoch {epoch}: {shown}", highlight=False)
