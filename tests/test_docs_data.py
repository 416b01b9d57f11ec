"""Every example file of docs/DATA.md, written out and used as the page says.

A fenced block preceded by ``<!-- file: NAME -->`` is the complete file NAME; the tests write
them all into one folder (as a user would copy them) and run each.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pystac
import pytest
import yaml

from cropflow.labels.build import TableImportParams, import_sample_tables
from cropflow.labels.io import read_labels
from cropflow.labels.mapping import apply_mapping, load_mapping
from cropflow.labels.options import SplitOptions
from cropflow.labels.splits import read_split_layer
from cropflow.labels.store import open_training_set
from cropflow.regions import load_region_file
from cropflow.stac.profiles import get_profile

DOC = Path(__file__).resolve().parents[1] / "docs" / "DATA.md"
BLOCK = re.compile(r"<!-- file: (?P<name>[^ ]+) -->\n```[a-z]*\n(?P<body>.*?)```", re.S)


def doc_files() -> dict[str, str]:
    """File name -> content of every example block of the page."""
    return {m["name"]: m["body"] for m in BLOCK.finditer(DOC.read_text(encoding="utf-8"))}


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, body in doc_files().items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_page_has_the_examples_the_tests_use() -> None:
    assert set(doc_files()) == {
        "my-ndvi.yaml",
        "my-landsat.yaml",
        "sinop.yaml",
        "brandenburg-radar.yaml",
        "labels/points.csv",
        "labels/mapping.yaml",
        "labels/mapping-codes.yaml",
        "labels/mapping-classes.yaml",
        "labels/splits.geojson",
        "tables/samples.csv",
        "tables/legend.csv",
        "tables/import.yaml",
    }


def _ndvi_item(raster: dict[str, object] | None) -> pystac.Item:
    item = pystac.Item(
        id="ndvi-2014-01-01",
        geometry=None,
        bbox=None,
        datetime=datetime(2014, 1, 1, tzinfo=UTC),
        properties={},
        collection="my-ndvi-16d",
    )
    extra = {"raster:bands": [raster]} if raster else {}
    item.add_asset("ndvi", pystac.Asset(href="/data/ndvi.tif", roles=["data"], extra_fields=extra))
    return item


def test_profile_examples(folder: Path) -> None:
    ndvi = get_profile(str(folder / "my-ndvi.yaml"))
    assert ndvi.cube_bands() == ["ndvi"] and ndvi.mask is None
    rule = ndvi.band_rule(_ndvi_item(None), "ndvi")
    assert (rule.scale, rule.offset, rule.nodata, rule.kind) == (1e-4, 0.0, -3000.0, "index")
    stated = ndvi.band_rule(_ndvi_item({"scale": 1e-3, "nodata": "nan"}), "ndvi")
    assert stated.scale == 1e-3 and stated.nodata != stated.nodata  # NaN

    landsat = get_profile(str(folder / "my-landsat.yaml"))
    assert landsat.matches("landsat-c2-l2-mirror") and not landsat.sign_hrefs
    assert landsat.mask is not None and landsat.mask.default == ["cloud", "dilated_cloud", "shadow"]
    assert landsat.spec("red").scale == 2.75e-05  # the rest comes from the built-in profile


def test_region_example(folder: Path) -> None:
    (folder / "catalog").mkdir()
    (folder / "catalog" / "catalog.json").write_text("{}")  # the user's catalog goes here
    (folder / "reference").mkdir()
    (folder / "reference" / "labelled.gpkg").write_bytes(b"")  # and their labelled sample
    region = load_region_file(folder / "sinop.yaml")
    assert region.name == "sinop" and region.model_name() == "sinop-crops"
    assert region.grid is not None and region.grid.like_items
    assert region.bands == ["ndvi"] and region.collections == ["my-ndvi-16d"]
    assert region.provider == str((folder / "my-ndvi.yaml").resolve())
    assert region.catalog == str((folder / "catalog" / "catalog.json").resolve())
    assert region.split_layer_path() == (folder / "labels" / "splits.geojson").resolve()
    reference = region.reference()
    assert reference is not None and reference.other_label == "other"
    assert reference.sample == str((folder / "reference" / "labelled.gpkg").resolve())
    params = region.search_params()
    assert params.catalog == region.catalog and params.provider == region.provider


def test_radar_region_example(folder: Path) -> None:
    from cropflow.cube import CubeParams, GridSpec
    from cropflow.cube.sources import source_cube_params

    region = load_region_file(folder / "brandenburg-radar.yaml")
    s1, dem = region.sources
    assert (s1.name, s1.static, dem.static, dem.derive) == ("s1", False, True, ["slope", "aspect"])
    assert (s1.variable("vv"), dem.variable("slope")) == ("s1_vv", "dem_slope")
    search = region.source_search_params(dem)
    assert search.provider == "planetary-computer-cop-dem" and search.datetime is None
    assert region.source_search_params(s1).datetime == region.search_params().datetime
    grid = GridSpec(crs="EPSG:32633", resolution=10, bounds=(0, 0, 1000, 1000))
    params = source_cube_params(CubeParams(), dem, grid)
    assert (params.period, params.resampling, params.indices) == (None, "bilinear", [])


def test_label_and_mapping_examples(folder: Path) -> None:
    points, report = read_labels(str(folder / "labels" / "points.csv"))
    assert report.kind == "point" and len(points) == 5
    mapping = load_mapping(folder / "labels" / "mapping.yaml")
    mapped, _ = apply_mapping(points, mapping, source="points.csv")
    assert sorted(set(mapped["class_name"])) == ["forest", "pasture", "soy_corn"]
    codes = load_mapping(folder / "labels" / "mapping-codes.yaml")
    assert codes.class_map.names == ["winter_wheat", "maize", "grassland"]
    assert codes.class_map.ids == [1, 2, 3]
    classes = load_mapping(folder / "labels" / "mapping-classes.yaml")
    assert classes.class_map.names == ["Soy_Corn", "Pasture", "Forest"]


def test_split_file_example(folder: Path) -> None:
    layer = read_split_layer(SplitOptions(layer_path=str(folder / "labels" / "splits.geojson")))
    assert layer.polygons_per_value == {"train": 1, "test": 1}
    train, test = layer.polygons.geometry.to_numpy()
    assert train.distance(test) > 0.02, "a gap between the areas"


def test_table_example(folder: Path) -> None:
    data = yaml.safe_load((folder / "tables" / "import.yaml").read_text())
    params = TableImportParams.model_validate(data | {"out_uri": str(folder / "ts.zarr")})
    summary = import_sample_tables(params)
    ts = open_training_set(summary.uri)
    assert ts.bands == ["ndvi"] and ts.data.shape == (9, 4, 1)
    assert summary.n_samples == {"train": 4, "val": 2, "test": 3}
    assert any("Cerrado" in w for w in summary.warnings), summary.warnings
    assert json.dumps(ts.class_map.names) == json.dumps(["soy_corn", "pasture", "forest"])
