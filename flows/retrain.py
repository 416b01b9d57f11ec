"""The retrain flow: search -> cube -> training set -> train -> evaluate -> promote if better.

Deployed once per region that has labels (``cropflow deploy``), and triggered from the Prefect
UI: the form is :class:`RetrainParams`. A new model takes the alias ``champion`` only when it
beats the current champion on the same validation split; otherwise it is the ``challenger``.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field

from cropflow.chain import (
    ChainSummary,
    RegionRunParams,
    forecast_params_for,
    in_season_train_options,
    needs_forecaster,
    training_set_options_for,
)
from cropflow.labels import TrainingSetOptions, TrainingSetParams
from cropflow.orchestration.caching import refreshed
from cropflow.train import TrainOptions, TrainOutcome, TrainParams
from cropflow.train.params import ForecastParams
from flows.cube import with_sources
from tasks.chain import (
    publish_region,
    region_cube_params,
    region_labels,
    region_search_params,
    resolve_region,
)
from tasks.cube import plan_cube_task, publish_cube_summary, write_cube_task
from tasks.labels import (
    prepare_labels_task,
    publish_training_set_summary,
    rasterize_labels_task,
    split_labels_task,
    write_training_set_task,
)
from tasks.search import publish_search_summary, search_items
from tasks.train import (
    publish_training_report,
    register_model,
    train_forecaster_task,
    train_model,
)


class RetrainParams(RegionRunParams):
    """What the retrain of a region is built from (to train again on identical inputs,
    change ``train.seed``: a new seed is a new training, the rest comes from the cache)."""

    train: TrainOptions = Field(
        default_factory=TrainOptions,
        title="Training",
        description="Training options: epochs, model family, learning rate, seed ...",
    )
    training_set: TrainingSetOptions = Field(
        default_factory=TrainingSetOptions,
        title="Training set",
        description="Training-set options (how labels become samples and splits).",
    )
    forecast: ForecastParams = Field(
        default_factory=ForecastParams,
        title="Season forecaster",
        description="Training of the season forecaster (regions with in_season.strategy: "
        "forecast; its min_steps comes from the region).",
    )


class RetrainResult(BaseModel):
    """References to what a retrain produced."""

    summary: ChainSummary
    outcome: TrainOutcome


@flow(name="retrain", log_prints=True)
def retrain(params: RetrainParams | None = None) -> RetrainResult:
    """Retrain the region's model from fresh imagery and its labels; promote only if better."""
    p = params or RetrainParams()
    region = resolve_region(p.region)
    publish_region(region)
    fresh = p.refresh
    search = refreshed(search_items, fresh)(region_search_params(region))
    publish_search_summary(search)
    cube_params = region_cube_params(region, p.cube)
    plan = plan_cube_task(search.uri, search.provider, cube_params)
    main = refreshed(write_cube_task, fresh)(plan, None, fresh)
    cube = with_sources(region, cube_params, main, fresh)
    publish_cube_summary(cube)
    ts_options = training_set_options_for(region, p.training_set)
    ts_params = TrainingSetParams.of(ts_options, cube.uri, region_labels(region))
    prepared = refreshed(prepare_labels_task, fresh)(ts_params)
    rasters = refreshed(rasterize_labels_task, fresh)(ts_params, prepared)
    splits = refreshed(split_labels_task, fresh)(ts_params, rasters)
    training_set = refreshed(write_training_set_task, fresh)(ts_params, prepared, rasters, splits)
    publish_training_set_summary(training_set)
    model_name = region.model_name()
    options = in_season_train_options(region, p.train)
    trained = refreshed(train_model, fresh)(TrainParams.of(options, training_set.uri, model_name))
    if needs_forecaster(region):
        refreshed(train_forecaster_task, fresh)(
            training_set.uri, trained.run_id, model_name, forecast_params_for(region, p.forecast)
        )
    registration = refreshed(register_model, fresh)(trained.run_id, model_name, region.name)
    outcome = TrainOutcome(training=trained, registration=registration)
    publish_training_report(outcome)
    summary = ChainSummary(
        region=region.name,
        search_uri=search.uri,
        cube_uri=cube.uri,
        training_set_uri=training_set.uri,
        mlflow_run_id=trained.run_id,
        model_version=registration.version,
        model_alias=registration.alias,
    )
    return RetrainResult(summary=summary, outcome=outcome)
