"""The train flow: training set -> MLflow run + registered model (champion or challenger)."""

from __future__ import annotations

from prefect import flow

from cropflow.train import TrainOutcome, TrainParams
from cropflow.train.crossval import CrossValResult
from cropflow.train.params import CrossValParams
from tasks.train import (
    cross_validate_task,
    publish_cross_validation,
    publish_training_report,
    register_model,
    train_model,
)


@flow(name="train", log_prints=True)
def train_flow(params: TrainParams) -> TrainOutcome:
    """Train a model on a training set, log it to MLflow and, unless told not to, register
    it (champion only if it beats the current champion on the same validation split)."""
    result = train_model(params)
    registration = None
    if params.register_model and result.status != "paused":
        registration = register_model(result.run_id, params.registered_model)
    outcome = TrainOutcome(training=result, registration=registration)
    publish_training_report(outcome)
    return outcome


@flow(name="cross-validate", log_prints=True)
def cross_validate_flow(params: CrossValParams) -> CrossValResult:
    """Spatial k-fold cross-validation of one model configuration: per-fold scores, their
    mean and spread (folds of whole fields or blocks; the training set's test split unused)."""
    result = cross_validate_task(params)
    publish_cross_validation(result)
    return result
