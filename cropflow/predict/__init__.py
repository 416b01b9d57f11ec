"""Tiled prediction: map a region with a registered model, at any size, resumably.

Public API::

    from cropflow.predict import PredictParams, predict

    result = predict(PredictParams(cube="cubes/demo.zarr", model="champion"))
    result.store   # predictions/<key>.zarr: class_id, probability (class by name), confidence
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cropflow.lazy import lazy_exports

if TYPE_CHECKING:
    from cropflow.predict.model import (
        ModelBundle as ModelBundle,
    )
    from cropflow.predict.model import (
        load_bundle as load_bundle,
    )
    from cropflow.predict.params import (
        PredictOptions as PredictOptions,
    )
    from cropflow.predict.params import (
        PredictParams as PredictParams,
    )
    from cropflow.predict.run import (
        ModelInfo as ModelInfo,
    )
    from cropflow.predict.run import (
        PredictionResult as PredictionResult,
    )
    from cropflow.predict.run import (
        check_contract as check_contract,
    )
    from cropflow.predict.run import (
        predict as predict,
    )
    from cropflow.predict.store import (
        open_prediction as open_prediction,
    )

#: Exported name -> the module defining it (imported on first use).
_EXPORTS = {
    "ModelBundle": "cropflow.predict.model",
    "load_bundle": "cropflow.predict.model",
    "PredictOptions": "cropflow.predict.params",
    "PredictParams": "cropflow.predict.params",
    "ModelInfo": "cropflow.predict.run",
    "PredictionResult": "cropflow.predict.run",
    "check_contract": "cropflow.predict.run",
    "predict": "cropflow.predict.run",
    "open_prediction": "cropflow.predict.store",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
