"""Train, evaluate, log and register: the functions the task, flow and CLI call.

* :func:`train` -- one training run: data by reference, checkpoints, MLflow run with params,
  per-epoch metrics, evaluation artifacts, normalisation, class map, contract and the model.
* :func:`register_run` -- register a finished run's model; it becomes ``champion`` only if
  it beats the current champion on the new run's validation split, else ``challenger``.
* :func:`run_training` -- both, with a rich progress bar (the ``cropflow train`` command).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from pydantic import BaseModel, Field

from cropflow.classes import IGNORE_INDEX
from cropflow.errors import ContractError, CropflowError, TrainingError
from cropflow.settings import get_settings
from cropflow.train.calibration import calibrate
from cropflow.train.checkpoint import CheckpointStore
from cropflow.train.data import TrainingData, load_training_data
from cropflow.train.engine import (
    EpochCallback,
    ProgressReporter,
    evaluate_split,
    fit,
    pick_device,
    predict_split,
)
from cropflow.train.metrics import Evaluation, evaluate_labels, write_evaluation
from cropflow.train.params import EarlyStopping, Promotion, TrainParams
from cropflow.train.registry import (
    CHAMPION,
    Registration,
    RunLogger,
    current_alias,
    decide,
    flatten,
    load_model,
    mlflow_target,
    model_for_comparison,
    register_version,
)
from cropflow.train.selection import Comparison, paired_bootstrap, unit_ids
from models.base import CropflowModel, build_model
from models.contract import InputContract

log = logging.getLogger(__name__)
#: Metrics shown on each epoch line (with every val_ metric).
EPOCH_LINE = ("loss", "train_loss")


class TrainResult(BaseModel):
    """What one training run produced (references only)."""

    status: Literal["finished", "early_stopped", "paused"]
    run_id: str
    tracking_uri: str
    model_uri: str | None = Field(None, description="models:/m-<id> of the logged model.")
    training_set: str
    family: str
    epochs_run: int
    best_epoch: int
    monitor: str
    best_score: float
    val: dict[str, float] = Field(default_factory=dict)
    test: dict[str, float] = Field(default_factory=dict)
    checkpoint_dir: str
    resumed_from: int | None = None
    calibration: dict[str, float] = Field(
        default_factory=dict,
        description="temperature and expected calibration error (val/test, before and after).",
    )
    refit_epochs: int | None = Field(
        None,
        description="Epochs of the refit on train + val (TrainOptions.refit); None: the model "
        "is the one selected on val.",
    )
    selection_test: dict[str, float] = Field(
        default_factory=dict,
        description="Test scores of the model selected on val, when the logged model is its "
        "refit (then `test` is the refit's).",
    )


class TrainOutcome(BaseModel):
    """A training run and, when it was registered, the registry's decision."""

    training: TrainResult
    registration: Registration | None = None

    def to_markdown(self) -> str:
        """A short report: status, scores per split, the registry decision, where to look."""
        t = self.training
        lines = [
            f"## Training `{t.family}` ({t.status})",
            "",
            f"- training set: `{t.training_set}`",
            f"- epochs run: {t.epochs_run}, best epoch {t.best_epoch} "
            f"(val {t.monitor} {t.best_score:.4f})",
            f"- MLflow run `{t.run_id}` in `{t.tracking_uri}`; model `{t.model_uri}`",
        ]
        if t.refit_epochs is not None:
            before = t.selection_test.get("macro_f1")
            lines.append(
                f"- refit on train + val for {t.refit_epochs} epochs: val scores are the "
                "selected model's, test scores the refit's"
                + ("" if before is None else f" (the selected model's test macro F1 {before:.4f})")
            )
        lines.append("")
        if t.val or t.test:
            names = list(t.val or t.test)
            lines += ["| split | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
            for split, scores in (("val", t.val), ("test", t.test)):
                if scores:
                    row = " | ".join(f"{scores[n]:.4f}" for n in names)
                    lines.append(f"| {split} | {row} |")
            lines.append("")
        r = self.registration
        if r is not None:
            lines.append(
                f"Registered as **{r.registered_model} v{r.version}**, alias **{r.alias}**: "
                f"{r.reason}."
            )
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Data checks
# ---------------------------------------------------------------------------------------------


def prepare_data(params: TrainParams, data: TrainingData) -> TrainingData:
    """Check the training set against the parameters (bands, classes, non-empty splits) and
    keep the requested bands in the requested order."""
    contract = data.contract()
    if params.bands is not None:
        contract.model_copy(update={"bands": params.bands}).check_bands(data.bands)
        data = data.with_bands(params.bands)
    if params.classes is not None and params.classes != data.class_map.names:
        raise ContractError(
            f"model expects classes {params.classes} but training set {data.uri} has "
            f"{data.class_map.names}",
            hint="train with the training set's classes (classes=None), or rebuild the "
            "training set with a mapping that yields these classes",
        )
    for split in ("train", "val", "test"):
        data.split(split)
    return data


def trained_contract(params: TrainParams, data: TrainingData) -> InputContract:
    """The contract of a model trained with ``params`` on ``data``: with truncation, it
    maps from ``truncation_min_steps`` observed steps (its ``min_steps``)."""
    contract = data.contract()
    if params.augment.truncation > 0 and contract.time_kind == "composite":
        return contract.model_copy(update={"min_steps": params.augment.truncation_min_steps})
    return contract


def val_units(data: TrainingData) -> int:
    """Labelled units (fields, blocks or samples) of the validation split."""
    val = data.split("val")
    labelled = val.y.reshape(len(val), -1) != IGNORE_INDEX
    keys = val.units if val.units is not None else np.arange(len(val))
    return int(np.unique(keys[labelled.any(axis=1)]).size)


def small_val_warning(data: TrainingData, stopping: EarlyStopping, n_units: int) -> str | None:
    """A warning when the validation split's ``n_units`` are fewer than ``min_val_units``:
    its best epoch and champion comparison then rest on a handful of fields or blocks."""
    min_units = stopping.min_val_units
    if n_units >= min_units:
        return None
    what = (
        "the run trains its whole schedule and keeps the last epoch (early_stopping.small_val)"
        if stopping.small_val == "full_schedule"
        else "early stopping is noisy"
    )
    return (
        f"the val split of {data.uri} has {n_units} {data.split('val').unit_kind}s "
        f"(< {min_units}): {what}, and the champion comparison is noisy; give the training "
        "set a larger val split (val_fraction, more labelled fields) or accept the noise"
    )


#: RHO-Loss: fewest val samples per class for a trustworthy holdout (irreducible-loss) model.
RHO_MIN_VAL_PER_CLASS = 10


def holdout_warning(data: TrainingData, params: TrainParams) -> str | None:
    """A warning when RHO-Loss's holdout model would learn a class from fewer than
    :data:`RHO_MIN_VAL_PER_CLASS` val samples: its irreducible losses are then noise and the
    selection starves those classes (measured: below uniform sampling, benchmarks/RESULTS.md)."""
    if params.sampling.strategy != "rho_loss":
        return None
    val = data.split("val")
    labels = val.y.reshape(len(val), -1)
    names = data.class_map.names
    counts = {n: int((labels == i).any(axis=1).sum()) for i, n in enumerate(names)}
    thin = sorted(n for n, c in counts.items() if c < RHO_MIN_VAL_PER_CLASS)
    if not thin:
        return None
    shown = ", ".join(f"{n} ({counts[n]})" for n in thin[:8]) + (" ..." if len(thin) > 8 else "")
    return (
        f"sampling rho_loss: the holdout model learns {len(thin)} of {len(names)} classes from "
        f"fewer than {RHO_MIN_VAL_PER_CLASS} val samples each ({shown}): its irreducible "
        "losses are noisy and the selection may starve those classes; use sampling loss or "
        "uniform, or give the training set a larger val split"
    )


def _check_resumable(store: CheckpointStore, contract: InputContract) -> None:
    """A resumed run must see the same bands and classes as before."""
    path = store.directory / "contract.json"
    if path.is_file():
        before = InputContract.model_validate_json(path.read_text())
        before.check_bands(contract.bands)
        contract.check_bands(before.bands)
        before.check_classes(contract.class_map)
    store.directory.mkdir(parents=True, exist_ok=True)
    path.write_text(contract.model_dump_json(indent=1))


def checkpoint_store(params: TrainParams) -> CheckpointStore:
    key = params.run_key()
    directory = params.checkpoint_dir or get_settings().workdir / "checkpoints" / key
    return CheckpointStore(Path(directory), key)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def _data_summary(data: TrainingData) -> dict[str, str]:
    return {
        "data.training_set": data.uri,
        "data.input_kind": data.input_kind,
        "data.time_kind": data.time_kind,
        "data.n_time": str(data.n_time),
        "data.bands": json.dumps(data.bands),
        "data.classes": json.dumps(data.class_map.names),
        **{f"data.n_{k}": str(len(v)) for k, v in data.splits.items()},
    }


def train(
    params: TrainParams,
    *,
    data: TrainingData | None = None,
    progress: ProgressReporter | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Train one model and log it to MLflow (not registered; see :func:`register_run`).

    ``data`` may be given in-process (tests, benchmarks); otherwise the training set is read
    from ``params.training_set``. A rerun with the same parameters resumes from the last
    checkpoint unless the run finished or ``params.resume`` is False.
    """
    if data is None:
        data = load_training_data(params.training_set)
    data = prepare_data(params, data)
    options = params  # unresolved, for the refit's schedule
    params = params.for_training_size(len(data.split("train")))  # min_steps on small sets
    n_val_units = val_units(data)
    params = params.for_val_units(n_val_units)  # no selection on a tiny val split
    contract = trained_contract(params, data)
    torch.manual_seed(params.seed)
    model = build_model(params.model, contract)

    store = checkpoint_store(params)
    state = store.latest() if params.resume and not store.is_done() else None
    if state is None:
        store.reset()
    _check_resumable(store, contract)

    target = mlflow_target()
    logger = RunLogger.start(
        target,
        None if state is None else state.mlflow_run_id,
        params.run_name,
        tags={"cropflow.family": params.model.name, "cropflow.run_key": store.run_key},
    )
    if state is None or state.mlflow_run_id != logger.run_id:
        logger.log_params(
            {
                **flatten(params.model_dump(mode="json")),
                **_data_summary(data),
                "model.n_parameters": str(model.n_parameters),
            }
        )
        logger.log_dict(json.loads(contract.model_dump_json()), "contract.json")
        logger.log_dict(json.loads(contract.class_map.model_dump_json()), "class_map.json")
        logger.log_dict(
            {b: s.model_dump() for b, s in contract.normalisation.items()}, "normalisation.json"
        )
        if data.class_weights is not None:
            logger.log_dict(data.class_weights, "class_weights.json")
        for entry in [] if state is None else state.history:
            _log_history_entry(logger, entry)
    elif state.history:  # the last epoch may have been checkpointed but not logged
        _log_history_entry(logger, state.history[-1])
    logger.set_tags({"cropflow.status": "running", "cropflow.checkpoint_dir": str(store.directory)})
    warnings = [
        w
        for w in (
            small_val_warning(data, params.early_stopping, n_val_units),
            holdout_warning(data, params),
        )
        if w is not None
    ]
    for w in warnings:
        log.warning(w)
    if warnings:
        logger.set_tags({"cropflow.warning": "; ".join(warnings)[:4000]})

    clock = {"last": time.perf_counter()}

    def log_epoch(epoch: int, metrics: dict[str, float], m: CropflowModel) -> None:
        logger.log_metrics(metrics, epoch)
        now = time.perf_counter()
        shown = ", ".join(
            f"{k} {v:.4f}" for k, v in metrics.items() if k in EPOCH_LINE or k.startswith("val_")
        )
        log.info(
            "epoch %d/%d of %s: %s (%.1f s)",
            epoch,
            params.planned_epochs,
            params.model.name,
            shown,
            now - clock["last"],
        )
        clock["last"] = now
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics, m)

    try:
        result = fit(
            model,
            data,
            params,
            store,
            resume_state=state,
            mlflow_run_id=logger.run_id,
            on_epoch_end=log_epoch,
            progress=progress,
        )
    except KeyboardInterrupt:
        logger.set_tags({"cropflow.status": "interrupted"})
        logger.finish("KILLED")
        raise
    except Exception as exc:
        logger.set_tags({"cropflow.status": "failed", "cropflow.error": str(exc)[:4000]})
        logger.finish("FAILED")
        raise

    base = TrainResult(
        status=result.status,
        run_id=logger.run_id,
        tracking_uri=target.tracking_uri,
        training_set=data.uri,
        family=params.model.name,
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        monitor=result.monitor,
        best_score=result.best_score,
        checkpoint_dir=str(store.directory),
        resumed_from=result.resumed_from,
    )
    if result.status == "paused":
        logger.set_tags({"cropflow.status": "paused"})
        logger.finish("KILLED")
        return base

    try:
        device = pick_device(params.device)
        selected = result.model
        calibration: dict[str, float] = {}
        if params.calibrate:
            calibration = calibrate(
                selected, data, device, params.effective_eval_batch_size, params.amp
            )
            logger.log_metrics(calibration, step=result.epochs_run)

        def scores(model: CropflowModel, split: str) -> Evaluation:
            return evaluate_split(
                model,
                data.split(split),
                split,
                batch_size=params.effective_eval_batch_size,
                device=device,
                amp=params.amp,
            )

        val = scores(selected, "val")  # always the model selected on val: val is unseen
        final, refit_epochs, selection_test = selected, None, None
        if options.refits(data.input_kind, len(data.split("train"))):
            selection_test = scores(selected, "test")
            final, refit_epochs = refit_on_val(options, data, contract, result.best_epoch, store)
            final.temperature.copy_(selected.temperature)
            logger.log_metrics(
                {"refit_epochs": refit_epochs, **selection_test.summary("selection_test_")},
                step=result.epochs_run,
            )
        test = scores(final, "test")
        for m in (selected, final):
            m.to("cpu")
        with tempfile.TemporaryDirectory(prefix="cropflow-eval-") as tmp:
            for ev in (val, test):
                write_evaluation(ev, Path(tmp))
            _write_history(result.history, Path(tmp) / "history.csv")
            logger.log_dir(Path(tmp), "evaluation")
        logger.log_metrics(
            {**val.summary("best_val_"), **test.summary("test_"), "best_epoch": result.best_epoch},
            step=result.epochs_run,
        )
        if refit_epochs is not None:
            logger.log_selection_model(selected)
        model_uri = logger.log_model(final)
    except Exception as exc:
        logger.set_tags({"cropflow.status": "failed", "cropflow.error": str(exc)[:4000]})
        logger.finish("FAILED")
        raise
    store.mark_done({"run_id": logger.run_id, "model_uri": model_uri, "status": result.status})
    logger.set_tags({"cropflow.status": result.status})
    logger.finish()
    return base.model_copy(
        update={
            "model_uri": model_uri,
            "val": val.summary(),
            "test": test.summary(),
            "calibration": calibration,
            "refit_epochs": refit_epochs,
            "selection_test": {} if selection_test is None else selection_test.summary(),
        }
    )


def refit_on_val(
    options: TrainParams,
    data: TrainingData,
    contract: InputContract,
    best_epoch: int,
    store: CheckpointStore,
) -> tuple[CropflowModel, int]:
    """A fresh model (same seed) trained on train + val for the best epoch's share of the
    schedule (:meth:`TrainOptions.for_refit`; ``options`` unresolved) -> (model, epochs).

    Its checkpoints go to ``<store>/refit`` (started afresh each time); the model is the last
    epoch's (the weight average when ``average_epochs`` is set), not a val-selected one. No
    progress bar: its val scores would be of data the refit trains on.
    """
    n_train, n_val = len(data.split("train")), len(data.split("val"))
    params = options.for_refit(n_train, n_val, best_epoch)
    log.info(
        "refit of %s on train + val (%d + %d samples) for %d epochs",
        options.model.name,
        n_train,
        n_val,
        params.max_epochs,
    )
    torch.manual_seed(params.seed)
    model = build_model(params.model, contract)
    refit_store = CheckpointStore(store.directory / "refit", f"{store.run_key}-refit")
    refit_store.reset()
    fit(model, data.with_val_in_train(), params, refit_store)
    state = refit_store.latest()
    if state is None:  # fit raises before this when no epoch ran
        raise TrainingError("the refit on train + val wrote no checkpoint", hint="rerun")
    model.load_state_dict(state.model if state.averaged is None else state.averaged)
    model.eval()
    return model, state.epoch


def _log_history_entry(logger: RunLogger, entry: dict[str, float]) -> None:
    logger.log_metrics({k: v for k, v in entry.items() if k != "epoch"}, int(entry["epoch"]))


def _write_history(history: list[dict[str, float]], path: Path) -> None:
    import pandas as pd

    pd.DataFrame(history).to_csv(path, index=False, float_format="%.6g")


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------


def score_on_val(model: CropflowModel, data: TrainingData, metric: str) -> Evaluation:
    """``model`` on ``data``'s validation split, with the model's own bands and statistics."""
    return evaluate_split(
        model,
        data.with_bands(model.contract.bands).split("val"),
        "val",
        batch_size=256 if data.input_kind == "pixel" else 16,
        device=pick_device("auto"),
    )


def incomparable(champion: InputContract, data: TrainingData) -> str | None:
    """Why a champion cannot be scored on this data, or None when it can."""
    if champion.input_kind != data.input_kind:
        return f"champion takes {champion.input_kind} input, the data is {data.input_kind}"
    try:
        champion.check_bands(data.bands)
        champion.check_classes(data.class_map)
        if data.n_time is not None:
            champion.check_time(data.n_time, data.period)
    except CropflowError as exc:
        return exc.message
    return None


def register_run(
    run_id: str,
    *,
    registered_model: str | None = None,
    data: TrainingData | None = None,
    region: str | None = None,
) -> Registration:
    """Register run ``run_id``'s model into ``registered_model`` (None: the settings') and
    decide champion or challenger of that registered model (see module doc).

    The comparison uses the early-stopping metric of the run (macro F1 when that is the
    loss); both scores are recorded on the run and the model version, whose description
    (and the registered model's) says what it is, with ``region`` when given.
    """
    target = mlflow_target(registered_model)
    run = target.client.get_run(run_id)
    model_uri = run.data.tags.get("cropflow.model_uri")
    if not model_uri:
        raise TrainingError(
            f"MLflow run {run_id} has no logged model (status "
            f"{run.data.tags.get('cropflow.status', run.info.status)})",
            hint="finish the training (rerun it to resume) before registering",
        )
    monitor = run.data.params.get("early_stopping.metric", "macro_f1")
    metric = "macro_f1" if monitor == "loss" else monitor
    if data is None:
        data = load_training_data(run.data.params["training_set"])

    promotion = Promotion(
        confidence=float(run.data.params.get("promotion.confidence", Promotion().confidence)),
        n_bootstrap=int(run.data.params.get("promotion.n_bootstrap", Promotion().n_bootstrap)),
    )

    before = current_alias(CHAMPION, target.registered_model)
    version = register_version(target, model_uri, run_id, region)
    new = load_model(f"models:/{target.registered_model}/{version}")
    judged_new = model_for_comparison(new.model, run_id, target.registered_model)
    pred_new = val_predictions(judged_new, data)
    score = float(getattr(score_val_predictions(judged_new, data, pred_new), metric))

    champion: tuple[str, float | None, str] | None = None
    comparison = None
    if before is not None:
        champ = load_model(f"models:/{target.registered_model}/{before[0]}")
        why = incomparable(champ.contract, data)
        champ_score = None
        if why is None:
            judged_champ = model_for_comparison(champ.model, champ.run_id, target.registered_model)
            pred_champ = val_predictions(judged_champ, data)
            champ_score = float(
                getattr(score_val_predictions(judged_champ, data, pred_champ), metric)
            )
            comparison = compare_on_val(
                data, judged_new, pred_new, judged_champ, pred_champ, metric, promotion
            )
        champion = (before[0], champ_score, why or "")
    return decide(target, run_id, version, metric, score, champion, comparison, region)


def val_predictions(model: CropflowModel, data: TrainingData) -> npt.NDArray[np.int64]:
    """``model``'s class indices (its own class order) on ``data``'s validation split."""
    pred, _ = predict_split(
        model,
        data.with_bands(model.contract.bands).split("val"),
        batch_size=256 if data.input_kind == "pixel" else 16,
        device=pick_device("auto"),
    )
    return pred


def score_val_predictions(
    model: CropflowModel, data: TrainingData, pred: npt.NDArray[np.int64]
) -> Evaluation:
    """Every score of ``pred`` (``model``'s predictions) on the validation split."""
    names = model.contract.class_map.names
    return evaluate_labels(data.split("val").y, pred, names, "val", model.ignore_index)


def compare_on_val(
    data: TrainingData,
    new: CropflowModel,
    pred_new: npt.NDArray[np.int64],
    champion: CropflowModel,
    pred_champion: npt.NDArray[np.int64],
    metric: str,
    promotion: Promotion,
) -> Comparison:
    """The paired bootstrap of the new model against the champion on the val split, both
    predictions in the data's class order (:mod:`cropflow.train.selection`)."""
    val = data.split("val")
    names = data.class_map.names

    def in_data_order(model: CropflowModel, pred: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        lut = np.array([names.index(n) for n in model.contract.class_map.names], np.int64)
        return lut[pred]

    units = val.units if val.units is not None else unit_ids(len(val))[0]
    return paired_bootstrap(
        val.y,
        in_data_order(new, pred_new),
        in_data_order(champion, pred_champion),
        units,
        len(names),
        metric=metric,
        unit=val.unit_kind,
        n_bootstrap=promotion.n_bootstrap,
        confidence=promotion.confidence,
    )


def run_training(params: TrainParams, *, progress: bool = False) -> TrainOutcome:
    """Train, then register when ``params.register_model`` (the ``cropflow train`` command)."""
    if progress:
        from cropflow.train.progress import RichProgress

        with RichProgress() as bar:
            result = train(params, progress=bar)
    else:
        result = train(params)
    registration = None
    if params.register_model and result.status != "paused":
        registration = register_run(result.run_id, registered_model=params.registered_model)
    return TrainOutcome(training=result, registration=registration)
