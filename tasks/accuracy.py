"""Prefect tasks of the accuracy steps: a reference sample design and an area estimate."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from cropflow.products.area_params import AreaEstimateParams, SampleDesignParams
from cropflow.products.estimate import AreaEstimateResult, estimate_class_areas
from cropflow.products.sampling import SampleDesignResult, design_sample


@task(name="sample-design")
def sample_design_task(params: SampleDesignParams) -> SampleDesignResult:
    """Draw the stratified random sample of a class map and write its files."""
    return design_sample(params)


@task(name="area-estimate")
def area_estimate_task(params: AreaEstimateParams) -> AreaEstimateResult:
    """Estimate the class areas of a map from its labelled sample and write the product."""
    return estimate_class_areas(params)


@task(name="sample-design-report")
def publish_sample_design(result: SampleDesignResult) -> str:
    """The design (points per stratum, files) as a Prefect markdown artifact."""
    markdown = result.markdown()
    create_markdown_artifact(
        markdown=markdown, key="sample-design", description=f"sample of {result.class_map}"
    )
    return markdown


@task(name="area-estimate-report")
def publish_area_estimate(result: AreaEstimateResult) -> str:
    """The area estimate report as a Prefect markdown artifact."""
    markdown = result.markdown()
    create_markdown_artifact(
        markdown=markdown, key="area-estimate", description=f"areas of {result.class_map}"
    )
    return markdown
