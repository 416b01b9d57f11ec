"""Training parameters: the one typed home of every training default.

The Prefect UI form of the ``train`` flow and the ``cropflow train`` command both read
:class:`TrainParams`; nothing else repeats these defaults.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cropflow.errors import ConfigError, TrainingError
from cropflow.forms import form_order
from models.configs import ForecasterConfig, LTAEConfig, ModelConfig

#: Metrics early stopping and the champion comparison can watch (all from the validation split).
MonitorMetric = Literal["macro_f1", "overall_accuracy", "weighted_f1", "mean_iou", "kappa", "loss"]


class AugmentParams(BaseModel):
    """Training-time augmentation (never applied to validation or test data)."""

    model_config = ConfigDict(extra="forbid")

    flips: bool = Field(True, description="Patch/field models: random horizontal/vertical flips.")
    rotations: bool = Field(True, description="Patch/field models: random 90-degree rotations.")
    date_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Per-date probability of removing a date from a series (masked in "
        "pad_mask and zeroed: date removal for models that read the mask, temporal dropout "
        "for those that do not). At least one date is always kept.",
    )
    noise_std: float = Field(
        0.0, ge=0.0, description="Std of Gaussian noise added to normalised inputs."
    )
    truncation: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="In-season training: the fraction of samples whose series is cut at a "
        "random step (the steps after it marked missing in pad_mask and zeroed), so that one "
        "model maps from a partial season. 0: whole seasons only (the model then needs every "
        "step, and an in-season map needs the forecast strategy).",
    )
    truncation_min_steps: int = Field(
        2,
        ge=1,
        description="The fewest leading steps a truncated series keeps: the earliest in-season "
        "map the model is trained for (its contract's min_steps).",
    )


class EarlyStopping(BaseModel):
    """Stop when the validation metric has not improved for ``patience`` epochs."""

    model_config = ConfigDict(extra="forbid")

    metric: MonitorMetric = Field(
        "macro_f1",
        description="Validation metric watched for early stopping, the best epoch and the "
        "champion/challenger comparison ('loss' is minimised, the others maximised).",
    )
    patience: int | None = Field(
        10, ge=1, description="Epochs without improvement before stopping; None: never stop."
    )
    min_delta: float = Field(0.0, ge=0.0, description="Smallest change that counts as better.")
    min_val_units: int = Field(
        30,
        ge=1,
        description="Fewest validation units (fields, else 32-px blocks, else samples) for a "
        "trustworthy best epoch and champion comparison: a smaller val split trains anyway "
        "(see small_val), with a warning in the log and the run's tag cropflow.warning.",
    )
    small_val: Literal["full_schedule", "early_stop"] = Field(
        "full_schedule",
        description="With a val split under min_val_units: full_schedule trains the whole "
        "schedule and keeps its last epoch (and a refit then runs the whole schedule on "
        "train + val): a best epoch picked on a few fields is noise (MODIS NDVI set, 1-2 val "
        "points: TempCNN kept epoch 1 of 251; benchmarks/RESULTS.md). early_stop: stop and "
        "select on the small split as on a large one.",
    )
    keep: Literal["best", "last"] = Field(
        "best",
        description="Which epoch's model the run keeps: the best on val, or the last one.",
    )


class SamplingParams(BaseModel):
    """How each optimisation step picks its samples (active batch selection).

    ``loss`` and ``rho_loss`` draw ``candidates`` x batch_size samples, score them with the
    model in eval mode (one forward pass, no gradient) and train on the batch_size highest:
    the highest loss, or the highest reducible loss (loss minus the loss of a holdout model
    trained on the validation split: RHO-Loss, Mindermann et al. 2022). An epoch keeps the
    uniform number of steps, so epochs compare at equal optimiser steps; scoring adds about
    ``candidates`` / 3 of a step's compute. The val split then trains the holdout model and
    also picks the best epoch (as in the paper's default set-up).
    """

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["uniform", "loss", "rho_loss"] = Field(
        "uniform",
        description="uniform: shuffled batches (every sample once per epoch); loss: the "
        "highest-loss samples of each candidate batch; rho_loss: the highest reducible loss "
        "(training loss minus a holdout model's loss), which skips noisy and learnt samples.",
    )
    candidates: int = Field(
        4,
        ge=2,
        le=64,
        description="Candidate batch size as a multiple of batch_size (loss, rho_loss): "
        "each step trains on the top 1/candidates of it.",
    )
    holdout_epochs: int = Field(
        10,
        ge=1,
        description="rho_loss: epochs of the holdout (irreducible-loss) model on the "
        "validation split, same family and learning rate, no augmentation.",
    )


#: Epochs of a training with ``epochs`` unset, on a training set large enough for min_steps.
AUTO_EPOCHS = 30

#: ``refit="auto"`` refits pixel models whose train split has fewer samples than this.
REFIT_AUTO_MAX_SAMPLES = 10_000


class Promotion(BaseModel):
    """When a newly trained model takes the champion alias from the current champion."""

    model_config = ConfigDict(extra="forbid")

    confidence: float = Field(
        0.9,
        ge=0.5,
        lt=1.0,
        description="Promote only if the new model is better in at least this share of paired "
        "bootstrap resamples of the validation units (fields, else 32-px blocks), so that a "
        "gain within the validation split's noise does not replace the champion.",
    )
    n_bootstrap: int = Field(1000, ge=100, description="Bootstrap resamples of the comparison.")


class TrainOptions(BaseModel):
    """How to train, apart from on which training set (chained flows fill that in).

    The one home of the training defaults: :class:`TrainParams` adds the training set.
    Forms show what a retrain usually changes first (epochs, model, learning rate, seed).
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=form_order(first=("epochs", "model", "lr", "batch_size", "seed")),
    )

    model: ModelConfig = Field(
        default_factory=LTAEConfig,
        # Shown in forms (a default_factory has no schema default): the family by name.
        json_schema_extra={"default": {"name": "ltae"}},
        description="Model family and hyper-parameters, discriminated on `name`: "
        "crop_mask_lstm, tempcnn, ltae (pixel series), unet, utae (patches), field_bigru "
        "(fields). Default: L-TAE with its paper defaults.",
    )
    bands: list[str] | None = Field(
        None,
        description="Bands to train on, by name and in the model's input order. None: every "
        "band of the training set, in its order.",
    )
    classes: list[str] | None = Field(
        None,
        description="Expected class names (in output order). None: the training set's class "
        "map. A training set with other classes is refused.",
    )
    epochs: int | None = Field(
        None,
        ge=1,
        description="Planned number of epochs (the learning-rate schedule's length). None: "
        f"{AUTO_EPOCHS}, or more on a small training set, enough for min_steps optimisation "
        "steps (early-stopping patience and warm-up then grow in proportion).",
    )
    max_epochs: int | None = Field(
        None,
        ge=1,
        description="Pause this invocation after this epoch, keeping a resumable checkpoint "
        "(a time box; rerun with resume to continue). None: run to `epochs` or early stop.",
    )
    min_steps: int = Field(
        1500,
        ge=1,
        description="With epochs unset: the fewest optimisation steps, so that a training set "
        "of 200 samples gets as many updates as one of 20,000 (benchmarks/RESULTS.md, quality "
        "on real data).",
    )
    batch_size: int = Field(64, ge=1, description="Samples per optimisation step.")
    eval_batch_size: int | None = Field(
        None, ge=1, description="Samples per evaluation batch. None: 4 x batch_size."
    )
    lr: float = Field(1e-3, gt=0, title="Learning rate", description="Peak learning rate (AdamW).")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay.")
    schedule: Literal["constant", "cosine", "onecycle", "step"] = Field(
        "cosine",
        description="Learning-rate schedule over `epochs`: constant, cosine decay (after "
        "warm-up), one-cycle, or step decay (x0.1 at 50% and 75% of the epochs).",
    )
    warmup_epochs: int = Field(
        0, ge=0, description="Linear warm-up epochs before the cosine decay."
    )
    grad_clip: float | None = Field(
        5.0, gt=0, description="Clip the gradient norm to this value; None: no clipping."
    )
    loss: Literal["ce", "focal"] = Field("ce", description="Cross-entropy or focal loss.")
    focal_gamma: float = Field(2.0, ge=0, description="Focal loss focusing parameter.")
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="Label smoothing of the (focal) cross-entropy."
    )
    class_weighting: Literal["none", "training_set"] = Field(
        "training_set",
        description="Class weights in the loss: none, or those stored in the training set "
        "(inverse frequency of the train split, blended toward uniform).",
    )
    average_epochs: float | None = Field(
        None,
        gt=0,
        le=100,
        description="Weight averaging: validate, keep and register an exponential moving "
        "average of the weights over about this many epochs (decay 1 - 1 / (average_epochs "
        "x steps per epoch), so the horizon is the same on small and large training sets; "
        "batch-norm statistics averaged too). None: the raw weights of the best epoch.",
    )
    augment: AugmentParams = Field(default_factory=AugmentParams)
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    refit: Literal["auto", "always", "never"] = Field(
        "auto",
        description="After early stopping, train a fresh model (same seed) on train + val for "
        "the best epoch's share of the schedule and keep it: the val split's samples then "
        "train the model too. Val scores, the calibration temperature and the champion "
        "comparison stay those of the model selected on val (saved with the run). auto: "
        f"pixel models with fewer than {REFIT_AUTO_MAX_SAMPLES:,} training samples, where the "
        "val split is a large share of the data and a second training is cheap (temporalCNN "
        "fixture, 216 + 44 series, 3 seeds: macro-F1 +0.014 to +0.026 for TempCNN and L-TAE, "
        "+0.012 / -0.009 for the crop-mask LSTM (3 bands / NDVI); benchmarks/RESULTS.md); not "
        "with sampling rho_loss, whose holdout model learns from val.",
    )
    calibrate: bool = Field(
        True,
        description="Fit a softmax temperature on the validation split after training (stored "
        "with the model): the probability and confidence products become calibrated; the "
        "class map does not change. The expected calibration error before and after is logged.",
    )
    seed: int = Field(0, description="Seed of weights, shuffling, augmentation and dropout.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when present, else CPU."
    )
    amp: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU).")
    checkpoint_dir: Path | None = Field(
        None,
        description="Where per-epoch checkpoints go. None: <workdir>/checkpoints/<run key>, "
        "the key being a hash of these parameters, so that the same command resumes.",
    )
    resume: bool = Field(
        True,
        description="Continue an interrupted run from its last checkpoint (same parameters). "
        "False: start afresh, discarding old checkpoints.",
    )
    register_model: bool = Field(
        True, description="Register the model and run the champion/challenger comparison."
    )
    promotion: Promotion = Field(
        default_factory=Promotion,
        description="The champion/challenger decision (a paired bootstrap on the val split).",
    )
    run_name: str | None = Field(None, description="MLflow run name. None: MLflow's choice.")

    @property
    def planned_epochs(self) -> int:
        """The epochs of a resolved schedule (:meth:`for_training_size`)."""
        if self.epochs is None:
            raise TrainingError(
                "the number of epochs is not resolved yet",
                hint="call for_training_size(n_train) first (cropflow.train.train does)",
            )
        return self.epochs

    def for_training_size(self, n_train: int) -> Self:
        """These options for ``n_train`` training samples, epochs resolved: as given, else
        ``AUTO_EPOCHS`` raised to reach ``min_steps`` (patience and warm-up scaled alike)."""
        if self.epochs is not None:
            return self
        steps_per_epoch = max(1, math.ceil(n_train / self.batch_size))
        epochs = max(AUTO_EPOCHS, math.ceil(self.min_steps / steps_per_epoch))
        scale = epochs / AUTO_EPOCHS
        patience = self.early_stopping.patience
        update: dict[str, Any] = {
            "epochs": epochs,
            "warmup_epochs": round(self.warmup_epochs * scale),
            "early_stopping": self.early_stopping.model_copy(
                update={"patience": None if patience is None else math.ceil(patience * scale)}
            ),
        }
        return self.model_copy(update=update)

    def for_val_units(self, n_units: int) -> Self:
        """These options for a val split of ``n_units`` units: under ``min_val_units`` with
        ``small_val="full_schedule"``, no early stopping and the last epoch kept."""
        stopping = self.early_stopping
        if n_units >= stopping.min_val_units or stopping.small_val != "full_schedule":
            return self
        update = {"patience": None, "keep": "last"}
        return self.model_copy(update={"early_stopping": stopping.model_copy(update=update)})

    def refits(self, input_kind: str, n_train: int) -> bool:
        """Whether this training refits on train + val (``refit``, resolved for the data)."""
        if self.refit != "auto":
            return self.refit == "always"
        return (
            input_kind == "pixel"
            and n_train < REFIT_AUTO_MAX_SAMPLES
            and self.sampling.strategy != "rho_loss"
        )

    def for_refit(self, n_train: int, n_val: int, best_epoch: int) -> Self:
        """The options of the refit on ``n_train + n_val`` samples after the selection run on
        ``n_train`` stopped best at ``best_epoch``: the same schedule resolved for the larger
        set and run to the same share of it, with no early stopping (the val split is in the
        training data). When ``min_steps`` sets the schedule (small sets) that is about the
        selection's optimisation steps; with ``epochs`` given, the same epochs."""
        selection = self.for_training_size(n_train)
        refit = self.for_training_size(n_train + n_val)
        share = best_epoch / selection.planned_epochs
        stop = min(refit.planned_epochs, max(1, round(share * refit.planned_epochs)))
        return refit.model_copy(
            update={
                "max_epochs": stop,
                "early_stopping": refit.early_stopping.model_copy(update={"patience": None}),
            }
        )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.epochs is None:
            pass
        elif self.max_epochs is not None and self.max_epochs > self.epochs:
            raise ConfigError(
                f"max_epochs={self.max_epochs} is more than epochs={self.epochs}",
                hint="max_epochs pauses a run early; set it at most to epochs, or raise epochs",
            )
        if self.warmup_epochs >= (self.epochs or AUTO_EPOCHS) and self.warmup_epochs > 0:
            raise ConfigError(
                f"warmup_epochs={self.warmup_epochs} leaves no epoch of the {self.epochs}",
                hint="use fewer warm-up epochs than epochs",
            )
        if self.bands is not None and len(set(self.bands)) != len(self.bands):
            raise ConfigError(f"bands listed twice in {self.bands}", hint="list each band once")
        return self


class TrainParams(TrainOptions):
    """Everything one training run needs. Defaults are :class:`TrainOptions`'."""

    training_set: str = Field(
        description="Path or URI of the training-set Zarr (written by the training_set flow)."
    )
    registered_model: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Registered model (MLflow) the run registers into; its champion/challenger "
        "aliases are its own. None: settings.mlflow.registered_model (a region's runs use the "
        "region's).",
    )

    @classmethod
    def of(
        cls, options: TrainOptions, training_set: str, registered_model: str | None = None
    ) -> TrainParams:
        """``options`` applied to ``training_set`` (registering into ``registered_model``)."""
        return cls(
            training_set=training_set, registered_model=registered_model, **options.model_dump()
        )

    @property
    def effective_eval_batch_size(self) -> int:
        return self.eval_batch_size or 4 * self.batch_size

    def run_key(self) -> str:
        """A short hash of everything that shapes the result (not the run controls), naming
        the default checkpoint folder: the same parameters find the same checkpoints."""
        shaping = self.model_dump(
            mode="json",
            exclude={
                "max_epochs",
                "checkpoint_dir",
                "resume",
                "register_model",
                "registered_model",
                "run_name",
                "device",
                "calibrate",  # after training: the checkpoints do not depend on it
            },
        )
        if self.sampling == SamplingParams():  # as keyed before sampling existed
            shaping.pop("sampling", None)
        if self.average_epochs is None:  # as keyed before weight averaging existed
            shaping.pop("average_epochs", None)
        blob = json.dumps(shaping, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class CrossValParams(TrainParams):
    """A k-fold cross-validation of one model configuration on one training set
    (:mod:`cropflow.train.crossval`)."""

    folds: int = Field(5, ge=3, le=20, description="Number of folds (3 or more).")
    fold_seed: int = Field(0, description="Seed of the fold assignment of the units.")


class ForecastParams(BaseModel):
    """How the season forecaster is trained."""

    model_config = ConfigDict(extra="forbid")

    model: ForecasterConfig = Field(default_factory=ForecasterConfig)
    epochs: int = Field(100, ge=1, description="Most passes over the train split's series.")
    batch_size: int = Field(256, ge=2)
    lr: float = Field(2e-3, gt=0, description="Adam learning rate.")
    patience: int = Field(10, ge=1, description="Epochs without val improvement before stopping.")
    min_steps: int = Field(
        1, ge=1, description="The fewest observed leading steps a training series is cut to."
    )
    max_series: int = Field(
        50_000, ge=100, description="At most this many pixel series per split (a random subset)."
    )
    seed: int = Field(0)
