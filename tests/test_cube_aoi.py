"""The region's AOI bounds the cube; `grid: like-items` keeps the items' own pixel grid.

Items here are shaped like real Earth Search v1 Sentinel-2 items (a real item of
``../shared/fixtures/stac`` is the template: its properties, asset fields, raster:bands), placed
on two overlapping 109.8 km MGRS-like tiles whose COGs are tiled GeoTIFFs of the full tile size,
written sparse (only the blocks around the AOI hold data), so that footprints are realistic
and the test stays small.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import shapely
from distributed import Client
from pyproj import CRS, Transformer
from rasterio.transform import Affine
from rasterio.windows import Window
from shapely.geometry import box, shape
from stac_helpers import FIXTURE_STAC

from cropflow.chain import cube_params_for, search_params_for
from cropflow.cube import CubeParams, GridParams, open_cube, plan_cube, write_cube
from cropflow.cube.build import plan_from_search
from cropflow.errors import DataError
from cropflow.regions import region_from_mapping
from cropflow.stac.profiles import get_profile
from cropflow.stac.search import search_and_save

EPSG = 32633
TILE_PX = 10980
TILE_Y1 = 5_800_020.0
#: Two tiles overlapping by 9.8 km, as MGRS tiles do.
TILE_X0 = {"33UVA": 399_960.0, "33UWA": 499_980.0}
#: The AOI: 5 km x 3 km, inside both tiles (their overlap), near the zone's central meridian.
AOI_UTM = (500_513.0, 5_750_007.0, 505_517.0, 5_753_004.0)
DATES = [datetime(2024, m, 10, 10, 20, tzinfo=UTC) for m in (5, 6)]


def _to_lonlat() -> Transformer:
    return Transformer.from_crs(EPSG, 4326, always_xy=True)


def _sparse_cog(path: Path, res: int, x0: float, dtype: str, fill: int, seed: int) -> None:
    """A full-tile tiled GeoTIFF; only the blocks around the AOI are written (SPARSE_OK)."""
    side = TILE_PX * 10 // res
    transform = Affine(res, 0, x0, 0, -res, TILE_Y1)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=side,
        height=side,
        count=1,
        dtype=dtype,
        crs=f"EPSG:{EPSG}",
        transform=transform,
        nodata=0,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
        SPARSE_OK="TRUE",
    ) as dst:
        inv = ~transform
        c0, r0 = inv @ (AOI_UTM[0] - 2000, AOI_UTM[3] + 2000)
        c1, r1 = inv @ (AOI_UTM[2] + 2000, AOI_UTM[1] - 2000)
        c0, r0 = max(int(c0), 0), max(int(r0), 0)
        win = Window(c0, r0, min(int(c1), side) - c0, min(int(r1), side) - r0)
        rng = np.random.default_rng(seed)
        if fill:
            data = np.full((win.height, win.width), fill, dtype=dtype)
        else:
            data = rng.integers(1500, 4000, (win.height, win.width)).astype(dtype)
        dst.write(data, 1, window=win)


def _template() -> dict[str, Any]:
    data = json.loads(
        (FIXTURE_STAC / "earthsearch-v1_sentinel-2-l2a_S2B_24MVV_20250731_0_L2A.json").read_text()
    )
    item: dict[str, Any] = data["features"][0] if "features" in data else data
    return item


def _item(tile: str, when: datetime, folder: Path, seed: int) -> dict[str, Any]:
    """An Earth Search v1-shaped item of ``tile`` (a real item, moved and re-pointed)."""
    item = copy.deepcopy(_template())
    x0 = TILE_X0[tile]
    item_id = f"S2B_{tile}_{when:%Y%m%d}_0_L2A"
    item["id"] = item_id
    x1, y0 = x0 + TILE_PX * 10, TILE_Y1 - TILE_PX * 10
    ring = [(x0, y0), (x1, y0), (x1, TILE_Y1), (x0, TILE_Y1), (x0, y0)]
    to_ll = _to_lonlat()
    lonlat = [list(to_ll.transform(x, y)) for x, y in ring]
    item["geometry"] = {"type": "Polygon", "coordinates": [lonlat]}
    lons, lats = [p[0] for p in lonlat], [p[1] for p in lonlat]
    item["bbox"] = [min(lons), min(lats), max(lons), max(lats)]
    props = item["properties"]
    props.update(
        {
            "datetime": when.isoformat().replace("+00:00", "Z"),
            "proj:epsg": EPSG,
            "mgrs:utm_zone": 33,
            "mgrs:latitude_band": "U",
            "mgrs:grid_square": tile[-2:],
            "grid:code": f"MGRS-{tile}",
        }
    )
    props.pop("proj:centroid", None)
    item["links"] = []
    assets: dict[str, Any] = {}
    for key, res, dtype, fill in (
        ("red", 10, "uint16", 0),
        ("nir", 10, "uint16", 0),
        ("scl", 20, "uint8", 4),
    ):
        path = folder / f"{item_id}_{key}.tif"
        _sparse_cog(path, res, x0, dtype, fill, seed + len(assets))
        asset = copy.deepcopy(item["assets"][key])
        asset["href"] = path.as_uri()
        asset["proj:transform"] = [res, 0, x0, 0, -res, TILE_Y1]
        asset["proj:shape"] = [TILE_PX * 10 // res] * 2
        assets[key] = asset
    item["assets"] = assets
    return item


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ItemCollection of 2 tiles x 2 dates, Earth Search v1-shaped, on local sparse COGs."""
    folder = tmp_path_factory.mktemp("tiles")
    features = [
        _item(tile, when, folder, seed=10 * i + j)
        for i, when in enumerate(DATES)
        for j, tile in enumerate(TILE_X0)
    ]
    path = folder / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _aoi_lonlat() -> list[list[float]]:
    x0, y0, x1, y1 = AOI_UTM
    to_ll = _to_lonlat()
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    return [list(to_ll.transform(x, y)) for x, y in corners]


def _region(tmp_path: Path, catalog: Path, **extra: Any) -> Any:
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "Polygon", "coordinates": [_aoi_lonlat()]}))
    fields = {
        "name": "aoi-inside-two-tiles",
        "aoi": str(aoi),
        "season": {"start": "2024-05-01", "end": "2024-06-30"},
        "provider": "earth-search-v1",
        "catalog": str(catalog),
        "bands": ["red", "nir"],
        "grid": {"crs": f"EPSG:{EPSG}", "resolution": 10},
    }
    return region_from_mapping(fields | extra, "test region")


def test_the_regions_aoi_bounds_the_cube_not_the_tiles(
    tmp_path: Path, catalog: Path, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CROPFLOW_WORKDIR", str(tmp_path / "work"))
    region = _region(tmp_path, catalog)
    search = search_and_save(search_params_for(region))
    assert search.n_items == 4, "both tiles, both dates"
    params = cube_params_for(region, CubeParams())
    plan = plan_from_search(search.uri, search.provider, params)

    # bounds: the AOI's (projected to the grid CRS, snapped outward to 10 m)
    to_utm = Transformer.from_crs(4326, EPSG, always_xy=True)
    area = shapely.transform(
        shape({"type": "Polygon", "coordinates": [_aoi_lonlat()]}),
        lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1])),
    )
    ax0, ay0, ax1, ay1 = area.bounds
    gx0, gy0, gx1, gy1 = plan.grid.bounds
    assert (gx0, gy0) == (np.floor(ax0 / 10) * 10, np.floor(ay0 / 10) * 10)
    assert (gx1, gy1) == (np.ceil(ax1 / 10) * 10, np.ceil(ay1 / 10) * 10)
    h, w = plan.grid.shape
    assert abs(h * w - area.area / 100) / (area.area / 100) < 0.01
    # without the AOI (what happened before), the cube was the tiles' union: ~100x more
    tiles = plan_from_search(
        search.uri,
        search.provider,
        params.model_copy(update={"grid": GridParams(crs=f"EPSG:{EPSG}", resolution=10)}),
    )
    assert tiles.grid.shape[0] * tiles.grid.shape[1] > 100 * h * w

    ref = write_cube(plan, client=client)
    ds = open_cube(ref.uri)
    assert ds.odc.geobox.shape == (h, w)
    assert set(ds.data_vars) == {"red", "nir", "ndvi", "valid_count", "interpolated"}
    assert ds.red.attrs["kind"] == "reflectance" and ds.ndvi.notnull().all()
    # one observation per month: the two overlapping tiles of a date are one solar day
    assert (ds.valid_count.values == 1).all()

    # the same region built again: the same cube, found complete
    again = plan_from_search(search.uri, search.provider, cube_params_for(region, CubeParams()))
    assert again.key == plan.key
    assert write_cube(again, client=client).blocks_written == 0


def test_the_aoi_reaches_the_cube_of_every_chained_flow(tmp_path: Path, catalog: Path) -> None:
    """cube_params_for carries the AOI (for retrain, remap and the deployments alike)."""
    region = _region(tmp_path, catalog)
    params = cube_params_for(region, CubeParams())
    assert params.grid.aoi is not None and params.grid.aoi["type"] == "Polygon"
    assert params.bands == ["red", "nir"]
    bbox_region = _region(tmp_path, catalog, aoi=[15.0, 51.9, 15.1, 52.0], grid=None)
    bbox_params = cube_params_for(bbox_region, CubeParams())
    assert shape(bbox_params.grid.aoi).equals(box(15.0, 51.9, 15.1, 52.0))
    # a grid given with bounds is the user's: not overridden by the AOI
    fixed = CubeParams(grid=GridParams(crs="EPSG:32633", resolution=10, bounds=(0, 0, 100, 100)))
    assert cube_params_for(region, fixed).grid.aoi is None


# --- like-items: the items' own grid, non-square pixels included -------------------------


def _odd_grid_items(
    folder: Path, transforms: list[Affine], crs: str = "EPSG:32633"
) -> list[pystac.Item]:
    items = []
    rng = np.random.default_rng(3)
    for k, tf in enumerate(transforms):
        path = folder / f"ndvi_{k}.tif"
        data = rng.uniform(-0.2, 0.9, (40, 60)).astype("float32")
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=60,
            height=40,
            count=1,
            dtype="float32",
            crs=crs,
            transform=tf,
            nodata=float("nan"),
        ) as dst:
            dst.write(data, 1)
        x0, y1 = tf.c, tf.f
        x1, y0 = x0 + 60 * tf.a, y1 + 40 * tf.e
        to_ll = Transformer.from_crs(crs, 4326, always_xy=True)
        ll = [to_ll.transform(x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
        lons, lats = [p[0] for p in ll], [p[1] for p in ll]
        item = pystac.Item(
            id=f"odd-{k}",
            geometry={"type": "Polygon", "coordinates": [ll]},
            bbox=[min(lons), min(lats), max(lons), max(lats)],
            datetime=datetime(2024, 6, 1 + k, 10, tzinfo=UTC),
            properties={"proj:code": crs},
        )
        item.add_asset(
            "ndvi",
            pystac.Asset(
                href=path.as_uri(),
                roles=["data"],
                extra_fields={
                    "proj:transform": list(tf)[:6],
                    "proj:shape": [40, 60],
                    "raster:bands": [{"nodata": "nan", "data_type": "float32"}],
                },
            ),
        )
        items.append(item)
    return items


def test_like_items_reproduces_a_non_square_non_round_grid_exactly(
    tmp_path: Path, client: Client
) -> None:
    tf = Affine(9.99, 0.0, 500_003.7, 0.0, -10.01, 5_800_011.3)
    items = _odd_grid_items(tmp_path, [tf, tf])
    params = CubeParams(bands=["ndvi"], mask=[], period=None, grid=GridParams(like_items=True))
    plan = plan_cube(items, get_profile("assets"), params)
    assert plan.grid.crs == "EPSG:32633"
    assert plan.grid.transform == tf and plan.grid.shape == (40, 60)
    ds = open_cube(write_cube(plan, tmp_path / "odd.zarr", client=client).uri)
    gb = ds.odc.geobox
    assert gb.shape == (40, 60)
    for got, want in zip(gb.transform[:6], tf[:6], strict=True):
        assert got == pytest.approx(want, abs=1e-6)
    with rasterio.open(tmp_path / "ndvi_0.tif") as src:
        first = src.read(1)
    assert np.array_equal(ds.ndvi.isel(time=0).values, first)

    # an AOI inside: snapped onto the items' lattice (same phase, same odd pixel size)
    x0, y1 = tf.c + 10 * 9.99 + 3.0, tf.f - 5 * 10.01 - 2.0
    inside = CRS.from_epsg(32633)
    to_ll = Transformer.from_crs(inside, 4326, always_xy=True)
    w, s = to_ll.transform(x0, y1 - 100)
    e, n = to_ll.transform(x0 + 200, y1)
    sub = plan_cube(
        items,
        get_profile("assets"),
        params.model_copy(update={"grid": GridParams(like_items=True, bbox=(w, s, e, n))}),
    )
    g = sub.grid.transform
    assert (g.a, g.e) == (tf.a, tf.e)
    assert ((g.c - tf.c) / tf.a) == pytest.approx(round((g.c - tf.c) / tf.a), abs=1e-6)
    assert ((g.f - tf.f) / tf.e) == pytest.approx(round((g.f - tf.f) / tf.e), abs=1e-6)
    assert sub.grid.shape[0] < 40 and sub.grid.shape[1] < 60


def test_like_items_is_refused_for_items_of_different_grids(tmp_path: Path) -> None:
    a = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_800_000.0)
    shifted = Affine(10.0, 0.0, 500_004.0, 0.0, -10.0, 5_800_000.0)  # 0.4 px off the lattice
    items = _odd_grid_items(tmp_path, [a, shifted])
    params = CubeParams(bands=["ndvi"], mask=[], period=None, grid=GridParams(like_items=True))
    with pytest.raises(DataError, match="do not share one pixel grid") as err:
        plan_cube(items, get_profile("assets"), params)
    assert "odd-1" in str(err.value) and "odd-0" in str(err.value)
    assert "crs and resolution" in (err.value.hint or "")
