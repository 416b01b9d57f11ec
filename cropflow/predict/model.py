"""The model side of prediction: what a loaded model is, how to load it, how to run a batch.

A :class:`ModelBundle` is a torch module that follows :mod:`models.base` (``forward(Batch) ->
ModelOutput``) together with its :class:`~models.contract.InputContract` and where it came
from. :func:`load_bundle` gets one from the MLflow registry (by alias or URI) through
:mod:`cropflow.train`; tests and benchmarks build one directly.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from cropflow.classes import ClassMap
from cropflow.errors import ConfigError
from models.base import TEMPERATURE_KEY, Batch, ModelOutput
from models.contract import InputContract


@dataclass
class ModelBundle:
    """A model ready for prediction, with its contract and provenance."""

    model: nn.Module
    contract: InputContract
    uri: str
    run_id: str | None = None
    version: str | None = None
    name: str | None = None
    tta: str = "none"
    """Test-time augmentation of patch/field models (PredictOptions.tta)."""
    members: tuple[str, ...] = ()
    """URIs of the models averaged with this one (PredictOptions.ensemble); empty: alone."""

    @property
    def class_map(self) -> ClassMap:
        return self.contract.class_map

    @property
    def input_kind(self) -> str:
        return self.contract.input_kind

    def weights_digest(self) -> str:
        """A hash of the weights (names, shapes, dtypes and values of the state dict; the
        calibration temperature when it is not 1)."""
        digest = hashlib.sha256()
        for key, tensor in sorted(self.model.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            if key.endswith(TEMPERATURE_KEY) and t.numel() == 1 and float(t) == 1.0:
                continue  # uncalibrated: the digest models had before calibration existed
            digest.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
            digest.update(t.numpy().tobytes())
        return digest.hexdigest()[:20]

    def identity(self) -> str:
        """What makes this model this model: registry name, version and run (where it has
        them) and always the weights' hash, so that two models never share an identity."""
        return f"{self.name}:{self.version}:{self.run_id}:weights:{self.weights_digest()}"


def load_bundle(spec: str | None = None, registered_model: str | None = None) -> ModelBundle:
    """Load a model from the registry: an alias of ``registered_model`` (None: the settings')
    or an MLflow URI; None: the registry's default alias (the champion)."""
    from cropflow.train import load_model
    from cropflow.train.registry import CHAMPION

    loaded = load_model(spec or CHAMPION, registered_model=registered_model)
    return ModelBundle(
        model=loaded.model,
        contract=loaded.contract,
        uri=loaded.uri,
        run_id=loaded.run_id,
        version=loaded.version,
        name=loaded.name,
    )


def with_ensemble(
    bundle: ModelBundle, specs: Sequence[str], registered_model: str | None = None
) -> ModelBundle:
    """``bundle`` averaged with the models ``specs`` name (aliases or versions of
    ``registered_model``, or MLflow URIs): a :class:`models.ensemble.ModelEnsemble`. Refuses
    members trained for another input or class map, naming them."""
    if not specs:
        return bundle
    from models.base import CropflowModel
    from models.ensemble import ModelEnsemble

    loaded = [load_bundle(spec, registered_model) for spec in specs]
    members = [bundle, *loaded]
    models: list[CropflowModel] = []
    for m in members:
        if not isinstance(m.model, CropflowModel):
            raise ConfigError(
                f"model {m.uri} cannot join an ensemble (it is a {type(m.model).__name__})",
                hint="ensemble plain registered models",
            )
        models.append(m.model)
    uris = [m.uri for m in members]
    if len(set(uris)) < len(uris):
        raise ConfigError(
            f"the ensemble names one model twice: {uris}",
            hint="give each member once (the model itself is always a member)",
        )
    ensemble = ModelEnsemble(models, names=uris)
    return dataclasses.replace(bundle, model=ensemble.eval(), members=tuple(m.uri for m in loaded))


def with_forecaster(bundle: ModelBundle) -> ModelBundle:
    """``bundle`` completed by the season forecaster trained beside it (strategy "forecast"
    of an in-season map): its model forecasts the unobserved end of each series, then
    classifies the whole season."""
    from cropflow.train.forecast import load_run_forecaster
    from models.forecaster import CompletedSeasonModel

    if bundle.run_id is None:
        raise ConfigError(
            f"model {bundle.uri} has no MLflow run, so no season forecaster can be found for it",
            hint="map in season with a registered model retrained with in_season.strategy: "
            "forecast, or use the truncation strategy",
        )
    wrapped = CompletedSeasonModel(bundle.model, load_run_forecaster(bundle.run_id))
    return ModelBundle(
        model=wrapped.eval(),
        contract=wrapped.contract,
        uri=bundle.uri,
        run_id=bundle.run_id,
        version=bundle.version,
        name=bundle.name,
        tta=bundle.tta,
        members=bundle.members,
    )


def days_since_epoch(times: npt.NDArray[np.datetime64]) -> npt.NDArray[np.int64]:
    """Cube dates as days since 1970-01-01 (what training sets store)."""
    from cropflow.train.data import days_since_epoch as _days

    return _days(times)


def encode_dates(model: nn.Module, days: Tensor, pad_mask: Tensor) -> Tensor:
    """``Batch.dates`` for this model from days since 1970-01-01, exactly as in training."""
    from cropflow.train.engine import date_kind_of
    from cropflow.train.engine import encode_dates as _encode

    return _encode(days, pad_mask, date_kind_of(model))  # type: ignore[arg-type]


class Normalise:
    """The training normalisation (``(x - mean) / std``, non-finite -> 0) on numpy arrays."""

    def __init__(self, contract: InputContract) -> None:
        from cropflow.train.data import Normaliser

        self._norm = Normaliser(contract.bands, contract.normalisation)

    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``x`` is ``[N, T, C, ...]`` (channels on axis 2)."""
        out: npt.NDArray[np.float32] = self._norm(torch.from_numpy(x)).numpy()
        return out

    def inplace(self, x: npt.NDArray[np.float32], axis: int) -> None:
        """Normalise ``x`` in place, channels on ``axis``: the same float32 operations as
        :meth:`__call__` (subtract, divide, non-finite -> 0), without a copy."""
        shape = [1] * x.ndim
        shape[axis] = -1
        np.subtract(x, self._norm.mean.numpy().reshape(shape), out=x)
        np.divide(x, self._norm.std.numpy().reshape(shape), out=x)
        # non-finite -> 0: one mask and one masked store (nan_to_num makes three passes)
        np.copyto(x, np.float32(0.0), where=~np.isfinite(x))


#: The views of each test-time augmentation: (quarter turns, flip left-right) pairs.
TTA_VIEWS: dict[str, tuple[tuple[int, bool], ...]] = {
    "none": ((0, False),),
    "flips": ((0, False), (0, True), (2, True), (2, False)),  # as is, lr, ud (= rot180 + lr), both
    "dihedral": tuple((k, f) for k in range(4) for f in (False, True)),
}


def _view(a: Tensor, turns: int, flip: bool) -> Tensor:
    """``a`` (last two axes H, W) flipped left-right (if ``flip``), then turned ``turns``
    quarter turns counter-clockwise."""
    if flip:
        a = torch.flip(a, dims=(-1,))
    return torch.rot90(a, turns, dims=(-2, -1)) if turns else a


def _unview(a: Tensor, turns: int, flip: bool) -> Tensor:
    """The inverse of :func:`_view`."""
    if turns:
        a = torch.rot90(a, -turns, dims=(-2, -1))
    return torch.flip(a, dims=(-1,)) if flip else a


def augmented_probs(model: nn.Module, batch: Batch, tta: str) -> Tensor:
    """Class probabilities of a patch/field batch averaged over the views of ``tta``, each
    mapped back to the input's orientation; :func:`forward_probs` for ``"none"`` or pixels."""
    views = TTA_VIEWS[tta]
    if len(views) == 1 or batch.x.ndim != 5:
        return forward_probs(model, batch)
    total = torch.zeros(())
    for turns, flip in views:
        fm = batch.field_mask
        seen = Batch(
            x=_view(batch.x, turns, flip),
            dates=batch.dates,
            pad_mask=batch.pad_mask,
            field_mask=None if fm is None else _view(fm, turns, flip),
        )
        p = forward_probs(model, seen)
        if p.ndim == 4:  # per-pixel probabilities: back to the input's orientation
            p = _unview(p, turns, flip)
        total = total.to(p.device) + p
    return total / len(views)


def forward_probs(model: nn.Module, batch: Batch) -> Tensor:
    """Class probabilities (softmax over the class axis 1, of the logits divided by the
    model's calibration temperature) of one batch, float32."""
    out = model(batch)
    logits = out.logits if isinstance(out, ModelOutput) else out
    temperature = getattr(model, "temperature", None)  # calibrated on val (CropflowModel)
    if isinstance(temperature, torch.Tensor):
        logits = logits.float() / temperature.float()
    return torch.softmax(logits.float(), dim=1)
