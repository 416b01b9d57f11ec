"""Splits from the user's own split file: pixels by their centre, gaps in no split, cut fields.

The cube is UTM; split files are written in other CRSs (EPSG:4326, EPSG:3857) so that every
test also checks the reprojection onto the cube grid. Expected memberships are computed with
shapely (pixel centres in the reprojected polygons), independently of the rasteriser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import xarray as xr
from odc.geo.geobox import GeoBox
from shapely.geometry import Polygon, box
from test_labels_common import UTM, field_scene, position_bands, write_cube, write_mapping

from cropflow.classes import IGNORE_INDEX
from cropflow.errors import ConfigError, LabelError
from cropflow.labels.build import (
    LabelRasters,
    PreparedLabels,
    build_training_set,
    prepare_labels,
    rasterize_labels,
    split_labels,
    write_training_set,
)
from cropflow.labels.options import (
    NO_SPLIT,
    SPLIT_NAMES,
    LabelSource,
    SplitOptions,
    TrainingSetParams,
)
from cropflow.labels.splits import cut_fields, leakage_problems
from cropflow.labels.store import TrainingSet, open_training_set

X0, Y0 = 500000, 5200000
GBOX = GeoBox.from_bbox((X0, Y0, X0 + 960, Y0 + 960), UTM, resolution=10)  # 96 x 96 px
NY, NX = GBOX.shape
#: 6 x 6 fields of 14 x 14 px (cells of 16 px, 1 px roads); codes of fields 5, 10, ... are
#: unknown to the mapping (dropped), so fields of column 2 (cols 33..46) are 3, 9, 21, 27, 33.
CUT_COLUMN_FIELDS = ["F003", "F009", "F021", "F027", "F033"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("split_layer")
    cube = write_cube(
        tmp / "cube.zarr", GBOX, ["2021-04-01", "2021-06-01"], position_bands(GBOX, 2)
    )
    gdf, expected = field_scene(GBOX, 6, 6, gap=1)
    gdf.to_file(tmp / "parcels.gpkg")
    return {
        "tmp": tmp,
        "cube": cube,
        "labels": tmp / "parcels.gpkg",
        "mapping": write_mapping(tmp / "mapping.yaml"),
        "expected": expected,
    }


def _params(scene: dict[str, Any], name: str, **kw: object) -> TrainingSetParams:
    return TrainingSetParams(
        cube_uri=str(scene["cube"]),
        labels=LabelSource(path=str(scene["labels"]), mapping_path=str(scene["mapping"])),
        name=name,
        out_uri=str(scene["tmp"] / f"{name}.zarr"),
        **kw,
    )


@pytest.fixture(scope="module")
def steps(scene: dict[str, Any]) -> tuple[PreparedLabels, LabelRasters]:
    """Steps 1 and 2 once: the split step is what these tests vary."""
    params = _params(scene, "steps")
    prepared = prepare_labels(params)
    return prepared, rasterize_labels(params, prepared)


def _write_layer(
    path: Path,
    polygons: list[Polygon],
    values: list[str],
    crs: str | None,
    column: str = "split",
) -> Path:
    """Polygons given in the cube's UTM, written to ``path`` in ``crs``."""
    gdf = gpd.GeoDataFrame({column: values}, geometry=polygons, crs=UTM)
    gdf = gdf.to_crs(crs) if crs is not None else gdf.set_crs(None, allow_override=True)
    gdf.to_file(path)
    return path


def _membership(layer: Path) -> dict[str, np.ndarray]:
    """Per pixel of the grid, whether its centre lies in a polygon of each value (shapely)."""
    gdf = gpd.read_file(layer).to_crs(UTM)
    rows, cols = np.mgrid[0:NY, 0:NX]
    xs, ys = X0 + 10 * cols + 5.0, Y0 + 960 - 10 * rows - 5.0
    out: dict[str, np.ndarray] = {}
    for value, group in gdf.groupby("split"):
        out[str(value).lower()] = shapely.contains_xy(group.geometry.union_all(), xs, ys)
    return out


#: The acceptance layer: a train area west of a slanted line, a test area east of a parallel
#: line, and a gap strip 6 pixels wide (measured along x) between them. Offsets keep pixel
#: centres off the lines.
def _gap_layer(path: Path, crs: str = "EPSG:4326") -> Path:
    west = Polygon(
        [
            (X0 - 500, Y0 - 500),
            (X0 + 383.3, Y0 - 500),
            (X0 + 423.3, Y0 + 1460),
            (X0 - 500, Y0 + 1460),
        ]
    )
    east = Polygon(
        [
            (X0 + 443.3, Y0 - 500),
            (X0 + 1500, Y0 - 500),
            (X0 + 1500, Y0 + 1460),
            (X0 + 483.3, Y0 + 1460),
        ]
    )
    return _write_layer(path, [west, east], ["train", "test"], crs)


def _pixel_rows_cols(ts: TrainingSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, column and split code of every sampled pixel (pixel or field kind)."""
    ds = ts.dataset
    if ts.kind == "field":
        counts = ds["count"].values
        return ds["pixel_row"].values, ds["pixel_col"].values, np.repeat(ds["split"].values, counts)
    return ds["row"].values, ds["col"].values, ds["split"].values


def test_a_split_file_with_a_gap_keeps_the_gap_out_and_test_apart(
    scene: dict[str, Any],
) -> None:
    """ACCEPTANCE: a split file with a gap: no pixel in the gap is in any split, and no pixel
    of the test polygon is in train or val."""
    layer = _gap_layer(scene["tmp"] / "gap_4326.gpkg")
    inside = _membership(layer)
    gap = ~inside["train"] & ~inside["test"]
    assert not (inside["train"] & inside["test"]).any()
    assert gap.sum(axis=1).min() >= 5  # a strip several pixels wide on every row
    for kind in ("pixel", "field"):
        summary = build_training_set(
            _params(
                scene,
                f"gap_{kind}",
                samples={"kind": kind},
                splits={"block_size_px": 16, "layer_path": str(layer)},
            )
        )
        ts = open_training_set(summary.uri)
        rows, cols, split = _pixel_rows_cols(ts)
        assert len(rows) > 0
        assert not gap[rows, cols].any(), kind  # no sampled pixel lies in the gap
        in_test = inside["test"][rows, cols]
        assert (split[in_test] == SPLIT_NAMES.index("test")).all(), kind
        assert inside["train"][rows[~in_test], cols[~in_test]].all(), kind
        assert (split[~in_test] != SPLIT_NAMES.index("test")).all(), kind
        assert leakage_problems(ts.dataset["split"].values, ts.fields) == [], kind
        assert all(summary.n_samples[s] > 0 for s in SPLIT_NAMES), kind  # val from train
        report = summary.reports["splits"]["layer"]
        assert report["polygons_per_value"] == {"train": 1, "test": 1}
        assert report["n_pixels_no_split"] == int(gap.sum())
        assert report["pixels_per_split"]["test"] == int(inside["test"].sum())
        assert report["pixels_per_split"]["train"] + report["pixels_per_split"]["val"] == int(
            inside["train"].sum()
        )
        assert report["val_source"] == "train"
        assert report["n_fields_cut"] > 0  # fields of column 2 cross the lines
        assert any("cut by split lines" in w for w in summary.warnings)
    # patches: none holds a gap pixel or mixes the test area with another
    summary = build_training_set(
        _params(
            scene,
            "gap_patch",
            samples={"kind": "patch", "patch_size": 8},
            splits={"block_size_px": 16, "layer_path": str(layer)},
        )
    )
    ts = open_training_set(summary.uri)
    for r0, c0, s in zip(ts.dataset["row"].values, ts.dataset["col"].values, ts.split, strict=True):
        window = (slice(r0, r0 + 8), slice(c0, c0 + 8))
        assert not gap[window].any()
        assert inside["test"][window].all() == (s == "test")
    size = ts.patch_size or 8
    rows, cols = ts.dataset["row"].values, ts.dataset["col"].values
    windows = np.stack([rows, rows + size, cols, cols + size], axis=1)
    assert leakage_problems(ts.dataset["split"].values, ts.fields, windows) == []


def _line_layer(path: Path) -> Path:
    """Train west of x = 500420 (between columns 41 and 42), test east of it; EPSG:3857."""
    west = box(X0 - 500, Y0 - 500, X0 + 420, Y0 + 1460)
    east = box(X0 + 420, Y0 - 500, X0 + 1500, Y0 + 1460)
    return _write_layer(path, [west, east], ["train", "test"], "EPSG:3857")


def _source_ids(ts: TrainingSet) -> dict[int, str]:
    return dict(
        zip(
            ts.dataset["field_table"].values.tolist(),
            [str(v) for v in ts.dataset["field_source_id"].values],
            strict=True,
        )
    )


def test_a_field_on_the_split_line_is_cut_into_two_fields_or_dropped(
    scene: dict[str, Any], steps: tuple[PreparedLabels, LabelRasters]
) -> None:
    prepared, rasters = steps
    layer = _line_layer(scene["tmp"] / "line_3857.gpkg")
    splits_opts = {"block_size_px": 16, "layer_path": str(layer)}
    params = _params(scene, "cut", samples={"kind": "field"}, splits=splits_opts)
    result = split_labels(params, rasters)
    ts = open_training_set(write_training_set(params, prepared, rasters, result).uri)
    report = result.layer
    assert report is not None
    assert (report.n_fields_cut, report.n_pieces, report.n_fields_dropped) == (5, 10, 0)
    assert report.crossing == "cut" and report.n_pixels_no_split == 0
    assert sorted(c.source_id for c in report.cut_fields) == CUT_COLUMN_FIELDS
    source = _source_ids(ts)
    counts = ts.dataset["count"].values
    for cut in report.cut_fields:
        mine = [i for i, f in enumerate(ts.fields.tolist()) if source[f] == cut.source_id]
        assert len(mine) == 2  # two fields now, each a piece, with its own field number
        by_split = {str(ts.split[i]): int(counts[i]) for i in mine}
        west = next(v for k, v in by_split.items() if k != "test")
        assert by_split["test"] == 5 * 14 and west == 9 * 14  # columns 42..46 | 33..41
        assert sorted(p.n_pixels for p in cut.pieces) == [70, 126]
        assert {p.field for p in cut.pieces} == {int(ts.fields[i]) for i in mine}
        assert cut.field not in ts.fields.tolist()  # the uncut number is gone
    assert leakage_problems(ts.dataset["split"].values, ts.fields) == []

    drop = _params(
        scene, "drop", samples={"kind": "field"}, splits=splits_opts | {"crossing": "drop"}
    )
    dropped = split_labels(drop, rasters)
    summary = write_training_set(drop, prepared, rasters, dropped)
    ts = open_training_set(summary.uri)
    assert dropped.layer is not None
    assert (dropped.layer.n_fields_dropped, dropped.layer.n_fields_cut) == (5, 5)
    assert dropped.layer.n_pieces == 0 and dropped.layer.cut_fields == []
    kept = {_source_ids(ts)[f] for f in ts.fields.tolist()}
    assert not kept & set(CUT_COLUMN_FIELDS)
    assert len(kept) == 36 - 7 - 5  # 7 fields of an unknown code, 5 dropped
    assert not np.isin(ts.dataset["pixel_col"].values, np.arange(33, 47)).any()
    assert any("5 fields crossing split lines" in w for w in summary.warnings)
    assert summary.reports["splits"]["layer"]["n_fields_dropped"] == 5


def test_val_is_carved_from_train_blocks_never_from_the_gap_or_test(
    scene: dict[str, Any],
) -> None:
    layer = _gap_layer(scene["tmp"] / "gap_val_3857.gpkg", crs="EPSG:3857")
    inside = _membership(layer)
    summary = build_training_set(
        _params(
            scene,
            "carve",
            splits={
                "block_size_px": 16,
                "layer_path": str(layer),
                "fractions": {"train": 0.6, "val": 0.3, "test": 0.1},
            },
        )
    )
    ts = open_training_set(summary.uri)
    rows, cols, split = _pixel_rows_cols(ts)
    val = split == SPLIT_NAMES.index("val")
    assert val.any()
    assert inside["train"][rows[val], cols[val]].all()
    assert not inside["test"][rows[val], cols[val]].any()
    # val takes about val / (train + val) of the train area's labelled pixels, by blocks
    in_train_area = inside["train"][rows, cols]
    assert 0.15 < val.sum() / in_train_area.sum() < 0.55
    assert leakage_problems(ts.dataset["split"].values, ts.fields) == []
    # no val share: no val
    none = build_training_set(
        _params(
            scene,
            "carve_none",
            splits={
                "block_size_px": 16,
                "layer_path": str(layer),
                "fractions": {"train": 0.9, "val": 0.0, "test": 0.1},
            },
        )
    )
    assert none.n_samples["val"] == 0
    assert none.reports["splits"]["layer"]["val_source"] == "none"


def test_val_polygons_are_used_as_they_are_and_values_ignore_case(
    scene: dict[str, Any], steps: tuple[PreparedLabels, LabelRasters]
) -> None:
    _, rasters = steps
    strips = [
        box(X0 - 500, Y0 - 500, X0 + 300, Y0 + 1460),
        box(X0 + 300, Y0 - 500, X0 + 600, Y0 + 1460),
        box(X0 + 600, Y0 - 500, X0 + 1500, Y0 + 1460),
    ]
    layer = _write_layer(
        scene["tmp"] / "three.gpkg", strips, ["Training", "VALIDATION", "Testing"], "EPSG:4326"
    )
    params = _params(scene, "three", splits={"block_size_px": 16, "layer_path": str(layer)})
    result = split_labels(params, rasters)
    assert result.layer is not None and result.layer.val_source == "layer"
    split = np.asarray(xr.open_zarr(result.uri, consolidated=False)["split"].values)
    cols = np.arange(NX)[None, :].repeat(NY, axis=0)
    want = np.where(cols < 30, 0, np.where(cols < 60, 1, 2))
    assert np.array_equal(split, want)
    assert result.layer.polygons_per_value == {"Training": 1, "VALIDATION": 1, "Testing": 1}
    assert result.layer.pixels_per_split == {"train": 30 * 96, "val": 30 * 96, "test": 36 * 96}


def test_overlaps_and_none_polygons_are_in_no_split_and_values_can_be_mapped(
    scene: dict[str, Any], steps: tuple[PreparedLabels, LabelRasters]
) -> None:
    _, rasters = steps
    polygons = [
        box(X0 - 500, Y0 - 500, X0 + 500, Y0 + 1460),  # A: columns 0..49
        box(X0 + 400, Y0 - 500, X0 + 1500, Y0 + 1460),  # B: columns 40..95
        box(X0 - 500, Y0 + 800, X0 + 1500, Y0 + 1460),  # road: rows 0..15
    ]
    layer = _write_layer(
        scene["tmp"] / "mapped.gpkg", polygons, ["A", "b", "road"], "EPSG:4326", column="Fold"
    )
    params = _params(
        scene,
        "mapped",
        splits={
            "block_size_px": 16,
            "layer_path": str(layer),
            "layer_column": "fold",  # found ignoring case
            "layer_values": {"a": "train", "B": "test", "Road": "none"},
        },
    )
    result = split_labels(params, rasters)
    rep = result.layer
    assert rep is not None and rep.column == "Fold"
    assert rep.n_overlap_pixels == 10 * (96 - 16)  # columns 40..49 below the road
    split = np.asarray(xr.open_zarr(result.uri, consolidated=False)["split"].values)
    assert (split[:16] == NO_SPLIT).all()
    assert (split[16:, 40:50] == NO_SPLIT).all()
    assert (split[16:, 50:] == SPLIT_NAMES.index("test")).all()
    assert set(np.unique(split[16:, :40]).tolist()) <= {0, 1}
    assert rep.n_pixels_no_split == 16 * 96 + 10 * 80
    assert rep.n_fields_trimmed > 0 and rep.n_fields_cut == 0  # fields touching overlap/road


def test_point_labels_take_the_split_of_their_pixel(scene: dict[str, Any], tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows, cols = np.divmod(rng.choice(NY * NX, 300, replace=False), NX)  # distinct pixels
    xs, ys = X0 + 10 * cols + 5.0, Y0 + 960 - 10 * rows - 5.0
    points = gpd.GeoDataFrame(
        {"id": np.arange(300).astype(str), "crop_code": rng.choice([115, 311, 411], 300)},
        geometry=gpd.points_from_xy(xs, ys),
        crs=UTM,
    ).to_crs("EPSG:4326")
    points.to_file(tmp_path / "points.gpkg")
    layer = _gap_layer(tmp_path / "gap.gpkg")
    inside = _membership(layer)
    params = TrainingSetParams(
        cube_uri=str(scene["cube"]),
        labels=LabelSource(
            path=str(tmp_path / "points.gpkg"),
            mapping_path=str(scene["mapping"]),
            field_column="id",
        ),
        name="points",
        out_uri=str(tmp_path / "points.zarr"),
        splits=SplitOptions(block_size_px=16, layer_path=str(layer), crossing="drop"),
    )
    summary = build_training_set(params)
    ts = open_training_set(summary.uri)
    r, c, split = _pixel_rows_cols(ts)
    gap = ~inside["train"] & ~inside["test"]
    assert not gap[r, c].any()
    assert (split[inside["test"][r, c]] == 2).all()
    assert (split[inside["train"][r, c]] != 2).all()
    sampled = {(int(a), int(b)) for a, b in zip(r, c, strict=True)}
    outside_gap = {(int(a), int(b)) for a, b in zip(rows, cols, strict=True) if not gap[a, b]}
    assert sampled == outside_gap  # every point outside the gap is kept (points are cut)
    assert summary.reports["splits"]["layer"]["crossing"] == "cut"


def test_cut_fields_on_small_arrays() -> None:
    field = np.array([[1, 1, 1, 2, 2, 3]], np.int32)
    label = np.array([[5, 5, 5, 1, 1, 2]], np.uint8)
    layer = np.array([[0, 0, 2, 2, NO_SPLIT, NO_SPLIT]], np.uint8)
    table = pd.DataFrame({"field": [1, 2, 3], "source_id": ["a", "b", "c"], "class_id": [5, 1, 2]})
    cut = cut_fields(field, label, layer, table, "cut")
    assert cut.field.tolist() == [[4, 4, 5, 2, 0, 0]]  # 1 cut into 4 and 5; 2 trimmed
    assert cut.label.tolist() == label.tolist()
    assert cut.fields[["field", "source_id", "parent"]].values.tolist() == [
        [2, "b", 2],
        [4, "a", 1],
        [5, "a", 1],
    ]
    assert (cut.n_cut, cut.n_trimmed, cut.n_outside, cut.n_dropped) == (1, 1, 1, 0)
    assert cut.pieces["n_pixels"].tolist() == [2, 1]
    drop = cut_fields(field, label, layer, table, "drop")
    assert drop.field.tolist() == [[0, 0, 0, 0, 0, 0]]
    assert (drop.label == IGNORE_INDEX).sum() == 5  # fields 1 and 2 lose their labels
    assert drop.label[0, 5] == 2  # field 3 is in no split: kept, but never sampled
    assert (drop.n_cut, drop.n_dropped, drop.n_outside) == (1, 2, 1)
    assert drop.fields.empty


def test_split_file_errors_name_the_file_the_column_the_values_and_the_option(
    scene: dict[str, Any], steps: tuple[PreparedLabels, LabelRasters]
) -> None:
    _, rasters = steps
    tmp: Path = scene["tmp"]
    whole = box(X0 - 500, Y0 - 500, X0 + 1500, Y0 + 1460)

    def split_with(name: str, **splits: object) -> None:
        split_labels(_params(scene, name, splits={"block_size_px": 16} | splits), rasters)

    missing = tmp / "nowhere.gpkg"
    with pytest.raises(ConfigError, match="not found") as err:
        split_with("e1", layer_path=str(missing))
    assert str(missing) in str(err.value) and "layer_path" in str(err.value)

    no_column = _write_layer(tmp / "nocol.gpkg", [whole], ["train"], "EPSG:4326", column="part")
    with pytest.raises(ConfigError, match="no column 'split'") as err:
        split_with("e2", layer_path=str(no_column))
    assert "'part'" in str(err.value) and "layer_column" in str(err.value)
    assert str(no_column) in str(err.value)

    halves = [
        box(X0 - 500, Y0 - 500, X0 + 480, Y0 + 1460),
        box(X0 + 480, Y0 - 500, X0 + 1500, Y0 + 1460),
    ]
    odd = _write_layer(tmp / "odd.gpkg", halves, ["train", "holdout"], "EPSG:4326")
    with pytest.raises(ConfigError, match="holdout") as err:
        split_with("e3", layer_path=str(odd))
    assert "layer_values" in str(err.value) and "'split'" in str(err.value)
    split_with("e3b", layer_path=str(odd), layer_values={"Holdout": "test"})  # mapped: fine

    no_crs = _write_layer(tmp / "nocrs.shp", [whole], ["train"], None)
    with pytest.raises(LabelError, match="has no CRS") as lerr:
        split_with("e4", layer_path=str(no_crs))
    assert str(no_crs) in str(lerr.value) and "layer_path" in str(lerr.value)

    far = _write_layer(tmp / "far.gpkg", [box(0, 0, 1000, 1000)], ["train"], "EPSG:4326")
    with pytest.raises(LabelError, match="no polygon overlaps the cube") as lerr:
        split_with("e5", layer_path=str(far))
    assert str(far) in str(lerr.value) and "layer_path" in str(lerr.value)

    test_only = _write_layer(tmp / "testonly.gpkg", [whole], ["test"], "EPSG:4326")
    with pytest.raises(LabelError, match="no train polygon") as lerr:
        split_with("e6", layer_path=str(test_only))
    assert "layer_values" in str(lerr.value) and str(test_only) in str(lerr.value)

    with pytest.raises(ConfigError) as err:
        SplitOptions(layer_path=str(odd), rules_path=str(tmp / "rules.yaml"))
    assert "layer_path" in str(err.value) and "rules_path" in str(err.value)
    with pytest.raises(ConfigError, match="layer_values"):
        SplitOptions(layer_values={"A": "train", "a": "test"})
