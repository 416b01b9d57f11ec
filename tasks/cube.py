"""Prefect tasks of the datacube step; each wraps one library call of ``cropflow.cube``."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from cropflow.cube import (
    CubeParams,
    CubePlan,
    CubeRef,
    SourceSpec,
    plan_from_search,
    stack_sources,
    write_cube,
)
from cropflow.orchestration.caching import stage_task_options
from tasks.progress import progress_artifact


@task(name="cube-plan")
def plan_cube_task(search_uri: str, provider: str | None, params: CubeParams) -> CubePlan:
    """Plan the cube from a saved search (no pixel read): grid, time axis, checked sources."""
    return plan_from_search(search_uri, provider, params)


@task(name="cube-write", **stage_task_options())
def write_cube_task(plan: CubePlan, uri: str | None, rebuild: bool = False) -> CubeRef:
    """Write (or resume, or repair a degraded) cube block by block on the Dask cluster; its
    reference. ``rebuild``: every block again. A progress artifact follows the blocks."""
    progress = progress_artifact(f"blocks of cube {plan.key}")
    return write_cube(plan, uri, on_progress=progress, rebuild=rebuild)


@task(name="cube-stack", **stage_task_options())
def stack_sources_task(main: CubeRef, specs: list[SourceSpec], cubes: list[CubeRef]) -> CubeRef:
    """One cube of the main cube and the more sources' cubes (variables <source>_<band>)."""
    return stack_sources(main, specs, cubes)


@task(name="cube-summary")
def publish_cube_summary(ref: CubeRef) -> None:
    """Show the cube's summary (grid, periods, valid observations, size, time) as artifacts."""
    create_markdown_artifact(
        markdown=ref.to_markdown(), key="cube-summary", description=f"Datacube {ref.key}"
    )
    create_table_artifact(
        table=[s.model_dump() for s in ref.steps],
        key="cube-steps",
        description=f"Valid observations per time step of datacube {ref.key}",
    )
