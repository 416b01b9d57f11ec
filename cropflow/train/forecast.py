"""Training and scoring the season forecaster (:mod:`models.forecaster`) on a training set.

The forecaster learns from the same training set as the classifier, labels unused: every
pixel series of the train split (patch and field samples give one series per pixel inside
them) is cut at a random step and the forecasts of every observed step are scored (mean
squared error on normalised values). The val split chooses the best epoch. Its report gives
the reconstruction error per band, in the band's units, for every cut, beside persistence
(the last observed composite carried forward), the baseline a forecaster must beat.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from pydantic import BaseModel, Field

from cropflow.errors import TrainingError
from cropflow.train.data import Normaliser, SplitArrays, TrainingData
from cropflow.train.params import ForecastParams
from models.contract import InputContract
from models.forecaster import SeasonForecaster

#: The registered name of a classifier's forecaster: ``<classifier's name>-forecaster``.
FORECASTER_SUFFIX = "-forecaster"
FORECASTER_ARTIFACT = "forecaster"


class BandError(BaseModel):
    """Reconstruction error of the forecast steps of one band, in the band's units."""

    band: str
    rmse: float
    persistence_rmse: float = Field(description="The last observed step carried forward.")


class CutError(BaseModel):
    """Errors of the steps after one cut (``observed`` leading steps seen)."""

    observed: int
    bands: list[BandError]


class ForecastReport(BaseModel):
    """What a trained forecaster achieves on the val split (and test, when scored)."""

    split: str
    n_series: int
    epochs_run: int
    best_epoch: int
    val_loss: float
    by_cut: list[CutError]

    def mean_by_band(self) -> list[BandError]:
        """Each band's RMSE pooled over every cut (root of the mean squared error)."""
        bands = [b.band for b in self.by_cut[0].bands] if self.by_cut else []
        out = []
        for i, name in enumerate(bands):
            mse = float(np.mean([c.bands[i].rmse ** 2 for c in self.by_cut]))
            pmse = float(np.mean([c.bands[i].persistence_rmse ** 2 for c in self.by_cut]))
            out.append(BandError(band=name, rmse=mse**0.5, persistence_rmse=pmse**0.5))
        return out

    def to_markdown(self) -> str:
        rows = [
            f"Season forecaster, {self.split} split ({self.n_series} series, best epoch "
            f"{self.best_epoch} of {self.epochs_run}): RMSE of the forecast steps per band "
            "(persistence in brackets).",
            "",
            "| observed steps | " + " | ".join(b.band for b in self.by_cut[0].bands) + " |",
            "|---:|" + "---:|" * len(self.by_cut[0].bands),
        ]
        for c in self.by_cut:
            cells = [f"{b.rmse:.4g} ({b.persistence_rmse:.4g})" for b in c.bands]
            rows.append(f"| {c.observed} | " + " | ".join(cells) + " |")
        return "\n".join(rows) + "\n"


def pixel_series(
    split: SplitArrays, norm: Normaliser, max_series: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised pixel series ``[N, T, C]`` and their observed flags ``[N, T]`` of a split
    (patch/field samples: every pixel with some observed step), at most ``max_series``."""
    x = split.x
    if x.ndim == 5:
        n, t, c, h, w = x.shape
        x = np.ascontiguousarray(x.transpose(0, 3, 4, 1, 2).reshape(n * h * w, t, c))
    observed: npt.NDArray[np.bool_] = np.asarray(np.isfinite(x).any(axis=2))
    keep = np.flatnonzero(observed.any(axis=1))
    if keep.size > max_series:
        keep = np.sort(np.random.default_rng(seed).choice(keep, max_series, replace=False))
    series = norm(torch.from_numpy(np.ascontiguousarray(x[keep], dtype=np.float32)))
    return series, torch.from_numpy(observed[keep])


def _cut(observed: torch.Tensor, low: int, gen: torch.Generator) -> torch.Tensor:
    """Observed flags with every series cut at a random step in ``[low, T - 1]``."""
    n, t = observed.shape
    k = torch.randint(min(low, t - 1), t, (n,), generator=gen)
    return observed & (torch.arange(t)[None, :] < k[:, None])


def _loss(
    model: SeasonForecaster, x: torch.Tensor, seen: torch.Tensor, truth: torch.Tensor
) -> torch.Tensor:
    """Mean squared error of the forecasts of every truly observed step but the first."""
    forecast = model(x, seen).forecast
    weight = truth.clone()
    weight[:, 0] = False
    err = ((forecast - x) ** 2).mean(dim=2)
    return (err * weight).sum() / weight.sum().clamp(min=1)


def _val_loss(model: SeasonForecaster, x: torch.Tensor, obs: torch.Tensor, low: int) -> float:
    gen = torch.Generator().manual_seed(12345)  # the same cuts every epoch
    seen = _cut(obs, low, gen)
    with torch.no_grad():
        return float(_loss(model, x, seen, obs))


def train_forecaster(
    data: TrainingData, contract: InputContract, params: ForecastParams | None = None
) -> tuple[SeasonForecaster, ForecastReport]:
    """A season forecaster trained on ``data``'s train split (best epoch on val) for the
    classifier of ``contract`` (its bands, steps, normalisation), with its val report."""
    p = params or ForecastParams()
    if contract.n_time is None or contract.n_time < 2:
        raise TrainingError(
            f"a season forecaster needs composite series of 2 steps or more (n_time "
            f"{contract.n_time})",
            hint="build the cube with a composite period over the season",
        )
    norm = Normaliser(contract.bands, contract.normalisation)
    data = data.with_bands(contract.bands)
    x_tr, o_tr = pixel_series(data.split("train"), norm, p.max_series, p.seed)
    x_va, o_va = pixel_series(data.split("val"), norm, p.max_series, p.seed + 1)
    torch.manual_seed(p.seed)
    model = SeasonForecaster(p.model, contract.model_copy(update={"min_steps": p.min_steps}))
    opt = torch.optim.Adam(model.parameters(), lr=p.lr)
    gen = torch.Generator().manual_seed(p.seed)
    best, best_epoch, best_state, epochs_run = float("inf"), 0, None, 0
    for epoch in range(1, p.epochs + 1):
        model.train()
        order = torch.randperm(len(x_tr), generator=gen)
        for i in range(0, len(order), p.batch_size):
            idx = order[i : i + p.batch_size]
            truth = o_tr[idx]
            loss = _loss(model, x_tr[idx], _cut(truth, p.min_steps, gen), truth)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        val = _val_loss(model, x_va, o_va, p.min_steps)
        epochs_run = epoch
        if val < best - 1e-6:
            best, best_epoch = val, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= p.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    report = score_forecaster(model, data, "val", p.max_series, p.seed + 1)
    report = report.model_copy(
        update={"epochs_run": epochs_run, "best_epoch": best_epoch, "val_loss": best}
    )
    return model, report


def score_forecaster(
    model: SeasonForecaster, data: TrainingData, split: str, max_series: int = 50_000, seed: int = 1
) -> ForecastReport:
    """RMSE per band (band units) of the forecast steps after every cut, and persistence's."""
    contract = model.contract
    norm = Normaliser(contract.bands, contract.normalisation)
    x, obs = pixel_series(data.with_bands(contract.bands).split(split), norm, max_series, seed)
    std = np.array([contract.normalisation[b].std for b in contract.bands])
    t = x.shape[1]
    cuts = []
    for k in range(1, t):
        seen = obs & (torch.arange(t)[None, :] < k)
        with torch.no_grad():
            completed = model(x, seen).completed.numpy()
        # persistence: the last observed step before the cut, carried forward
        last = _last_seen(x.numpy(), seen.numpy())
        target = obs.numpy() & ~seen.numpy()  # truly observed, hidden from the model
        target &= seen.numpy().any(axis=1, keepdims=True)
        bands = []
        for ci, name in enumerate(contract.bands):
            diff = (completed[..., ci] - x.numpy()[..., ci])[target]
            pdiff = (last[:, None, ci] - x.numpy()[..., ci])[target]
            bands.append(
                BandError(
                    band=name,
                    rmse=float(np.sqrt(np.mean(diff**2))) * float(std[ci]) if diff.size else 0.0,
                    persistence_rmse=float(np.sqrt(np.mean(pdiff**2))) * float(std[ci])
                    if pdiff.size
                    else 0.0,
                )
            )
        cuts.append(CutError(observed=k, bands=bands))
    return ForecastReport(
        split=split, n_series=len(x), epochs_run=0, best_epoch=0, val_loss=0.0, by_cut=cuts
    )


def _last_seen(x: npt.NDArray[np.float32], seen: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
    """``[N, C]``: each series' last seen step (zeros, the mean, when none)."""
    t = x.shape[1]
    idx = np.where(seen, np.arange(t)[None, :], -1).max(axis=1)
    out = x[np.arange(len(x)), np.clip(idx, 0, t - 1)]
    out[idx < 0] = 0.0
    result: npt.NDArray[np.float32] = out
    return result


# ---------------------------------------------------------------------------------------------
# MLflow: the forecaster beside its classifier
# ---------------------------------------------------------------------------------------------


@dataclass
class LoggedForecaster:
    """A forecaster logged beside its classifier in MLflow and registered."""

    run_id: str
    name: str
    version: str
    uri: str


def forecaster_name(classifier_name: str) -> str:
    """The registered model of a classifier's forecasters."""
    return f"{classifier_name}{FORECASTER_SUFFIX}"


def log_forecaster(
    model: SeasonForecaster,
    report: ForecastReport,
    params: ForecastParams,
    classifier_run_id: str,
    classifier_name: str,
) -> LoggedForecaster:
    """Log the forecaster into its classifier's MLflow run (files under ``forecaster/``,
    per-band RMSE metrics ``forecast_val_rmse_<band>``, the report, the parameters as
    ``forecast.*``) and register the files as a new version of ``<classifier>-forecaster``
    tagged with the classifier's run. A map made with the classifier finds its forecaster
    through the run, so the two never drift apart."""
    from cropflow.train.registry import RunLogger, flatten, mlflow_target
    from models.serialization import save_model

    name = forecaster_name(classifier_name)
    target = mlflow_target(name)
    logger = RunLogger(target, classifier_run_id)
    logger.log_params(flatten(params.model_dump(mode="json"), "forecast."))
    metrics = {"forecast_val_loss": report.val_loss}
    for band in report.mean_by_band():
        metrics[f"forecast_val_rmse_{band.band}"] = band.rmse
        metrics[f"forecast_val_persistence_rmse_{band.band}"] = band.persistence_rmse
    logger.log_metrics(metrics, step=report.best_epoch)
    with tempfile.TemporaryDirectory(prefix="cropflow-forecaster-") as tmp:
        folder = save_model(model, Path(tmp) / FORECASTER_ARTIFACT)
        logger.log_dir(folder, FORECASTER_ARTIFACT)
    logger.log_dict(json.loads(report.model_dump_json()), "forecast_report.json")
    client = target.client
    try:
        client.get_registered_model(name)
    except Exception:  # MLflow's "not found" has no type of its own
        client.create_registered_model(
            name,
            description=f"Season forecasters of {classifier_name}: each version completes the "
            "partial seasons of the classifier run it is tagged with (classifier_run_id).",
        )
    source = f"{client.get_run(classifier_run_id).info.artifact_uri}/{FORECASTER_ARTIFACT}"
    mv = client.create_model_version(
        name, source, run_id=classifier_run_id, tags={"classifier_run_id": classifier_run_id}
    )
    return LoggedForecaster(
        run_id=classifier_run_id,
        name=name,
        version=str(mv.version),
        uri=f"runs:/{classifier_run_id}/{FORECASTER_ARTIFACT}",
    )


def load_run_forecaster(classifier_run_id: str) -> SeasonForecaster:
    """The forecaster trained with the classifier of MLflow run ``classifier_run_id``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from cropflow.errors import ConfigError
    from cropflow.train.registry import mlflow_target
    from models.serialization import load_forecaster

    target = mlflow_target()
    uri = f"runs:/{classifier_run_id}/{FORECASTER_ARTIFACT}"
    try:
        with tempfile.TemporaryDirectory(prefix="cropflow-forecaster-") as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri,
                dst_path=tmp,
                tracking_uri=target.connect_uri or target.tracking_uri,
            )
            return load_forecaster(local)
    except (MlflowException, OSError) as exc:
        raise ConfigError(
            f"the model of run {classifier_run_id} has no season forecaster ({uri}): {exc}",
            hint="retrain the region with in_season.strategy: forecast (the retrain trains the "
            "forecaster beside the model), or remap with the truncation strategy",
        ) from None


class ForecasterResult(BaseModel):
    """A forecaster trained for a classifier run, logged and registered (references only)."""

    classifier_run_id: str
    registered_model: str
    version: str
    uri: str
    report: ForecastReport


def run_contract(run_id: str) -> InputContract:
    """The input contract logged by a classifier's MLflow run (``contract.json``)."""
    from mlflow.exceptions import MlflowException

    from cropflow.errors import ConfigError
    from cropflow.train.registry import mlflow_target

    target = mlflow_target()
    try:
        with tempfile.TemporaryDirectory(prefix="cropflow-contract-") as tmp:
            path = target.client.download_artifacts(run_id, "contract.json", tmp)
            return InputContract.model_validate_json(Path(path).read_text())
    except (MlflowException, OSError) as exc:
        raise ConfigError(
            f"MLflow run {run_id} has no readable contract.json: {exc}",
            hint="give the run of a classifier trained by cropflow",
        ) from None


def fit_forecaster(
    training_set: str, classifier_run_id: str, classifier_name: str, params: ForecastParams
) -> ForecasterResult:
    """Train the season forecaster of a classifier run on its training set, log it into the
    run and register it (see :func:`log_forecaster`)."""
    from cropflow.train.data import load_training_data

    contract = run_contract(classifier_run_id)
    data = load_training_data(training_set)
    model, report = train_forecaster(data, contract, params)
    logged = log_forecaster(model, report, params, classifier_run_id, classifier_name)
    return ForecasterResult(
        classifier_run_id=classifier_run_id,
        registered_model=logged.name,
        version=logged.version,
        uri=logged.uri,
        report=report,
    )
