"""Prefect tasks of the training step."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from cropflow.orchestration.caching import stage_task_options
from cropflow.train import Registration, TrainOutcome, TrainParams, TrainResult, register_run, train
from cropflow.train.crossval import CrossValResult, cross_validate
from cropflow.train.forecast import ForecasterResult, fit_forecaster
from cropflow.train.params import AUTO_EPOCHS, CrossValParams, ForecastParams
from tasks.progress import progress_artifact


@task(name="train-model", **stage_task_options())
def train_model(params: TrainParams) -> TrainResult:
    """Train one model (any family) and log it to MLflow; a rerun resumes from checkpoints.
    A progress artifact follows the epochs."""
    update = progress_artifact(f"epochs of {params.model.name} on {params.training_set}")
    # with epochs unset, the total is known once the training set is read: until then the
    # artifact moves by the epochs done out of the auto minimum
    total = params.epochs or AUTO_EPOCHS
    result = train(
        params, on_epoch_end=lambda epoch, _m, _model: update(epoch, max(total, epoch + 1))
    )
    update(1, 1)  # done, also when early stopping ended it before the planned epochs
    return result


@task(name="register-model", **stage_task_options())
def register_model(
    run_id: str, registered_model: str | None = None, region: str | None = None
) -> Registration:
    """Register a run's model into ``registered_model`` (None: the settings'): champion if
    it beats that registered model's champion, else challenger."""
    return register_run(run_id, registered_model=registered_model, region=region)


@task(name="train-forecaster", **stage_task_options())
def train_forecaster_task(
    training_set: str, classifier_run_id: str, classifier_name: str, params: ForecastParams
) -> ForecasterResult:
    """Train the season forecaster of a classifier run (in-season strategy "forecast"), log
    it into the run and register it; its reconstruction error per band is an artifact."""
    result = fit_forecaster(training_set, classifier_run_id, classifier_name, params)
    create_markdown_artifact(
        markdown=result.report.to_markdown(),
        key="season-forecaster",
        description=f"Season forecaster of run {classifier_run_id}",
    )
    return result


@task(name="training-report")
def publish_training_report(outcome: TrainOutcome) -> None:
    """Show the training outcome as a Prefect markdown artifact."""
    create_markdown_artifact(
        markdown=outcome.to_markdown(),
        key="training-report",
        description=f"Training {outcome.training.family} (MLflow run {outcome.training.run_id})",
    )


@task(name="cross-validate")
def cross_validate_task(params: CrossValParams) -> CrossValResult:
    """Train and score one model per spatial fold (each an MLflow run)."""
    return cross_validate(params)


@task(name="cross-validation-report")
def publish_cross_validation(result: CrossValResult) -> None:
    """The per-fold scores with their mean and spread, as a Prefect markdown artifact."""
    create_markdown_artifact(
        markdown=result.to_markdown(),
        key="cross-validation",
        description=f"{len(result.folds)}-fold cross-validation of {result.family}",
    )
