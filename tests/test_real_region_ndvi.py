"""A user's own collection, end to end: real MODIS NDVI (one band, sinusoidal grid) through
search -> cube -> training set -> train -> map, configured by a profile and a region file only.

The user's project (built here in tmp_path, as a user would with pystac) holds:

* ``cogs/``: COGs of the real MODIS NDVI series of ``../shared/fixtures/real/sits/mod13q1``
  (NDVI as float32, NaN nodata);
* ``catalog/``: a self-contained static STAC catalog of them, written by pystac (relative
  links, relative asset hrefs, ``raster:bands`` nodata ``"nan"``);
* ``labels/``: the real labelled points of the same fixture, a short-form label mapping and
  a split file (the user's own train and test areas, with a gap between them);
* ``mod13q1-ndvi.yaml`` (a collection profile) and ``sinop.yaml`` (the region file).

Nothing else is configured: the flows take the region file's path. The band is ``ndvi`` in
the cube, in the model's contract and in the products; the map keeps the items' sinusoidal
grid (``grid: like-items``).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pyproj import CRS

from cropflow.cube import open_cube
from cropflow.labels import TrainingSetOptions
from cropflow.train import TrainOptions
from cropflow.train.registry import current_alias, load_model

MODIS = "real/sits/mod13q1"


def _write_cogs(fixtures: Path, out: Path) -> list[tuple[dt.datetime, Path]]:
    """Float32 NDVI COGs (NaN nodata) from the real MODIS int16 series (scale 1e-4)."""
    out.mkdir(parents=True)
    series = []
    for src_path in sorted((fixtures / MODIS).glob("*.jp2")):
        day = dt.datetime.strptime(src_path.stem.rsplit("_", 1)[1], "%Y-%m-%d")
        with rasterio.open(src_path) as src:
            ndvi = src.read(1).astype(np.float32) * np.float32(1e-4)
            profile = {
                "driver": "COG",
                "width": src.width,
                "height": src.height,
                "count": 1,
                "dtype": "float32",
                "crs": src.crs,
                "transform": src.transform,
                "nodata": float("nan"),
            }
        path = out / f"MOD13Q1_NDVI_{day:%Y%m%d}.tif"
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(ndvi, 1)
        series.append((day.replace(hour=14, tzinfo=dt.UTC), path))
    return series


def _write_catalog(series: list[tuple[dt.datetime, Path]], root: Path) -> Path:
    """A self-contained static catalog, as pystac writes one (relative links and hrefs)."""
    with rasterio.open(series[0][1]) as src:
        crs_wkt, tf, shape = src.crs.to_wkt(), src.transform, [src.height, src.width]
        from rasterio.warp import transform_bounds

        w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    footprint = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    collection = pystac.Collection(
        id="mod13q1-ndvi",
        description="MOD13Q1 16-day NDVI (e-sensing/sits sample, Sinop, Mato Grosso)",
        extent=pystac.Extent(
            pystac.SpatialExtent([[w, s, e, n]]),
            pystac.TemporalExtent([[series[0][0], series[-1][0]]]),
        ),
        license="GPL-2.0",
    )
    for when, path in series:
        item = pystac.Item(
            id=path.stem,
            geometry=footprint,
            bbox=[w, s, e, n],
            datetime=when,
            properties={"proj:wkt2": crs_wkt, "proj:transform": list(tf)[:6], "proj:shape": shape},
        )
        item.add_asset(
            "ndvi",
            pystac.Asset(
                href=str(path),
                media_type=pystac.MediaType.COG,
                roles=["data"],
                extra_fields={"raster:bands": [{"nodata": "nan", "data_type": "float32"}]},
            ),
        )
        collection.add_item(item)
    catalog = pystac.Catalog(id="my-data", description="My own imagery")
    catalog.add_child(collection)
    catalog.normalize_hrefs(str(root))
    collection.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


def _area(split: str, w: float, s: float, e: float, n: float) -> dict[str, object]:
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    return {
        "type": "Feature",
        "properties": {"split": split},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


@pytest.fixture(scope="module")
def project(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's project folder (see the module docstring)."""
    root = tmp_path_factory.mktemp("user-project")
    series = _write_cogs(fixtures_dir, root / "catalog" / "cogs")
    _write_catalog(series, root / "catalog")
    labels = root / "labels"
    labels.mkdir()
    shutil.copy(fixtures_dir / "real/sits/samples_sinop_crop.csv", labels / "samples.csv")
    (labels / "mapping.yaml").write_text(
        textwrap.dedent(
            """\
            source_column: label
            classes:
              Soy_Corn: [Soy_Corn]
              Pasture: [Pasture]
              Forest: [Forest]
              Cerrado: [Cerrado]
            """
        )
    )
    # the user's own test area: the north of the AOI, 1 km apart from the training area
    split = {
        "type": "FeatureCollection",
        "features": [
            _area("train", -55.80, -11.82, -55.33, -11.67),
            _area("test", -55.80, -11.66, -55.33, -11.55),
        ],
    }
    (labels / "splits.geojson").write_text(json.dumps(split))
    (root / "mod13q1-ndvi.yaml").write_text(
        textwrap.dedent(
            """\
            description: MODIS NDVI composites of my own catalog
            collections: [mod13q1-ndvi]
            defaults: {kind: index, unit: "1", dtype: float32, scale: 1.0, offset: 0.0}
            bands:
              ndvi: {asset: ndvi, resolution: 231.66}
            """
        )
    )
    (root / "sinop.yaml").write_text(
        textwrap.dedent(
            """\
            description: Soy, corn, pasture and forest around Sinop (Mato Grosso), MODIS NDVI.
            aoi: [-55.80, -11.82, -55.33, -11.55]
            season: {start: 2013-09-01, end: 2014-08-31}
            provider: ./mod13q1-ndvi.yaml
            catalog: ./catalog/catalog.json
            grid: like-items
            cube_period: 1MS
            model_alias: champion
            labels: ./labels/samples.csv
            mapping: ./labels/mapping.yaml
            split_layer: ./labels/splits.geojson
            """
        )
    )
    return root


@pytest.mark.slow
def test_a_single_band_ndvi_collection_goes_from_search_to_map(
    project: Path,
    fixtures_dir: Path,
    prefect_harness: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.remap import RemapParams, remap_region
    from flows.retrain import RetrainParams, retrain

    monkeypatch.setenv("CROPFLOW_WORKDIR", str(tmp_path / "work"))
    region = str(project / "sinop.yaml")
    trained = retrain(
        RetrainParams(
            region=region,
            # 18 points over ~40 km: val carved from the train area by small blocks (16 px =
            # 3.7 km), 3x3 px per point
            training_set=TrainingSetOptions.model_validate(
                {"splits": {"block_size_px": 16}, "rasterize": {"point_window": 3}}
            ),
            train=TrainOptions.model_validate({"epochs": 3, "model": {"name": "tempcnn"}}),
        )
    )
    summary = trained.summary
    assert summary.model_alias == "champion" and summary.cube_uri is not None
    # the split file made the splits: the 3 points north of the gap are the test set
    from cropflow.labels.store import open_training_set

    assert summary.training_set_uri is not None
    ts = open_training_set(summary.training_set_uri)
    assert int((ts.split == "test").sum()) == 3 * 9
    assert (ts.split == "train").sum() > 0 and (ts.split == "val").sum() > 0

    # The cube: one band named ndvi, on the items' own sinusoidal grid (like-items)
    cube = open_cube(summary.cube_uri)
    assert set(cube.data_vars) == {"ndvi", "valid_count", "interpolated"}
    assert cube.ndvi.attrs["kind"] == "index"
    first = sorted((fixtures_dir / MODIS).glob("*.jp2"))[0]
    gb = cube.odc.geobox
    h, w = gb.shape
    with rasterio.open(first) as src:
        src_crs, src_tf = CRS.from_wkt(src.crs.to_wkt()), src.transform
        col = (gb.transform.c - src_tf.c) / src_tf.a
        row = (gb.transform.f - src_tf.f) / src_tf.e
        # the AOI reaches a little beyond the data: read the cube's window, boundless
        window = rasterio.windows.Window(round(col), round(row), w, h)
        truth = src.read(1, window=window, boundless=True, fill_value=-32768)
    assert CRS.from_user_input(gb.crs.to_wkt()) == src_crs
    assert gb.transform.a == pytest.approx(src_tf.a) and gb.transform.e == pytest.approx(src_tf.e)
    assert col == pytest.approx(round(col), abs=1e-6) and row == pytest.approx(round(row), abs=1e-6)
    # September 2013 holds exactly one acquisition: its values, pixel for pixel
    inside = truth != -32768
    assert inside.mean() > 0.8  # a lon/lat box is skewed in the sinusoidal projection
    sept = cube.ndvi.isel(time=0).values
    assert np.allclose(sept[inside], truth[inside].astype(np.float32) * np.float32(1e-4))
    assert np.isnan(sept[~inside]).all()

    # The model: registered in the region's own registered model, its contract names ndvi
    assert current_alias("champion", "cropflow-sinop") is not None
    model = load_model("champion", registered_model="cropflow-sinop")
    assert model.contract.bands == ["ndvi"]
    assert model.class_map.names == ["Soy_Corn", "Pasture", "Forest", "Cerrado"]

    # The map
    mapped = remap_region(RemapParams(region=region))
    assert mapped.model_version == summary.model_version
    with rasterio.open(mapped.products["class_map"]) as cog:
        assert CRS.from_user_input(cog.crs.to_wkt()) == src_crs
        assert cog.tags()["CROPFLOW_INPUT_BANDS"] == "ndvi"
        assert (cog.width, cog.height) == (w, h)
        classes = cog.read(1)
    assert set(np.unique(classes[inside]).tolist()) <= {1, 2, 3, 4}
    assert (classes[~inside] == 255).all(), "no map where there is no data"
    catalog = json.loads(Path(mapped.products["catalog"]).read_text())
    assert catalog["id"]
    items = [
        json.loads((Path(mapped.products["catalog"]).parent / link["href"]).read_text())
        for link in catalog["links"]
        if link["rel"] == "item"
    ]
    assert items and all(i["properties"]["cropflow:model"]["bands"] == ["ndvi"] for i in items)
