"""The build_cube flow under a temporary Prefect API, on prefect-dask's DaskTaskRunner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pystac
import pytest
from test_cube_support import make_scene

from cropflow.cube import CubeParams, GridParams, open_cube
from cropflow.settings import DaskSettings
from cropflow.stac.params import SearchParams
from cropflow.stac.search import save_search


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_build_cube_flow_writes_cube_and_summary(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.cube import build_cube_flow, cube_task_runner

    scene = make_scene(tmp_path / "cogs", n_dates=4, shape=(48, 40), seed=11)
    result = save_search(
        pystac.ItemCollection(scene.items), SearchParams(provider="local-demo"), tmp_path / "work"
    )
    params = CubeParams(
        bands=["red", "nir"],
        indices=["ndvi"],
        chunk_size=32,
        grid=GridParams(crs=scene.crs, resolution=10, bounds=scene.bounds),
    )
    runner = cube_task_runner(DaskSettings(n_workers=1, threads_per_worker=2, memory_limit="2GiB"))
    flow = build_cube_flow.with_options(task_runner=runner)
    out = str(tmp_path / "cube.zarr")
    ref = flow(result.uri, result.provider, params, out)
    assert ref.uri == out and ref.blocks_total == 4 and ref.blocks_written == 4
    ds = open_cube(ref.uri)
    assert ds.attrs["cropflow:search_uri"] == result.uri
    assert ds.attrs["cropflow:provider"] == "local-demo"
    valid = scene.valid()
    np.testing.assert_array_equal(ds.valid_count.values[0], valid.sum(axis=0))
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["cube-summary"]))
        )
    # the summary of this cube (other tests of the session publish cube summaries too)
    mine = [a for a in arts if ref.key in str(a.data)]
    assert mine and "EPSG:32633" in str(mine[-1].data)
    again = flow(result.uri, None, params, out)  # provider recorded with the search
    assert again.key == ref.key and again.blocks_written == 0
