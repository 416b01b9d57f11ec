"""Map products of a small prediction: COGs, area table, per-field results, STAC, publishing."""

from __future__ import annotations

import ctypes
import hashlib
import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
import shapely
import zarr
from affine import Affine
from matplotlib.image import imread
from pystac.extensions.classification import ClassificationExtension
from rasterio.features import rasterize
from rio_cogeo.cogeo import cog_validate

from cropflow.classes import ClassDef, ClassMap
from cropflow.errors import DataError
from cropflow.predict import PredictionResult, PredictParams, predict
from cropflow.predict.testing import smooth_noise, tiny_bundle, write_cube
from cropflow.products import ProductsResult, build_products, render_report
from cropflow.products.publish import previous_path, recover

T, H, W = 3, 50, 70
TRANSFORM = Affine(10, 0, 500000, 0, -10, 5300000)
CRS = "EPSG:32633"
CLASSES = ClassMap(
    classes=[
        ClassDef(id=1, name="winter_wheat", color="#f5deb3"),
        ClassDef(id=4, name="maize", color="#ffd700"),
        ClassDef(id=10, name="meadow", color="#228b22"),
    ]
)
LTAE = {"name": "ltae", "n_head": 2, "d_k": 4, "d_model": 8, "mlp_widths": [8],
        "decoder_widths": [8]}  # fmt: skip
X0, Y0 = TRANSFORM.c, TRANSFORM.f
FIELDS = {
    "f1": shapely.box(X0 + 30, Y0 - 200, X0 + 180, Y0 - 40),
    "f2": shapely.Polygon([(X0 + 250, Y0 - 50), (X0 + 600, Y0 - 80), (X0 + 500, Y0 - 420)]),
    "f3": shapely.box(X0 + 100, Y0 - 480, X0 + 300, Y0 - 300),
}


@pytest.fixture(scope="module")
def prediction(tmp_path_factory: pytest.TempPathFactory) -> PredictionResult:
    folder = tmp_path_factory.mktemp("products-input")
    rng = np.random.default_rng(11)
    data = {b: smooth_noise((T, H, W), rng, 3.0) for b in ("nir", "red")}
    for a in data.values():
        a[:, 40:46, 2:9] = np.nan  # no data: class 255
    cube = write_cube(
        folder / "scene.zarr", data, ["2022-05-01", "2022-06-01", "2022-07-01"], TRANSFORM, CRS
    )
    fields = folder / "fields.gpkg"
    gpd.GeoDataFrame({"parcel": list(FIELDS)}, geometry=list(FIELDS.values()), crs=CRS).to_file(
        fields
    )
    bundle = tiny_bundle(LTAE, ["nir", "red"], T, CLASSES, "pixel", gain=2)
    params = PredictParams(
        cube=str(cube),
        key="scene",
        region="scene-products",
        tile_size=32,
        executor="local",
        fields=str(fields),
        field_id_column="parcel",
    )
    return predict(params, bundle)


@pytest.fixture(scope="module")
def products(prediction: PredictionResult) -> ProductsResult:
    return build_products(prediction)


def _read(prediction: PredictionResult, name: str) -> np.ndarray:
    """One array of the prediction store."""
    return np.asarray(zarr.open_array(f"{prediction.store}/{name}", mode="r")[:])


def _gdal_category_names(path: Path) -> list[str]:
    """Category names of band 1 as GDAL itself reads them (rasterio has no API for them)."""
    libs = Path(rasterio.__file__).parent.with_name("rasterio.libs")
    lib = ctypes.CDLL(str(next(libs.glob("libgdal-*"))))
    lib.GDALAllRegister()
    lib.GDALOpen.restype = ctypes.c_void_p
    lib.GDALOpen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.GDALGetMetadata.restype = ctypes.c_void_p
    lib.GDALGetMetadata.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.GDALGetRasterBand.restype = ctypes.c_void_p
    lib.GDALGetRasterBand.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
    lib.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
    lib.GDALClose.argtypes = [ctypes.c_void_p]
    ds = lib.GDALOpen(str(path).encode(), 0)
    assert ds, path
    try:
        lib.GDALGetMetadata(ds, None)  # loads the .aux.xml (GeoTIFF loads it lazily)
        names = lib.GDALGetRasterCategoryNames(lib.GDALGetRasterBand(ds, 1))
        out = []
        i = 0
        while names and names[i] is not None:
            out.append(names[i].decode())
            i += 1
        return out
    finally:
        lib.GDALClose(ds)


def test_class_cog_has_grid_colours_and_class_names(
    prediction: PredictionResult, products: ProductsResult
) -> None:
    path = Path(products.paths["class_map"])
    assert path.parent == Path(products.directory)
    ok, errors, _ = cog_validate(str(path))
    assert ok and not errors
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 32633
        assert src.transform == TRANSFORM
        assert (src.height, src.width) == (H, W)
        assert src.dtypes == ("uint8",) and src.nodata == 255
        cmap = src.colormap(1)
        for c in CLASSES.classes:
            rgb = tuple(int(c.color[i : i + 2], 16) for i in (1, 3, 5))
            assert cmap[c.id] == (*rgb, 255)
        assert cmap[255][3] == 0  # nodata is transparent
        assert src.descriptions == ("class",)
        classes = json.loads(src.tags()["CLASSES"])
        assert [(c["id"], c["name"]) for c in classes] == list(
            zip(CLASSES.ids, CLASSES.names, strict=True)
        )
        assert src.tags(1)["CLASS_4"] == "maize"
        assert src.overviews(1) == [] or src.tags(ns="IMAGE_STRUCTURE") is not None
        data = src.read(1)
    np.testing.assert_array_equal(data, _read(prediction, "class_id"))
    assert (data[40:46, 2:9] == 255).all()
    names = _gdal_category_names(path)
    assert names[1] == "winter_wheat" and names[4] == "maize" and names[10] == "meadow"
    assert names[0] == "" and len(names) == 11


def test_probability_and_confidence_cogs(
    prediction: PredictionResult, products: ProductsResult
) -> None:
    for key in ("probability", "confidence"):
        ok, errors, _ = cog_validate(products.paths[key])
        assert ok and not errors, (key, errors)
    with rasterio.open(products.paths["probability"]) as src:
        assert src.count == 3 and src.descriptions == tuple(CLASSES.names)
        assert src.scales == pytest.approx((1 / 255,) * 3)
        np.testing.assert_array_equal(src.read(), _read(prediction, "probability"))
        mask = src.dataset_mask()
        assert (mask[40:46, 2:9] == 0).all() and (mask[:30] == 255).all()
    with rasterio.open(products.paths["confidence"]) as src:
        conf = src.read(1)
        np.testing.assert_array_equal(conf, _read(prediction, "confidence"))
        p = _read(prediction, "probability")
        valid = _read(prediction, "class_id") != 255
        assert (np.abs(conf[valid].astype(int) - p.max(axis=0)[valid].astype(int)) <= 1).all()


def test_area_table_counts_every_class(
    prediction: PredictionResult, products: ProductsResult
) -> None:
    cls = _read(prediction, "class_id")
    table = pd.read_csv(products.paths["class_area_csv"])
    same = pd.read_parquet(products.paths["class_area_parquet"])
    assert list(table["class_name"]) == CLASSES.names == list(same["class_name"])
    pixel_ha = 10 * 10 / 10_000
    predicted = int((cls != 255).sum())
    assert predicted == H * W - 6 * 7
    for row in same.itertuples():
        n = int((cls == row.class_id).sum())
        assert row.pixels == n
        assert row.area_ha == pytest.approx(n * pixel_ha)
        assert row.fraction == pytest.approx(n / predicted)
    assert same["pixels"].sum() == predicted
    assert (same["pixels"] > 0).sum() >= 2
    np.testing.assert_allclose(table["area_ha"], same["area_ha"], atol=1e-4)


def test_per_field_results_majority_vote_and_mean_probability(
    prediction: PredictionResult, products: ProductsResult
) -> None:
    table = gpd.read_parquet(products.paths["fields_parquet"]).set_index("field_id")
    gpkg = gpd.read_file(products.paths["fields_gpkg"]).set_index("field_id")
    assert sorted(table.index) == sorted(gpkg.index) == sorted(FIELDS)
    assert table.crs.to_epsg() == 32633
    cls, probs = _read(prediction, "class_id"), _read(prediction, "probability").astype(float) / 255
    for name, geom in FIELDS.items():
        inside = rasterize([(geom, 1)], out_shape=(H, W), transform=TRANSFORM) == 1
        inside &= cls != 255
        ids, counts = np.unique(cls[inside], return_counts=True)
        row = table.loc[name]
        assert row["n_pixels"] == inside.sum() > 0
        assert row["homogenised_id"] == ids[counts.argmax()]
        assert row["majority_share"] == pytest.approx(counts.max() / inside.sum())
        mean = probs[:, inside].mean(axis=1)
        for k, c in enumerate(CLASSES.classes):
            assert row[f"prob_{c.name}"] == pytest.approx(mean[k], abs=1e-9)
        assert row["class_name"] == CLASSES.names[int(mean.argmax())]
        assert gpkg.loc[name, "homogenised_name"] == row["homogenised_name"]


def test_stac_catalog_is_self_contained_with_classes(
    products: ProductsResult, tmp_path: Path
) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(products.directory, moved)  # relative hrefs: the folder can move
    catalog = pystac.Catalog.from_file(str(moved / "catalog.json"))
    items = {i.id: i for i in catalog.get_items(recursive=True)}
    assert set(items) == {
        f"scene-products-{k}"
        for k in ("class-map", "probability", "confidence", "class-area", "fields")
    }
    for item in items.values():
        raw = json.loads(Path(item.get_self_href() or "").read_text())
        for key, asset in item.assets.items():
            assert not raw["assets"][key]["href"].startswith("/"), key
            href = Path(asset.get_absolute_href() or "")
            assert href.is_file() and moved in href.parents
        assert item.properties["start_datetime"].startswith("2022-05-01")
    cmap = items["scene-products-class-map"]
    assert cmap.properties["proj:code"] == "EPSG:32633"
    assert cmap.properties["proj:shape"] == [H, W]
    classes = ClassificationExtension.ext(cmap.assets["data"]).classes
    assert classes is not None
    by_value = {c.value: c for c in classes}
    assert by_value[4].name == "maize" and by_value[4].color_hint == "FFD700"
    assert by_value[255].nodata is True
    assert sum(c.count or 0 for c in classes) == H * W - 6 * 7
    assert "thumbnail" in (cmap.assets["thumbnail"].roles or [])
    lon, lat = cmap.geometry["coordinates"][0][0]
    assert 14.9 < lon < 15.1 and 47 < lat < 48.5  # UTM 33N, 5300 km north


def test_quicklook_shows_the_class_colours(products: ProductsResult) -> None:
    img = imread(products.paths["quicklook"])
    assert img.ndim == 3 and img.shape[0] > 100
    rgb = np.round(img[..., :3] * 255).astype(int).reshape(-1, 3)
    colours = {tuple(int(v) for v in row) for row in np.unique(rgb, axis=0)}
    present = [
        c
        for c in CLASSES.classes
        if tuple(int(c.color[i : i + 2], 16) for i in (1, 3, 5)) in colours
    ]
    assert len(present) >= 2


def test_report_lists_areas_and_links(
    prediction: PredictionResult, products: ProductsResult
) -> None:
    md = render_report(prediction, products, {"val_macro_f1": 0.5}, "runs:/abc")
    assert "| maize |" in md and "val_macro_f1" in md and "runs:/abc" in md
    assert Path(products.catalog).as_uri() in md


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_failed_run_leaves_previous_products_byte_identical(
    prediction: PredictionResult, products: ProductsResult, tmp_path: Path
) -> None:
    dest = Path(products.directory)
    before = _digest(dest)
    assert "class_map.tif" in before and "catalog.json" in before
    broken = tmp_path / "broken.gpkg"
    broken.write_bytes(b"this is not a GeoPackage")
    bad = prediction.model_copy(update={"fields": str(broken)})
    with pytest.raises(DataError, match="cannot read field polygons"):
        build_products(bad)  # fails after the COGs and the area table were staged
    assert _digest(dest) == before
    leftovers = [p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}")]
    assert leftovers == []


def test_recover_after_a_crash_between_the_two_renames(
    products: ProductsResult, tmp_path: Path
) -> None:
    dest = tmp_path / "region"
    shutil.copytree(products.directory, dest)
    before = _digest(dest)
    dest.rename(previous_path(dest))  # the state a crash after the first rename leaves
    stale = tmp_path / f".{dest.name}.staging-999999999-abc"  # a dead process's staging
    stale.mkdir()
    (stale / "half.tif").write_bytes(b"partial")
    recover(dest)
    assert _digest(dest) == before
    assert not previous_path(dest).exists() and not stale.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["region"]


KILLED_PUBLISH = """
import sys, time
from pathlib import Path
import cropflow.products.build as build
from cropflow.predict import PredictionResult

prediction = PredictionResult.model_validate_json(Path(sys.argv[1]).read_text())
real = build.write_quicklook

def slow(*args, **kwargs):
    out = real(*args, **kwargs)
    Path(sys.argv[3]).touch()  # staged files written: the test kills us now
    time.sleep(60)
    return out

build.write_quicklook = slow
build.build_products(prediction, Path(sys.argv[2]))
"""


@pytest.mark.faults
def test_a_publish_killed_midway_keeps_the_previous_products(
    prediction: PredictionResult, products: ProductsResult, tmp_path: Path
) -> None:
    """SIGKILL while the products are being written: the published folder is unchanged, and
    the next publish clears what the dead one left."""
    import os
    import subprocess
    import sys
    import time

    dest = tmp_path / "region"
    shutil.copytree(products.directory, dest)
    before = _digest(dest)
    record, staged = tmp_path / "prediction.json", tmp_path / "staged"
    record.write_text(prediction.model_dump_json())
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_PUBLISH, str(record), str(dest), str(staged)],
        env=os.environ.copy(),
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not staged.exists():
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "the publish never staged its files"
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no clean-up of any kind runs
    proc.wait()
    assert _digest(dest) == before
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".region.staging-")]
    build_products(prediction, dest)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".region")]
    assert leftovers == [], "the dead publish's staging folder was removed"
