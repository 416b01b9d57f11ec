"""Cubes from real data nobody on this project made: a MODIS NDVI series (sinusoidal) and a
Sentinel-2 scene (UTM), with georeference checked against rasterio's view of the sources."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pystac
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
from distributed import Client
from pyproj import CRS, Transformer
from test_cube_support import asset_profile, lonlat_footprint

from cropflow.cube import CubeParams, GridParams, open_cube, plan_cube, write_cube
from cropflow.cube.grid import utm_epsg

FTW_BANDS = ("red", "green", "blue", "nir")
FTW_DATES = (
    dt.datetime(2021, 6, 17, 10, 0, tzinfo=dt.UTC),
    dt.datetime(2021, 9, 25, 10, 0, tzinfo=dt.UTC),
)


def _item(
    item_id: str, when: dt.datetime, src_path: Path, assets: dict[str, str], scale: float
) -> pystac.Item:
    with rasterio.open(src_path) as src:
        w, s, e, n = lonlat_footprint(src.crs.to_wkt(), tuple(src.bounds))
    item = pystac.Item(
        id=item_id,
        datetime=when,
        bbox=[w, s, e, n],
        properties={},
        geometry={"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
    )
    for band, href in assets.items():
        item.add_asset(
            band,
            pystac.Asset(
                href=href, roles=["data"], extra_fields={"raster:bands": [{"scale": scale}]}
            ),
        )
    return item


def modis_items(fixtures_dir: Path) -> list[pystac.Item]:
    items = []
    for path in sorted((fixtures_dir / "real/sits/mod13q1").glob("*.jp2")):
        day = dt.datetime.strptime(path.stem.rsplit("_", 1)[1], "%Y-%m-%d")
        when = day.replace(hour=14, tzinfo=dt.UTC)
        items.append(_item(f"MOD13Q1_{day:%Y%m%d}", when, path, {"ndvi": path.as_uri()}, 1e-4))
    return items


def test_modis_sinusoidal_series_builds_on_a_utm_grid(
    fixtures_dir: Path, client: Client, tmp_path: Path
) -> None:
    items = modis_items(fixtures_dir)
    assert len(items) == 12
    p = CubeParams(
        bands=["ndvi"], indices=[], mask=[], period=None, grid=GridParams(resolution=250)
    )
    plan = plan_cube(items, asset_profile(), p)
    first = fixtures_dir / "real/sits/mod13q1" / Path(items[0].assets["ndvi"].href).name
    with rasterio.open(first) as src:
        src_crs, src_tf, shape = src.crs, src.transform, src.shape
        h, w = shape
        to_ll = Transformer.from_crs(src_crs, "EPSG:4326", always_xy=True)
        clon, clat = to_ll.transform(*(src_tf @ (w / 2, h / 2)))
    assert CRS.from_user_input(plan.grid.crs).to_epsg() == utm_epsg(clon, clat) == 32721
    assert plan.kernels == {"ndvi": "float"}
    ds = open_cube(write_cube(plan, tmp_path / "modis.zarr", client=client).uri)
    assert [str(t)[:10] for t in ds.time.values] == [i.datetime.strftime("%Y-%m-%d") for i in items]
    # corners: rasterio's transform of the source, projected, lie inside the cube, and the
    # cube is no larger than their bounding box (snapped outward by at most a pixel)
    gb = ds.odc.geobox
    to_utm = Transformer.from_crs(src_crs, plan.grid.crs, always_xy=True)
    edge = np.linspace(0, 1, 50)
    cols = np.concatenate([edge * w, np.full(50, w), edge[::-1] * w, np.zeros(50)])
    rows = np.concatenate([np.zeros(50), edge * h, np.full(50, h), edge[::-1] * h])
    ux, uy = to_utm.transform(*(src_tf @ (cols, rows)))
    left, bottom, right, top = gb.boundingbox
    assert left <= ux.min() and ux.max() <= right and bottom <= uy.min() and uy.max() <= top
    assert ux.min() - left < 250 and right - ux.max() < 250
    assert uy.min() - bottom < 250 and top - uy.max() < 250
    # every cube pixel whose centre falls well inside a source pixel holds that pixel's value
    xs, ys = np.meshgrid(ds.x.values, ds.y.values)
    sx, sy = Transformer.from_crs(plan.grid.crs, src_crs, always_xy=True).transform(xs, ys)
    col, row = ~src_tf @ (sx, sy)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    central = inside & (np.abs(col % 1 - 0.5) < 0.3) & (np.abs(row % 1 - 0.5) < 0.3)
    assert central.sum() > 0.2 * inside.sum() > 2000
    # (GDAL's warp may take a pixel whose centre is a fraction of a source pixel outside)
    far = (col < -0.5) | (col > w + 0.5) | (row < -0.5) | (row > h + 0.5)
    for t, item in enumerate(items):
        path = fixtures_dir / "real/sits/mod13q1" / Path(item.assets["ndvi"].href).name
        with rasterio.open(path) as src:
            truth = src.read(1).astype(np.float64) * 1e-4
        got = ds.ndvi.values[t]
        expected = truth[row[central].astype(int), col[central].astype(int)]
        np.testing.assert_allclose(got[central], expected, atol=1e-6)
        assert np.isnan(got[far]).all()
    assert (ds.valid_count.values[:, central] == 1).all()


def _band_vrt(src_path: Path, band: int, out: Path) -> Path:
    """A one-band VRT of band ``band`` of ``src_path`` (a multi-band asset by band name)."""
    with rasterio.open(src_path) as src:
        t = src.transform
        xml = f"""<VRTDataset rasterXSize="{src.width}" rasterYSize="{src.height}">
  <SRS>{escape(src.crs.to_wkt())}</SRS>
  <GeoTransform>{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, {t.e}</GeoTransform>
  <VRTRasterBand dataType="UInt16" band="1">
    <SimpleSource>
      <SourceFilename relativeToVRT="0">{src_path}</SourceFilename>
      <SourceBand>{band}</SourceBand>
    </SimpleSource>
  </VRTRasterBand>
</VRTDataset>"""
    out.write_text(xml)
    return out


def ftw_items(fixtures_dir: Path, tmp_path: Path) -> list[pystac.Item]:
    src = fixtures_dir / "real/ftw/inference-img.tif"
    items = []
    for d, when in enumerate(FTW_DATES):
        assets = {
            b: _band_vrt(src, 4 * d + i + 1, tmp_path / f"{when:%Y%m%d}-{b}.vrt").as_uri()
            for i, b in enumerate(FTW_BANDS)
        }
        items.append(_item(f"FTW_33_{when:%Y%m%d}", when, src, assets, 1e-4))
    return items


@pytest.mark.parametrize("grid", ["derived", "source"])
def test_sentinel2_scene_keeps_its_pixels_and_georeference(
    fixtures_dir: Path, client: Client, tmp_path: Path, grid: str
) -> None:
    src_path = fixtures_dir / "real/ftw/inference-img.tif"
    with rasterio.open(src_path) as src:
        data = src.read().astype(np.float64) * 1e-4
        tf, bounds, h, w = src.transform, tuple(src.bounds), src.height, src.width
    gp = GridParams() if grid == "derived" else GridParams(crs="EPSG:32633", bounds=bounds)
    p = CubeParams(bands=list(FTW_BANDS), indices=["ndvi"], mask=[], period=None, grid=gp)
    plan = plan_cube(ftw_items(fixtures_dir, tmp_path), asset_profile(), p)
    assert plan.grid.crs == "EPSG:32633"
    ds = open_cube(write_cube(plan, tmp_path / f"ftw-{grid}.zarr", client=client).uri)
    gb = ds.odc.geobox
    # the source's corners sit on the cube's pixel edges
    c0, r0 = ~gb.affine @ (tf.c, tf.f)
    c1, r1 = ~gb.affine @ (tf @ (w, h))
    for v in (c0, r0, c1, r1):
        assert v == pytest.approx(round(v), abs=1e-9)
    c0, r0 = round(c0), round(r0)
    assert (round(c1) - c0, round(r1) - r0) == (w, h)
    if grid == "source":
        assert gb.affine == tf and gb.shape == (h, w)
    else:
        assert gb.shape[0] > h and gb.shape[1] > w  # the AOI's lon/lat box is wider
    assert ds.red.rio.transform() == gb.affine and ds.rio.crs.to_epsg() == 32633
    assert float(ds.x[c0]) == tf.c + 5 and float(ds.y[r0]) == tf.f - 5
    window = (slice(None), slice(r0, r0 + h), slice(c0, c0 + w))
    for d in range(2):
        for i, band in enumerate(FTW_BANDS):
            np.testing.assert_allclose(ds[band].values[window][d], data[4 * d + i], atol=1e-6)
    red, nir = data[0], data[3]
    np.testing.assert_allclose(ds.ndvi.values[window][0], (nir - red) / (nir + red), atol=1e-5)
    outside = np.ones(gb.shape, dtype=bool)
    outside[r0 : r0 + h, c0 : c0 + w] = False
    assert np.isnan(ds.red.values[:, outside]).all()
    assert (ds.valid_count.values[:, outside] == 0).all()
    assert (ds.valid_count.values[window] == 1).all()
