"""Analysis-ready Zarr datacubes built on Dask.

``plan_cube`` (no pixel read) -> ``write_cube`` (region tasks on Dask, resumable) ->
``open_cube``. The cube format is documented in :mod:`cropflow.cube.store`.
"""

from cropflow.cube.build import (
    build_cube,
    default_cube_uri,
    lazy_cube,
    plan_from_search,
    write_cube,
)
from cropflow.cube.cluster import dask_client
from cropflow.cube.grid import GridSpec
from cropflow.cube.indices import INDICES
from cropflow.cube.params import CubeParams, GridParams, parse_params
from cropflow.cube.plan import BadItem, CubePlan, plan_cube
from cropflow.cube.store import CubeRef, open_cube

__all__ = [
    "INDICES",
    "BadItem",
    "CubeParams",
    "CubePlan",
    "CubeRef",
    "GridParams",
    "GridSpec",
    "build_cube",
    "dask_client",
    "default_cube_uri",
    "lazy_cube",
    "open_cube",
    "parse_params",
    "plan_cube",
    "plan_from_search",
    "write_cube",
]
