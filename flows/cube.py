"""The datacube flow: a saved STAC search (by reference) -> analysis-ready Zarr cube (by URI).

The flow's tasks run on Dask through prefect-dask's ``DaskTaskRunner`` (a LocalCluster sized by
``settings.dask``, or the cluster at ``settings.dask.address``); the write task submits one
task per cube block to the same cluster.
"""

from __future__ import annotations

from typing import Any, cast

from prefect import flow
from prefect.task_runners import TaskRunner
from prefect_dask.task_runners import DaskTaskRunner

from cropflow.cube import CubeParams, CubeRef
from cropflow.cube.cluster import local_cluster_kwargs, make_local_cluster
from cropflow.orchestration.caching import refreshed
from cropflow.regions import RegionConfig
from cropflow.settings import DaskSettings, get_settings
from tasks.chain import source_cube_params_task, source_search_params
from tasks.cube import plan_cube_task, publish_cube_summary, stack_sources_task, write_cube_task
from tasks.search import search_items


def cube_task_runner(settings: DaskSettings | None = None) -> TaskRunner[Any]:
    """A DaskTaskRunner for ``settings`` (default: ``get_settings().dask``)."""
    s = settings or get_settings().dask
    if s.address:
        runner = DaskTaskRunner(address=s.address)
    else:
        kwargs: dict[str, Any] = local_cluster_kwargs(s)
        runner = DaskTaskRunner(cluster_class=make_local_cluster, cluster_kwargs=kwargs)
    return cast("TaskRunner[Any]", runner)


@flow(name="build-cube", log_prints=True, task_runner=cube_task_runner())
def build_cube_flow(
    search_uri: str,
    provider: str | None = None,
    params: CubeParams | None = None,
    out: str | None = None,
) -> CubeRef:
    """Build the analysis-ready datacube of a saved STAC search; returns the cube reference.

    ``search_uri``: the saved ItemCollection (``SearchResult.uri``); ``provider``: its
    provider profile (unset: the one recorded with the search, else ``settings.stac.provider``);
    ``out``: the Zarr store path (unset: ``<workdir>/cubes/<key>.zarr``). A re-run resumes an
    interrupted build and returns a finished one at once.
    """
    plan = plan_cube_task(search_uri, provider, params or CubeParams())
    ref = write_cube_task(plan, out)
    publish_cube_summary(ref)
    return ref


def run_build_cube(
    search_uri: str,
    provider: str | None = None,
    params: CubeParams | None = None,
    out: str | None = None,
) -> CubeRef:
    """What the CLI calls: the flow with a task runner built from the current settings."""
    runner = cube_task_runner()
    return build_cube_flow.with_options(task_runner=runner)(search_uri, provider, params, out)


def with_sources(
    region: RegionConfig, params: CubeParams, main: CubeRef, refresh: bool = False
) -> CubeRef:
    """The region's cube: ``main`` (built with ``params``) and, when the region lists more
    ``sources``, each source searched, built on the main cube's grid and time axis, and
    stacked with it (variables ``<source>_<band>``). Wiring only; called by the chained flows.
    """
    if not region.sources:
        return main
    cubes: list[CubeRef] = []
    for spec in region.sources:
        search = refreshed(search_items, refresh)(source_search_params(region, spec))
        plan = plan_cube_task(
            search.uri, search.provider, source_cube_params_task(params, spec, main)
        )
        cubes.append(refreshed(write_cube_task, refresh)(plan, None, refresh))
    return refreshed(stack_sources_task, refresh)(main, list(region.sources), cubes)
