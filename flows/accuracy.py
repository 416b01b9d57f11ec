"""Accuracy flows: design a reference sample of a published map; estimate class areas with
confidence intervals from the labelled sample (Olofsson et al. 2014)."""

from __future__ import annotations

from prefect import flow

from cropflow.products.area_params import AreaEstimateParams, SampleDesignParams
from cropflow.products.estimate import AreaEstimateResult
from cropflow.products.sampling import SampleDesignResult
from tasks.accuracy import (
    area_estimate_task,
    publish_area_estimate,
    publish_sample_design,
    sample_design_task,
)


@flow(name="sample-design", log_prints=True)
def sample_design_flow(params: SampleDesignParams) -> SampleDesignResult:
    """Draw a stratified random sample of a class map for labellers (GeoPackage and CSV with an
    empty label column, the map class hidden) and report its design."""
    result = sample_design_task(params)
    publish_sample_design(result)
    return result


@flow(name="area-estimate", log_prints=True)
def area_estimate_flow(params: AreaEstimateParams) -> AreaEstimateResult:
    """Estimate each class's area, its standard error and confidence interval, and the
    accuracies, from the labelled sample; write class_area_estimate.* and report it."""
    result = area_estimate_task(params)
    publish_area_estimate(result)
    return result
