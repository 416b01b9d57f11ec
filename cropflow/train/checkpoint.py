"""Per-epoch checkpoints that resume bit-for-bit.

A checkpoint holds everything that shapes the rest of a run: weights, optimiser and
schedule state, every random generator's state, early-stopping state and the metric
history. Files hold only tensors and plain Python values, are written aside and renamed
into place, and load with ``torch.load(..., weights_only=True)``.

Layout of a checkpoint folder::

    epoch-0001.pt ...   the last ``keep_last`` epochs
    best.pt             weights of the best epoch so far (early stopping restores them)
    done.json           written when the run finished; a finished run is not resumed
    contract.json       the run's input contract (a resume must see the same bands/classes)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cropflow.errors import ConfigError, TrainingError
from cropflow.storage import atomic_file, atomic_write

CHECKPOINT_FORMAT = 1
_EPOCH_RE = re.compile(r"^epoch-(\d{4,})\.pt$")
#: Other files a checkpoint folder holds (see the module docstring).
_OWN_FILES = frozenset({"best.pt", "done.json", "contract.json"})


@dataclass
class RngState:
    """States of the global torch generators and of the data generator."""

    cpu: torch.Tensor
    data: torch.Tensor
    cuda: list[torch.Tensor] = field(default_factory=list)

    @classmethod
    def capture(cls, data_gen: torch.Generator) -> RngState:
        cuda = list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else []
        return cls(cpu=torch.get_rng_state(), data=data_gen.get_state(), cuda=cuda)

    def restore(self, data_gen: torch.Generator) -> None:
        torch.set_rng_state(self.cpu)
        data_gen.set_state(self.data)
        if self.cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.cuda)


@dataclass
class TrainState:
    """The state after ``epoch`` completed epochs."""

    run_key: str
    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: RngState
    best_score: float | None
    best_epoch: int | None
    bad_epochs: int
    history: list[dict[str, float]]
    mlflow_run_id: str | None = None
    averaged: dict[str, torch.Tensor] | None = None
    """The moving average of the weights (``TrainParams.average_epochs``), if kept."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "run_key": self.run_key,
            "epoch": self.epoch,
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "rng": {"cpu": self.rng.cpu, "data": self.rng.data, "cuda": self.rng.cuda},
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "mlflow_run_id": self.mlflow_run_id,
            "averaged": self.averaged,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        if d.get("format") != CHECKPOINT_FORMAT:
            raise TrainingError(
                f"checkpoint format {d.get('format')!r} is not {CHECKPOINT_FORMAT}",
                hint="start afresh with resume=False",
            )
        rng = d["rng"]
        return cls(
            run_key=d["run_key"],
            epoch=int(d["epoch"]),
            model=d["model"],
            optimizer=d["optimizer"],
            scheduler=d["scheduler"],
            rng=RngState(cpu=rng["cpu"], data=rng["data"], cuda=list(rng["cuda"])),
            best_score=d["best_score"],
            best_epoch=d["best_epoch"],
            bad_epochs=int(d["bad_epochs"]),
            history=list(d["history"]),
            mlflow_run_id=d["mlflow_run_id"],
            averaged=d.get("averaged"),
        )


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


class CheckpointStore:
    """The checkpoint folder of one run (identified by its run key)."""

    def __init__(self, directory: Path, run_key: str, keep_last: int = 2) -> None:
        self.directory = Path(directory)
        self.run_key = run_key
        self.keep_last = max(1, keep_last)

    def epoch_path(self, epoch: int) -> Path:
        return self.directory / f"epoch-{epoch:04d}.pt"

    @property
    def best_path(self) -> Path:
        return self.directory / "best.pt"

    @property
    def done_path(self) -> Path:
        return self.directory / "done.json"

    def epochs(self) -> list[int]:
        """Completed epochs that have a checkpoint, in order."""
        if not self.directory.is_dir():
            return []
        found = (_EPOCH_RE.match(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def is_done(self) -> bool:
        return self.done_path.is_file()

    def reset(self) -> None:
        """Remove this run's checkpoint files (a fresh start); nothing else in the folder."""
        if self.directory.is_dir():
            for p in self.directory.iterdir():
                if p.is_file() and (_EPOCH_RE.match(p.name) or p.name in _OWN_FILES):
                    p.unlink()
        self.directory.mkdir(parents=True, exist_ok=True)

    def save(self, state: TrainState) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.epoch_path(state.epoch)
        _atomic_save(state.to_dict(), path)
        for old in self.epochs()[: -self.keep_last]:
            self.epoch_path(old).unlink(missing_ok=True)
        return path

    def save_best(self, weights: dict[str, torch.Tensor]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        _atomic_save(weights, self.best_path)

    def load_best(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = torch.load(
            self.best_path, map_location="cpu", weights_only=True
        )
        return state

    def load(self, epoch: int) -> TrainState:
        path = self.epoch_path(epoch)
        state = TrainState.from_dict(torch.load(path, map_location="cpu", weights_only=True))
        if state.run_key != self.run_key:
            raise ConfigError(
                f"checkpoint {path} belongs to another run (key {state.run_key}, "
                f"these parameters give {self.run_key})",
                hint="use another checkpoint_dir, or resume=False to start afresh",
            )
        return state

    def latest(self) -> TrainState | None:
        """The last checkpoint, or None when there is none."""
        epochs = self.epochs()
        return self.load(epochs[-1]) if epochs else None

    def mark_done(self, summary: dict[str, Any]) -> None:
        atomic_write(self.done_path, json.dumps(summary, indent=1, default=str))
