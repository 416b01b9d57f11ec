"""The demo region's labels (a real user's shapes: LPIS-like parcels, crowd points) on its grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from test_labels_common import position_bands, write_cube

from cropflow.classes import ClassMap
from cropflow.demo import DemoConfig, generate_demo
from cropflow.labels import LabelSource, TrainingSetParams, build_training_set, open_training_set
from cropflow.labels.summary import class_warnings

POINT_MAPPING = """\
source_column: label
unknown: error
classes:
  - {name: non_crop, id: 0, color: "#aaaaaa", codes: [0]}
  - {name: crop, id: 1, color: "#ffcc00", codes: [1]}
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("demo")
    manifest = generate_demo(tmp / "region", DemoConfig.tiny())
    h, w = manifest.grid.shape
    gbox = GeoBox((h, w), Affine(*manifest.grid.transform), manifest.grid.crs)
    cube = write_cube(
        tmp / "cube.zarr", gbox, ["2024-04-01", "2024-06-01"], position_bands(gbox, 2)
    )
    (tmp / "points.yaml").write_text(POINT_MAPPING)
    return {"region": tmp / "region", "cube": cube, "tmp": tmp}


@pytest.mark.slow  # generating the tiny demo region takes 5-15 s on this machine
def test_demo_parcels_land_on_the_truth_classes(demo: dict[str, Path]) -> None:
    region = demo["region"]
    summary = build_training_set(
        TrainingSetParams(
            cube_uri=str(demo["cube"]),
            labels=LabelSource(
                path=str(region / "labels/parcels.gpkg"),
                mapping_path=str(region / "labels/mapping.yaml"),
            ),
            out_uri=str(demo["tmp"] / "parcels.zarr"),
            splits={"block_size_px": 16},
        )
    )
    ts = open_training_set(summary.uri)
    with rasterio.open(region / "truth/classes.tif") as src:
        truth = src.read(1)
    rows, cols = ts.dataset["row"].values, ts.dataset["col"].values
    red = ts.bands.index("red")
    assert np.array_equal(ts.data.values[:, 0, red], rows * 1000 + cols)
    # every labelled pixel has the class the generator knows
    assert np.array_equal(ts.labels, truth[rows, cols])
    # the generator leaves codes 422 and 210 out of its mapping on purpose: dropped, reported
    assert any("unknown codes dropped" in w and "'422'" in w for w in summary.warnings)
    assert summary.reports["mapping"]["n_dropped"] >= 1


@pytest.mark.slow
def test_demo_points_are_deduplicated_and_voted(demo: dict[str, Path]) -> None:
    region = demo["region"]
    summary = build_training_set(
        TrainingSetParams(
            cube_uri=str(demo["cube"]),
            labels=LabelSource(
                path=str(region / "labels/points.csv"),
                mapping_path=str(demo["tmp"] / "points.yaml"),
            ),
            out_uri=str(demo["tmp"] / "points.zarr"),
            splits={"block_size_px": 16},
        )
    )
    report = summary.reports["points"]
    assert report["n_duplicates"] > 0  # the generator writes exact duplicate rows
    n_samples = sum(summary.n_samples.values())
    assert n_samples == report["n_labelled_pixels"]
    assert n_samples + report["n_ties_dropped"] + report["n_outside"] <= report["n_locations"]
    ts = open_training_set(summary.uri)
    assert set(np.unique(ts.labels).tolist()) <= {0, 1}


def test_class_warnings_name_absent_and_single_split_classes() -> None:
    cmap = ClassMap.model_validate(
        {"classes": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]}
    )
    counts = {
        "train": {"a": 5, "b": 3, "c": 0},
        "val": {"a": 2, "b": 0, "c": 0},
        "test": {"a": 1, "b": 0, "c": 0},
    }
    warnings = class_warnings(counts, cmap)
    assert warnings == [
        "class 'b' has samples in the train split only",
        "class 'c' is in the class map but has no samples",
    ]
