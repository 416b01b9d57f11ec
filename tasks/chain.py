"""Prefect tasks of the chained flows: each wraps one call of cropflow.chain / regions."""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from cropflow.chain import (
    AsOf,
    InSeasonCut,
    cube_params_for,
    labels_for,
    region_markdown,
    resolve_as_of,
    search_params_for,
    source_search_params_for,
)
from cropflow.cube import CubeParams, CubeRef
from cropflow.cube.sources import SourceSpec, source_cube_params
from cropflow.labels import LabelSource
from cropflow.regions import RegionConfig, as_region
from cropflow.stac.params import SearchParams


@task(name="resolve-region")
def resolve_region(region: str | RegionConfig | dict[str, Any]) -> RegionConfig:
    """The region's validated configuration (a name under deployments/regions/ or fields)."""
    return as_region(region)


@task(name="region-config")
def publish_region(region: RegionConfig) -> None:
    """Record the region config this run used (a region deployment names it only)."""
    create_markdown_artifact(
        markdown=region_markdown(region),
        key="region-config",
        description=f"Region {region.name} as this run read it",
    )


@task(name="region-search-params")
def region_search_params(region: RegionConfig) -> SearchParams:
    """The region's search for this run (season placed in the run's year)."""
    return search_params_for(region)


@task(name="region-cube-params")
def region_cube_params(
    region: RegionConfig, base: CubeParams, as_of: date | None = None
) -> CubeParams:
    """The cube parameters with the region's grid, period and season (cut ``as_of``)."""
    return cube_params_for(region, base, as_of=as_of)


@task(name="source-search-params")
def source_search_params(region: RegionConfig, spec: SourceSpec) -> SearchParams:
    """The search of one of the region's more sources (its AOI and season)."""
    return source_search_params_for(region, spec)


@task(name="source-cube-params")
def source_cube_params_task(base: CubeParams, spec: SourceSpec, main: CubeRef) -> CubeParams:
    """A more source's cube parameters: the main cube's grid and time axis."""
    return source_cube_params(base, spec, main.grid)


@task(name="in-season-cut")
def in_season_cut(region: RegionConfig, base: CubeParams, as_of: AsOf) -> InSeasonCut:
    """The day an in-season remap maps the season as of (None: the whole season)."""
    return resolve_as_of(region, base, as_of)


@task(name="region-labels")
def region_labels(region: RegionConfig) -> LabelSource:
    """The region's labels and mapping (refused when it has none)."""
    return labels_for(region)
