"""MLflow "models from code" wrapper of a cropflow model (logged by cropflow.train.registry).

MLflow copies this file into every logged model and runs it at load time; no object is
pickled. ``load_context`` rebuilds the model from the folder written by
:func:`models.serialization.save_model` (config, contract and state_dict, the weights read
with ``weights_only=True``); ``predict`` takes a dict of arrays of any batch and tile size:

* ``x``: float32 raw (un-normalised) values in the contract's band order, pixel
  ``[B, T, C]``, patch/field ``[B, T, C, H, W]``;
* ``dates``: int64 ``[B, T]``, as the model expects them (see models.base);
* ``pad_mask``: bool ``[B, T]``, True = missing date;
* ``field_mask``: bool ``[B, H, W]`` (field models only).

The logged signature (cropflow.train.registry.model_signature) states the same.

It returns class probabilities, ``[B, K]`` or ``[B, K, H, W]``, classes in the order of the
contract's class map. Not imported by cropflow itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.pyfunc.model import PythonModel


class CropflowPyfunc(PythonModel):
    """Probabilities from a cropflow model, normalising inputs with its contract."""

    # The input is a dict of arrays, which MLflow's type-hint schemas cannot describe; the
    # logged signature (TensorSpecs, see registry.model_signature) states it instead, so
    # ``model_input`` has no annotation for MLflow to derive a schema from.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from cropflow.train.registry import MODEL_ARTIFACT
        from models.serialization import load_model

        self.model = load_model(Path(context.artifacts[MODEL_ARTIFACT]))

    def predict(self, context: Any, model_input, params: Any = None) -> np.ndarray:  # type: ignore[no-untyped-def]
        from cropflow.train.data import Normaliser
        from models.base import Batch

        inputs: dict[str, Any] = model_input
        contract = self.model.contract
        x = torch.as_tensor(np.asarray(inputs["x"], dtype=np.float32))
        fm = inputs.get("field_mask")
        batch = Batch(
            x=Normaliser(contract.bands, contract.normalisation)(x),
            dates=torch.as_tensor(np.asarray(inputs["dates"], dtype=np.int64)),
            pad_mask=torch.as_tensor(np.asarray(inputs["pad_mask"], dtype=bool)),
            field_mask=None if fm is None else torch.as_tensor(np.asarray(fm, dtype=bool)),
        )
        with torch.no_grad():
            out = self.model(batch)
        return self.model.probabilities(out.logits).numpy()


mlflow.models.set_model(CropflowPyfunc())
