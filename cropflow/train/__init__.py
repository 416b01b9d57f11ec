"""Training, evaluation and the MLflow champion/challenger registry.

Public API::

    from cropflow.train import (
        TrainParams,
        run_training,
        train,
        register_run,
        load_model,
    )

    outcome = run_training(TrainParams(training_set="trainingsets/demo.zarr",
                                       model={"name": "ltae"}))
    loaded = load_model("champion")   # LoadedModel(model, contract, class_map, run_id, version)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cropflow.lazy import lazy_exports

if TYPE_CHECKING:
    from cropflow.train.params import (
        AugmentParams as AugmentParams,
    )
    from cropflow.train.params import (
        EarlyStopping as EarlyStopping,
    )
    from cropflow.train.params import (
        TrainOptions as TrainOptions,
    )
    from cropflow.train.params import (
        TrainParams as TrainParams,
    )
    from cropflow.train.registry import (
        CHALLENGER as CHALLENGER,
    )
    from cropflow.train.registry import (
        CHAMPION as CHAMPION,
    )
    from cropflow.train.registry import (
        LoadedModel as LoadedModel,
    )
    from cropflow.train.registry import (
        PinnedModel as PinnedModel,
    )
    from cropflow.train.registry import (
        Registration as Registration,
    )
    from cropflow.train.registry import (
        load_model as load_model,
    )
    from cropflow.train.registry import (
        pin_model as pin_model,
    )
    from cropflow.train.training import (
        TrainOutcome as TrainOutcome,
    )
    from cropflow.train.training import (
        TrainResult as TrainResult,
    )
    from cropflow.train.training import (
        register_run as register_run,
    )
    from cropflow.train.training import (
        run_training as run_training,
    )
    from cropflow.train.training import (
        train as train,
    )

#: Exported name -> the module defining it (imported on first use).
_EXPORTS = {
    "AugmentParams": "cropflow.train.params",
    "EarlyStopping": "cropflow.train.params",
    "TrainOptions": "cropflow.train.params",
    "TrainParams": "cropflow.train.params",
    "CHALLENGER": "cropflow.train.registry",
    "CHAMPION": "cropflow.train.registry",
    "LoadedModel": "cropflow.train.registry",
    "PinnedModel": "cropflow.train.registry",
    "Registration": "cropflow.train.registry",
    "load_model": "cropflow.train.registry",
    "pin_model": "cropflow.train.registry",
    "TrainOutcome": "cropflow.train.training",
    "TrainResult": "cropflow.train.training",
    "register_run": "cropflow.train.training",
    "run_training": "cropflow.train.training",
    "train": "cropflow.train.training",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
