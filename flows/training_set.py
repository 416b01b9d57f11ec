"""The training-set flows: cube + labels -> training set; sample tables -> training set."""

from __future__ import annotations

from prefect import flow

from cropflow.labels.build import TableImportParams
from cropflow.labels.options import TrainingSetParams
from cropflow.labels.summary import TrainingSetSummary
from tasks.labels import (
    import_sample_tables_task,
    prepare_labels_task,
    publish_training_set_summary,
    rasterize_labels_task,
    split_labels_task,
    write_training_set_task,
)


@flow(name="build-training-set", log_prints=True)
def build_training_set_flow(params: TrainingSetParams) -> TrainingSetSummary:
    """Join labels to a datacube and write a leak-free training set; publish its summary."""
    prepared = prepare_labels_task(params)
    rasters = rasterize_labels_task(params, prepared)
    splits = split_labels_task(params, rasters)
    summary = write_training_set_task(params, prepared, rasters, splits)
    publish_training_set_summary(summary)
    return summary


@flow(name="import-sample-tables", log_prints=True)
def import_sample_tables_flow(params: TableImportParams) -> TrainingSetSummary:
    """Turn tables of labelled time series into a training set; publish its summary."""
    summary = import_sample_tables_task(params)
    publish_training_set_summary(summary)
    return summary
