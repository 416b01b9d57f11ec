"""More sources in one cube (issue 17): Sentinel-2 + Sentinel-1 RTC + a DEM on one grid.

The demo region generated with ``radar`` (its Sentinel-1 and DEM items served by the same local
STAC API as its Sentinel-2 ones) is built into each source's cube on the main grid and
stacked; the checks compare the stacked cube with the COGs the generator wrote and with the
region's terrain, and run the chained flows (retrain, remap) on it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cropflow.cube.sources import SourceSpec, check_sources
from cropflow.cube.stack import terrain
from cropflow.errors import DataError

# --- terrain ---------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    east=st.floats(-0.8, 0.8),
    north=st.floats(-0.8, 0.8),
    res_x=st.sampled_from([10.0, 20.0, 30.0]),
    res_y=st.sampled_from([10.0, 15.0, 30.0]),
)
def test_slope_and_aspect_of_a_plane(east: float, north: float, res_x: float, res_y: float) -> None:
    """A plane rising ``east`` m/m eastwards and ``north`` m/m northwards (rows run south):
    slope atan(hypot), aspect the downhill direction clockwise from north, pixel sizes apart."""
    rows, cols = np.mgrid[0:6, 0:7]
    x, y = cols * res_x, -rows * res_y
    z = 100.0 + east * x + north * y
    slope, aspect = terrain(z, res_x, res_y)
    expected = math.degrees(math.atan(math.hypot(east, north)))
    assert np.allclose(slope, expected, atol=1e-3)
    if math.hypot(east, north) > 1e-3:
        downhill = math.degrees(math.atan2(-east, -north)) % 360.0
        diff = (aspect - downhill + 180.0) % 360.0 - 180.0
        assert np.allclose(diff, 0.0, atol=1e-2)


def test_aspect_names_the_direction_a_slope_faces() -> None:
    rows, cols = np.mgrid[0:5, 0:5].astype(float)
    rises_north = -rows * 10.0 * 0.2  # higher to the north (row 0): faces south
    rises_east = cols * 10.0 * 0.2  # higher to the east: faces west
    assert np.allclose(terrain(rises_north, 10, 10)[1], 180.0)
    assert np.allclose(terrain(rises_east, 10, 10)[1], 270.0)
    flat_slope, flat_aspect = terrain(np.full((4, 4), 7.0), 10, 10)
    assert np.all(flat_slope == 0) and np.all(np.isnan(flat_aspect))


# --- specs -----------------------------------------------------------------------------------


def test_source_specs_refuse_what_cannot_work() -> None:
    with pytest.raises(ValidationError, match="needs a static source"):
        SourceSpec(name="dem", provider="planetary-computer-cop-dem", derive=["slope"])
    with pytest.raises(ValidationError, match="needs its elevation band"):
        SourceSpec(name="dem", provider="x", static=True, derive=["slope"], bands=["height"])
    with pytest.raises(ValidationError, match="pattern"):
        SourceSpec(name="S1 radar", provider="x")
    with pytest.raises(ValueError, match=r"\['s1'\] are named twice"):
        check_sources([SourceSpec(name="s1", provider="a"), SourceSpec(name="s1", provider="b")])


def test_a_region_names_the_source_whose_profile_is_unknown() -> None:
    from cropflow.regions import RegionConfig

    with pytest.raises(ValidationError, match="source 's1'"):
        RegionConfig.model_validate(
            {
                "name": "r",
                "aoi": [13.0, 52.0, 13.1, 52.1],
                "season": {"start": "2024-03-01", "end": "2024-10-31"},
                "sources": [{"name": "s1", "provider": "no-such-profile"}],
            }
        )


def test_a_non_square_main_grid_is_refused_with_the_fix() -> None:
    from cropflow.cube import CubeParams, GridSpec
    from cropflow.cube.sources import source_cube_params
    from cropflow.errors import ConfigError

    grid = GridSpec(crs="EPSG:32633", resolution=10, resolution_y=10.02, bounds=(0, 0, 100, 100))
    with pytest.raises(ConfigError, match="non-square") as err:
        source_cube_params(CubeParams(), SourceSpec(name="s1", provider="x"), grid)
    assert "grid" in (err.value.hint or "")


# --- the radar demo through the cube stages --------------------------------------------------


@pytest.fixture(scope="module")
def radar_demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny demo with Sentinel-1 and a DEM: each source's cube and the stacked one."""
    import os

    from cropflow.chain import demo_config, embedded_demo_region
    from cropflow.cube.region import build_region_cube
    from cropflow.demo import generate_demo
    from cropflow.settings import get_settings

    work = tmp_path_factory.mktemp("radar")
    old = os.environ.get("CROPFLOW_WORKDIR")
    os.environ["CROPFLOW_WORKDIR"] = str(work)
    try:
        generate_demo(get_settings().demo_dir, demo_config("tiny", None, radar=True))
        region = embedded_demo_region(radar=True)
        built = build_region_cube(region)
        return {
            "work": work,
            "region": region,
            "main": built.main,
            "cubes": built.parts,
            "searches": built.searches[1:],
            "stacked": built.cube,
            "demo_dir": get_settings().demo_dir,
        }
    finally:
        if old is None:
            os.environ.pop("CROPFLOW_WORKDIR", None)
        else:
            os.environ["CROPFLOW_WORKDIR"] = old


def test_the_stacked_cube_names_each_variable_by_source_with_its_units(
    radar_demo: dict[str, Any],
) -> None:
    from cropflow.cube import open_cube

    ds = open_cube(radar_demo["stacked"].uri)
    for name in ("red", "nir", "s1_vv", "s1_vh"):
        assert ds[name].dims == ("time", "y", "x")
    for name in ("dem_elevation", "dem_slope", "dem_aspect"):
        assert ds[name].dims == ("y", "x"), "static layers are time-invariant"
    assert ds["s1_vv"].attrs["units"] == "dB" and ds["s1_vv"].attrs["composite"] == "mean_db"
    assert ds["dem_elevation"].attrs["units"] == "m"
    assert ds["dem_slope"].attrs["units"] == "degree"
    assert ds["s1_vv"].attrs["source"] == "s1" and ds["dem_slope"].attrs["source"] == "dem"
    sources = {s["name"]: s for s in ds.attrs["cropflow:sources"]}
    assert sources["s1"]["variables"] == ["s1_vh", "s1_vv"]
    assert sources["dem"]["static"] is True
    ref = radar_demo["stacked"]
    assert {"s1_vv", "dem_slope"} <= set(ref.bands) and ref.key != radar_demo["main"].key
    main = open_cube(radar_demo["main"].uri)
    assert np.array_equal(ds["red"].values, main["red"].values, equal_nan=True)
    assert np.array_equal(ds["time"].values, main["time"].values)


def test_backscatter_in_the_cube_is_the_mean_in_linear_power_of_the_passes(
    radar_demo: dict[str, Any],
) -> None:
    """One pixel's monthly composite against the COGs: 10 log10 of the mean of the linear
    values of the month's passes, several tenths of a dB from the mean of their dB values
    (speckle makes the two differ)."""
    import pandas as pd

    from cropflow.cube import open_cube

    ds = open_cube(radar_demo["stacked"].uri)
    items = json.loads(Path(radar_demo["searches"][0].uri.removeprefix("file://")).read_text())
    x, y = float(ds.x[20]), float(ds.y[15])
    gaps = []
    for step in range(3):
        start = pd.Timestamp(ds.time.values[step])
        end = start + pd.offsets.MonthBegin(1)
        values = []
        for item in items["features"]:
            when = pd.Timestamp(item["properties"]["datetime"]).tz_localize(None)
            if not start <= when < end:
                continue
            with rasterio.open(item["assets"]["vv"]["href"]) as src:
                row, col = src.index(x, y)
                if 0 <= row < src.height and 0 <= col < src.width:
                    v = float(src.read(1, window=((row, row + 1), (col, col + 1)))[0, 0])
                    if v != src.nodata:
                        values.append(v)
        assert len(values) >= 5
        linear = 10 * np.log10(np.mean(values))
        mean_db = float(np.mean(10 * np.log10(values)))
        cube = float(ds["s1_vv"].isel(time=step).sel(x=x, y=y).values)
        assert cube == pytest.approx(linear, abs=1e-3)
        gaps.append(linear - mean_db)
    assert min(gaps) > 0.2, f"mean in linear and mean in dB differ: {gaps}"


def test_the_terrain_follows_the_land_cover(radar_demo: dict[str, Any]) -> None:
    """The demo's forest stands on its hill: steeper and higher than the fields."""
    from cropflow.cube import open_cube
    from cropflow.labels.grid import cube_geobox

    ds = open_cube(radar_demo["stacked"].uri)
    demo = radar_demo["demo_dir"]
    with rasterio.open(demo / "truth" / "classes.tif") as src:
        gbox = cube_geobox(ds)
        window = src.window(*gbox.extent.boundingbox)
        classes = src.read(1, window=window, boundless=True, fill_value=0)
    classes = classes[: ds.sizes["y"], : ds.sizes["x"]]
    slope = ds["dem_slope"].values
    elevation = ds["dem_elevation"].values
    forest, fields = classes == 11, (classes >= 1) & (classes <= 9)
    if forest.sum() < 20:
        pytest.fail("the tiny demo's cube has too little forest to compare")
    assert np.nanmean(slope[forest]) > 2 * np.nanmean(slope[fields])
    assert np.nanmean(elevation[forest]) > np.nanmean(elevation[fields]) + 3


def test_readers_repeat_a_static_layer_at_every_date(radar_demo: dict[str, Any]) -> None:
    from cropflow.cube import open_cube
    from cropflow.labels.grid import cube_bands
    from cropflow.labels.samples import read_window as sample_window
    from cropflow.predict.cube import inspect_cube
    from cropflow.predict.cube import read_window as predict_window
    from cropflow.predict.tiling import Window

    uri = radar_demo["stacked"].uri
    ds = open_cube(uri)
    bands = ["red", "s1_vv", "dem_elevation", "dem_slope"]
    assert set(bands) <= set(cube_bands(ds)) and set(bands) <= set(inspect_cube(uri).bands)
    a = sample_window(ds, bands, 3, 11, 5, 17)
    b = predict_window(uri, bands, Window(3, 11, 5, 17))
    assert a.shape == b.shape == (ds.sizes["time"], 4, 8, 12)
    assert np.array_equal(a, b, equal_nan=True)
    for c in (2, 3):
        assert np.all(a[:, c] == a[0, c]), "a static layer is the same at every date"
    assert np.allclose(a[0, 2], ds["dem_elevation"].values[3:11, 5:17])


def test_a_source_off_the_main_time_axis_or_grid_is_refused(radar_demo: dict[str, Any]) -> None:
    from cropflow.cube import CubeParams, plan_from_search, write_cube
    from cropflow.cube.sources import source_cube_params
    from cropflow.cube.stack import stack_sources

    main, spec = radar_demo["main"], radar_demo["region"].sources[0]
    found = radar_demo["searches"][0]
    other_period = source_cube_params(
        CubeParams(period="SMS", start=None, end=None), spec, main.grid
    )
    other = write_cube(plan_from_search(found.uri, found.provider, other_period), None)
    with pytest.raises(DataError, match=r"source 's1' has .* time steps") as err:
        stack_sources(main, [spec], [other], out=str(radar_demo["work"] / "bad.zarr"))
    assert "period" in (err.value.hint or "")
    shifted = main.grid.model_copy(
        update={
            "bounds": tuple(
                v + (10.0 if i % 2 == 0 else 0.0) for i, v in enumerate(main.grid.bounds)
            )
        }
    )
    moved = write_cube(
        plan_from_search(
            found.uri, found.provider, source_cube_params(CubeParams(), spec, shifted)
        ),
        None,
    )
    with pytest.raises(DataError, match="not on the main cube's grid"):
        stack_sources(main, [spec], [moved], out=str(radar_demo["work"] / "bad2.zarr"))
    assert not (radar_demo["work"] / "bad.zarr").exists()
    assert not (radar_demo["work"] / "bad2.zarr").exists()


@pytest.mark.slow
def test_a_model_on_s2_s1_and_dem_trains_maps_and_refuses_a_cube_without_s1(
    prefect_harness: None, radar_demo: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """retrain and remap-region on the radar demo: the stacked cube is chained through the
    flows, the model's contract names the radar and terrain variables, and a remap of the
    same model on a Sentinel-2-only cube is refused, naming what is missing."""
    from cropflow.chain import demo_config, embedded_demo_region
    from cropflow.cube import open_cube
    from cropflow.demo import generate_demo
    from cropflow.errors import ContractError
    from cropflow.predict.model import load_bundle
    from cropflow.settings import get_settings
    from flows.remap import RemapParams, remap_region
    from flows.retrain import RetrainParams, retrain

    # the module's workdir: the flows find the region and the cubes the library calls built
    monkeypatch.setenv("CROPFLOW_WORKDIR", str(radar_demo["work"]))
    generate_demo(get_settings().demo_dir, demo_config("tiny", None, radar=True))
    region = embedded_demo_region(radar=True).model_copy(update={"name": "radardemo"})
    trained = retrain(RetrainParams.model_validate({"region": region, "train": {"epochs": 1}}))
    cube = open_cube(str(trained.summary.cube_uri))
    assert {"s1_vv", "s1_vh", "dem_slope"} <= set(cube.data_vars)
    mapped = remap_region(RemapParams(region=region))
    assert mapped.mlflow_run_id == trained.summary.mlflow_run_id
    with rasterio.open(mapped.products["class_map"]) as src:
        classes = src.read(1)
    assert (classes != 255).mean() > 0.9
    bundle = load_bundle(registered_model=region.model_name())
    assert {"s1_vv", "s1_vh", "dem_elevation", "dem_slope", "dem_aspect"} <= set(
        bundle.contract.bands
    )

    optical_only = region.model_copy(update={"sources": []})
    with pytest.raises(ContractError, match=r"missing \[.*'s1_v") as err:
        remap_region(RemapParams(region=optical_only))
    assert "sources" in (err.value.hint or "")


def test_a_stacked_cube_stores_each_block_as_a_shard_of_small_chunks(tmp_path: Path) -> None:
    """Stacked cubes use the cube store's layout: a 1024 px block is one shard of 256 px
    chunks (dated and static variables alike), written through xarray, values intact."""
    import dask.array as da
    import xarray as xr
    import zarr

    from cropflow.cube.stack import _encoding

    rng = np.random.default_rng(0)
    t, h, w, block = 2, 1100, 600, 1024
    ds = xr.Dataset(
        {
            "s2_red": (("time", "y", "x"), rng.random((t, h, w), dtype=np.float32)),
            "dem_elevation": (("y", "x"), rng.random((h, w), dtype=np.float32)),
        },
        coords={"time": np.array(["2021-04-01", "2021-05-01"], dtype="datetime64[ns]")},
    ).chunk({"time": -1, "y": block, "x": block})
    enc = _encoding(ds, block, "blosc-blosclz")
    assert enc["s2_red"]["chunks"] == (t, 256, 256) and enc["s2_red"]["shards"] == (t, block, block)
    assert enc["dem_elevation"]["chunks"] == (256, 256)
    assert enc["dem_elevation"]["shards"] == (block, block)
    ds.to_zarr(tmp_path / "s.zarr", encoding=enc, zarr_format=3, consolidated=False)
    for name in ds.data_vars:
        stored = zarr.open_array(str(tmp_path / "s.zarr" / str(name)), mode="r")
        np.testing.assert_array_equal(stored[...], ds[name].values)
    small = _encoding(ds.chunk({"y": 128, "x": 128}), 128, "blosc-blosclz")
    assert small["s2_red"]["chunks"] == (t, 128, 128) and "shards" not in small["s2_red"]
    assert isinstance(ds["s2_red"].data, da.Array)
