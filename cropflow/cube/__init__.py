"""Analysis-ready Zarr datacubes built on Dask.

``plan_cube`` (no pixel read) -> ``write_cube`` (block tasks on Dask, resumable) ->
``open_cube``. The cube format is documented in :mod:`cropflow.cube.store`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cropflow.lazy import lazy_exports

if TYPE_CHECKING:
    from cropflow.cube.build import (
        build_cube as build_cube,
    )
    from cropflow.cube.build import (
        default_cube_uri as default_cube_uri,
    )
    from cropflow.cube.build import (
        lazy_cube as lazy_cube,
    )
    from cropflow.cube.build import (
        plan_from_search as plan_from_search,
    )
    from cropflow.cube.build import (
        write_cube as write_cube,
    )
    from cropflow.cube.cluster import (
        dask_client as dask_client,
    )
    from cropflow.cube.grid import (
        GridSpec as GridSpec,
    )
    from cropflow.cube.indices import (
        INDICES as INDICES,
    )
    from cropflow.cube.params import (
        CubeParams as CubeParams,
    )
    from cropflow.cube.params import (
        GridParams as GridParams,
    )
    from cropflow.cube.params import (
        parse_params as parse_params,
    )
    from cropflow.cube.plan import (
        BadItem as BadItem,
    )
    from cropflow.cube.plan import (
        CubePlan as CubePlan,
    )
    from cropflow.cube.plan import (
        plan_cube as plan_cube,
    )
    from cropflow.cube.sources import (
        SourceSpec as SourceSpec,
    )
    from cropflow.cube.sources import (
        source_cube_params as source_cube_params,
    )
    from cropflow.cube.stack import (
        SourcePart as SourcePart,
    )
    from cropflow.cube.stack import (
        stack_sources as stack_sources,
    )
    from cropflow.cube.store import (
        CubeRef as CubeRef,
    )
    from cropflow.cube.store import (
        open_cube as open_cube,
    )

#: Exported name -> the module defining it (imported on first use).
_EXPORTS = {
    "build_cube": "cropflow.cube.build",
    "default_cube_uri": "cropflow.cube.build",
    "lazy_cube": "cropflow.cube.build",
    "plan_from_search": "cropflow.cube.build",
    "write_cube": "cropflow.cube.build",
    "dask_client": "cropflow.cube.cluster",
    "GridSpec": "cropflow.cube.grid",
    "INDICES": "cropflow.cube.indices",
    "CubeParams": "cropflow.cube.params",
    "GridParams": "cropflow.cube.params",
    "parse_params": "cropflow.cube.params",
    "BadItem": "cropflow.cube.plan",
    "CubePlan": "cropflow.cube.plan",
    "plan_cube": "cropflow.cube.plan",
    "SourceSpec": "cropflow.cube.sources",
    "source_cube_params": "cropflow.cube.sources",
    "SourcePart": "cropflow.cube.stack",
    "stack_sources": "cropflow.cube.stack",
    "CubeRef": "cropflow.cube.store",
    "open_cube": "cropflow.cube.store",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
