"""Training, evaluation and the MLflow champion/challenger registry.

Public API::

    from cropflow.train import TrainParams, run_training, train, register_run, load_model

    outcome = run_training(TrainParams(training_set="trainingsets/demo.zarr",
                                       model={"name": "ltae"}))
    loaded = load_model("champion")   # LoadedModel(model, contract, class_map, run_id, version)
"""

from cropflow.train.params import AugmentParams, EarlyStopping, TrainOptions, TrainParams
from cropflow.train.registry import (
    CHALLENGER,
    CHAMPION,
    LoadedModel,
    PinnedModel,
    Registration,
    load_model,
    pin_model,
)
from cropflow.train.training import (
    TrainOutcome,
    TrainResult,
    register_run,
    run_training,
    train,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "AugmentParams",
    "EarlyStopping",
    "LoadedModel",
    "PinnedModel",
    "Registration",
    "TrainOptions",
    "TrainOutcome",
    "TrainParams",
    "TrainResult",
    "load_model",
    "pin_model",
    "register_run",
    "run_training",
    "train",
]
