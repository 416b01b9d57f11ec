"""Point labels: labeller votes (crop-mask's rule), pixels and windows, the real MODIS cube."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.warp
import xarray as xr
from odc.geo.geobox import GeoBox
from test_labels_common import UTM

from cropflow.classes import IGNORE_INDEX
from cropflow.errors import LabelError
from cropflow.labels.build import build_training_set
from cropflow.labels.mapping import apply_mapping, load_mapping
from cropflow.labels.options import LabelSource, TrainingSetParams
from cropflow.labels.points import aggregate_points, points_to_rasters
from cropflow.labels.store import open_training_set

CROP_MASK_YAML = """\
source_column: label
unknown: error
classes:
  - {name: non_crop, id: 0, color: "#aaaaaa", codes: [0]}
  - {name: crop, id: 1, color: "#ffcc00", codes: [1]}
"""


def _voted(rows: list[tuple[float, float, str, int]], tmp_path: Path) -> gpd.GeoDataFrame:
    (tmp_path / "m.yaml").write_text(CROP_MASK_YAML)
    frame = pd.DataFrame(rows, columns=["lon", "lat", "labeller", "label"])
    gdf = gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(frame.lon, frame.lat), crs=4326)
    mapped, _ = apply_mapping(gdf, load_mapping(tmp_path / "m.yaml"))
    return mapped


def test_votes_drop_duplicates_and_ties(tmp_path: Path) -> None:
    rows = [
        (10.0, 47.0, "u1", 1),
        (10.0, 47.0, "u2", 1),
        (10.0, 47.0, "u3", 0),  # A: crop 2/3
        (10.1, 47.0, "u1", 1),
        (10.1, 47.0, "u2", 0),  # B: tie, dropped
        (10.2, 47.0, "u1", 0),
        (10.2, 47.0, "u1", 0),
        (10.2, 47.0, "u2", 1),  # C: dup -> tie
        (10.3, 47.0, "u9", 1),  # D: one labeller
    ]
    voted, report = aggregate_points(_voted(rows, tmp_path), labeller_column="labeller")
    assert report.n_duplicates == 1
    assert report.n_locations == 4
    assert report.n_ties_dropped == 2
    by_lon = voted.set_index(voted.geometry.x.round(6))
    assert sorted(by_lon.index.tolist()) == [10.0, 10.3]
    assert by_lon.loc[10.0, "class_name"] == "crop"
    assert by_lon.loc[10.0, "agreement"] == pytest.approx(2 / 3)
    assert by_lon.loc[10.0, "n_votes"] == 3
    assert by_lon.loc[10.3, "agreement"] == 1.0


def test_crop_probability_rule_matches_mean_threshold(tmp_path: Path) -> None:
    """For 0/1 labels the vote equals crop-mask's rule: mean > 0.5 crop, < 0.5 not, 0.5 out."""
    rng = np.random.default_rng(3)
    rows = []
    for k in range(60):
        for who in range(int(rng.integers(1, 6))):
            rows.append((10.0 + k * 0.01, 47.0, f"u{who}", int(rng.integers(0, 2))))
    mapped = _voted(rows, tmp_path)
    voted, _ = aggregate_points(mapped, labeller_column="labeller")
    frame = pd.DataFrame(rows, columns=["lon", "lat", "who", "label"])
    prob = frame.groupby("lon")["label"].mean()
    expected = {round(lon, 6): int(p > 0.5) for lon, p in prob.items() if p != 0.5}
    got = {
        round(float(x), 6): int(c) for x, c in zip(voted.geometry.x, voted["class_id"], strict=True)
    }
    assert got == expected


def test_points_become_the_pixel_they_fall_in_and_windows_join(tmp_path: Path) -> None:
    gbox = GeoBox.from_bbox((500000, 5200000, 500200, 5200200), UTM, resolution=10)
    # pixel (row, col) has corners x in [500000+10c, +10), y in (5200200-10r-10, 5200200-10r]
    pts = gpd.GeoDataFrame(
        {"class_id": np.array([1, 1, 2, 1], np.uint8), "source_id": ["p", "q", "r", "s"]},
        geometry=gpd.points_from_xy(
            [500001.0, 500019.9, 500150.0, 500150.0 + 10.0],
            [5200199.0, 5200180.1, 5200100.0, 5200100.0],
        ),
        crs=UTM,
    )
    label, field, table, _ = points_to_rasters(pts.iloc[:2], gbox, window=1)
    assert label[0, 0] == 1 and label[1, 1] == 1
    assert (label != IGNORE_INDEX).sum() == 2
    assert field[0, 0] != field[1, 1]  # 1 px windows do not touch
    label, field, table, report = points_to_rasters(pts, gbox, window=3)
    # p and q windows overlap: one unit; r (class 2) and s (class 1) overlap: conflicts
    assert field[0, 0] == field[1, 1] == field[2, 2]
    assert len(table) == 2
    assert report.n_conflict_pixels == 6  # the 3x2 overlap of r's and s's windows
    # r is at row 10, col 15 (window cols 14..16); s at col 16 (window cols 15..17)
    assert label[10, 15] == IGNORE_INDEX and label[10, 16] == IGNORE_INDEX
    assert label[10, 14] == 2 and label[10, 17] == 1 and label[10, 13] == IGNORE_INDEX


def test_points_outside_the_cube_are_refused(tmp_path: Path) -> None:
    gbox = GeoBox.from_bbox((500000, 5200000, 500200, 5200200), UTM, resolution=10)
    pts = gpd.GeoDataFrame(
        {"class_id": np.array([1], np.uint8)},
        geometry=gpd.points_from_xy([600000.0], [5200100.0]),
        crs=UTM,
    )
    with pytest.raises(LabelError, match="inside the cube"):
        points_to_rasters(pts, gbox)
    with pytest.raises(LabelError, match="odd"):
        points_to_rasters(pts, gbox, window=2)


SITS_YAML = """\
source_column: label
unknown: error
classes:
  - {name: Pasture, id: 1, color: "#e5c44f", codes: [Pasture]}
  - {name: Forest, id: 2, color: "#1b7837", codes: [Forest]}
  - {name: Soy_Corn, id: 3, color: "#f6a01a", codes: [Soy_Corn]}
  - {name: Cerrado, id: 4, color: "#9e7b3a", codes: [Cerrado]}
"""


def _modis_cube(fixtures_dir: Path, out: Path) -> tuple[Path, list[Path]]:
    """The real MODIS NDVI JP2s as a cube (native sinusoidal grid), reflectance = DN * 1e-4."""
    files = sorted((fixtures_dir / "real/sits/mod13q1").glob("*.jp2"))
    arrays, dates = [], []
    for f in files:
        with rasterio.open(f) as src:
            arrays.append(src.read(1).astype(np.float32) * np.float32(1e-4))
            transform, crs, shape = src.transform, src.crs, (src.height, src.width)
        dates.append(np.datetime64(f.stem.rsplit("_", 1)[1]))
    from odc.geo.xr import xr_zeros

    gbox = GeoBox(shape, transform, crs.to_wkt())
    template = xr_zeros(gbox, dtype="float32", time=np.array(dates, dtype="datetime64[ns]"))
    ds = xr.Dataset({"ndvi": (("time", "y", "x"), np.stack(arrays))}, coords=template.coords)
    ds["valid_count"] = (("time", "y", "x"), np.ones(template.shape, np.uint8))
    ds["interpolated"] = (("time", "y", "x"), np.zeros(template.shape, bool))
    ds.attrs.update({"cropflow:complete": True, "cropflow:time": {"period": None}})
    ds.to_zarr(out, mode="w", zarr_format=3, consolidated=False)
    return out, files


def test_sits_points_land_on_the_right_modis_pixels(fixtures_dir: Path, tmp_path: Path) -> None:
    cube, files = _modis_cube(fixtures_dir, tmp_path / "modis.zarr")
    (tmp_path / "sits.yaml").write_text(SITS_YAML)
    csv = fixtures_dir / "real/sits/samples_sinop_crop.csv"
    params = TrainingSetParams(
        cube_uri=str(cube),
        labels=LabelSource(
            path=str(csv), mapping_path=str(tmp_path / "sits.yaml"), field_column="id"
        ),
        name="sits",
        out_uri=str(tmp_path / "sits-ts.zarr"),
        splits={"block_size_px": 8},
    )
    summary = build_training_set(params)
    ts = open_training_set(summary.uri)
    points = pd.read_csv(csv)
    assert sum(summary.n_samples.values()) == len(points) == 18
    assert ts.bands == ["ndvi"] and len(ts.times) == 12
    rows = ts.dataset["row"].values
    cols = ts.dataset["col"].values
    data = ts.data.values  # (sample, time, band)
    labels = ts.labels
    with rasterio.open(files[0]) as src:
        xs, ys = rasterio.warp.transform("EPSG:4326", src.crs, points.longitude, points.latitude)
        expected_rc = [src.index(x, y) for x, y in zip(xs, ys, strict=True)]
    for k, (x, y) in enumerate(zip(xs, ys, strict=True)):
        hit = np.flatnonzero((rows == expected_rc[k][0]) & (cols == expected_rc[k][1]))
        assert hit.size == 1, f"point {k} not sampled at rasterio's pixel {expected_rc[k]}"
        i = int(hit[0])
        assert ts.class_map.name_of(int(labels[i])) == points.label[k]
        for t, f in enumerate(files):
            with rasterio.open(f) as src:
                dn = next(src.sample([(x, y)]))[0]
            assert data[i, t, 0] == pytest.approx(dn * 1e-4, rel=1e-6)
