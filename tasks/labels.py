"""Prefect tasks of the label-join step: each wraps one call of cropflow.labels.build."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from cropflow.labels.build import (
    LabelRasters,
    PreparedLabels,
    SplitResult,
    TableImportParams,
    import_sample_tables,
    prepare_labels,
    rasterize_labels,
    split_labels,
    write_training_set,
)
from cropflow.labels.options import TrainingSetParams
from cropflow.labels.summary import TrainingSetSummary
from cropflow.orchestration.caching import stage_task_options


@task(name="prepare-labels", **stage_task_options())
def prepare_labels_task(params: TrainingSetParams) -> PreparedLabels:
    """Read, validate and map the labels onto the cube's CRS (writes a GeoParquet)."""
    return prepare_labels(params)


@task(name="rasterize-labels", **stage_task_options())
def rasterize_labels_task(params: TrainingSetParams, prepared: PreparedLabels) -> LabelRasters:
    """Class and field rasters on the cube grid (writes a Zarr)."""
    return rasterize_labels(params, prepared)


@task(name="split-labels", **stage_task_options())
def split_labels_task(params: TrainingSetParams, rasters: LabelRasters) -> SplitResult:
    """Spatial split units and their train/val/test splits (writes a Zarr)."""
    return split_labels(params, rasters)


@task(name="write-training-set", **stage_task_options())
def write_training_set_task(
    params: TrainingSetParams,
    prepared: PreparedLabels,
    rasters: LabelRasters,
    splits: SplitResult,
) -> TrainingSetSummary:
    """Samples, normalisation statistics and class weights -> the training set (Zarr)."""
    return write_training_set(params, prepared, rasters, splits)


@task(name="import-sample-tables", **stage_task_options())
def import_sample_tables_task(params: TableImportParams) -> TrainingSetSummary:
    """A training set straight from tables of labelled time series."""
    return import_sample_tables(params)


@task(name="training-set-summary")
def publish_training_set_summary(summary: TrainingSetSummary) -> None:
    """Show class counts per split as a Prefect table artifact, warnings as markdown."""
    create_table_artifact(
        table=summary.table(),
        key="training-set-classes",
        description=f"Class counts per split ({summary.unit}) of training set {summary.name}",
    )
    create_markdown_artifact(
        markdown=summary.markdown(),
        key="training-set-summary",
        description=f"Training set {summary.name}",
    )
