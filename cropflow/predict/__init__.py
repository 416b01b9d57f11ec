"""Tiled prediction: map a region with a registered model, at any size, resumably.

Public API::

    from cropflow.predict import PredictParams, predict

    result = predict(PredictParams(cube="cubes/demo.zarr", model="champion"))
    result.store   # predictions/<key>.zarr: class_id, probability (class by name), confidence
"""

from cropflow.predict.model import ModelBundle, load_bundle
from cropflow.predict.params import PredictOptions, PredictParams
from cropflow.predict.run import ModelInfo, PredictionResult, check_contract, predict
from cropflow.predict.store import open_prediction

__all__ = [
    "ModelBundle",
    "ModelInfo",
    "PredictOptions",
    "PredictParams",
    "PredictionResult",
    "check_contract",
    "load_bundle",
    "open_prediction",
    "predict",
]
