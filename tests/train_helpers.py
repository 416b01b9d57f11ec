"""Helpers of the training tests: a run interrupted after an epoch, then resumed."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cropflow.train import TrainParams, train
from cropflow.train.data import TrainingData
from cropflow.train.training import TrainResult
from models.base import CropflowModel

EpochHook = Callable[[int, dict[str, float], CropflowModel], None]


class Crash(KeyboardInterrupt):
    """The interruption (as a Ctrl-C would stop the run)."""


def interrupt_then_resume(
    params: TrainParams, data: TrainingData, after_epoch: int = 2, seen: EpochHook | None = None
) -> TrainResult:
    """Train with ``params``, stopped by a Ctrl-C-like interruption right after
    ``after_epoch`` (its checkpoint written), then run the same parameters again: the resumed
    run's result. ``seen`` also receives every epoch of the interrupted run."""

    def crash(epoch: int, metrics: dict[str, float], model: CropflowModel) -> None:
        if seen is not None:
            seen(epoch, metrics, model)
        if epoch == after_epoch:
            raise Crash

    with pytest.raises(Crash):
        train(params, data=data, on_epoch_end=crash)
    return train(params, data=data)
