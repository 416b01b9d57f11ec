"""A region's cube without Prefect: the main collection's cube and, when the region lists more
``sources``, each source's cube on its grid, stacked. What the chained flows wire from tasks
(``flows/cube.py:with_sources``), as one call for scripts, notebooks and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from cropflow.cube.params import CubeParams
from cropflow.cube.store import CubeRef
from cropflow.regions import RegionConfig
from cropflow.stac.search import SearchResult


@dataclass(frozen=True)
class RegionCube:
    """The region's cube (stacked when it has sources) and the parts it was built from."""

    cube: CubeRef
    main: CubeRef
    searches: list[SearchResult]
    """The main search first, then one per source."""
    parts: list[CubeRef] = field(default_factory=list)
    """One cube per source, in the region's order."""


def build_region_cube(
    region: RegionConfig, base: CubeParams | None = None, as_of: date | None = None
) -> RegionCube:
    """Search, build and stack the region's cube with the current settings (Dask, workdir)."""
    from cropflow.chain import cube_params_for, search_params_for, source_search_params_for
    from cropflow.cube.build import plan_from_search, write_cube
    from cropflow.cube.cluster import dask_client
    from cropflow.cube.sources import source_cube_params
    from cropflow.cube.stack import stack_sources
    from cropflow.stac.search import search_and_save

    search = search_and_save(search_params_for(region))
    params = cube_params_for(region, base or CubeParams(), as_of=as_of)
    with dask_client() as client:  # one cluster for every part
        main = write_cube(plan_from_search(search.uri, search.provider, params), None, client)
        searches, parts = [search], []
        for spec in region.sources:
            found = search_and_save(source_search_params_for(region, spec))
            searches.append(found)
            plan = plan_from_search(
                found.uri, found.provider, source_cube_params(params, spec, main.grid)
            )
            parts.append(write_cube(plan, None, client))
        cube = stack_sources(main, list(region.sources), parts)
    return RegionCube(cube=cube, main=main, searches=searches, parts=parts)
