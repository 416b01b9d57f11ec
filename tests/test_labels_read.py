"""Reading labels: GeoPackage, GeoParquet, Shapefile, GeoJSON, CSV; no CRS refused; repairs."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from shapely.geometry import Polygon, box

from cropflow.errors import LabelError
from cropflow.labels.io import read_labels


@pytest.fixture
def parcels() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"field_id": ["a", "b", "c"], "crop_code": [115, 411, 311]},
        geometry=[
            box(10.0, 47.0, 10.001, 47.001),
            box(10.002, 47.0, 10.003, 47.001),
            box(10.004, 47.0, 10.005, 47.001),
        ],
        crs="EPSG:4326",
    )


@pytest.mark.parametrize("suffix", [".gpkg", ".parquet", ".shp", ".geojson"])
def test_vector_formats_read_with_crs_and_attributes(
    tmp_path: Path, parcels: gpd.GeoDataFrame, suffix: str
) -> None:
    path = tmp_path / f"parcels{suffix}"
    if suffix == ".parquet":
        parcels.to_parquet(path)
    else:
        parcels.to_file(path)
    gdf, report = read_labels(path)
    assert report.kind == "polygon"
    assert report.n_features == 3
    assert gdf.crs is not None and gdf.crs.to_epsg() == 4326
    assert sorted(gdf["field_id"]) == ["a", "b", "c"]
    assert sorted(int(c) for c in gdf["crop_code"]) == [115, 311, 411]
    got = shapely.normalize(gdf.geometry.to_numpy())
    want = shapely.normalize(parcels.geometry.to_numpy())
    assert shapely.equals_exact(got, want, tolerance=1e-9).all()


def test_csv_points_lon_lat_are_wgs84(tmp_path: Path) -> None:
    path = tmp_path / "points.csv"
    pd.DataFrame({"Longitude": [10.5, 10.6], "Latitude": [47.1, 47.2], "label": [1, 0]}).to_csv(
        path, index=False
    )
    gdf, report = read_labels(path)
    assert report.kind == "point"
    assert gdf.crs.to_epsg() == 4326
    assert gdf.geometry.x.tolist() == [10.5, 10.6]
    assert gdf.geometry.y.tolist() == [47.1, 47.2]


def test_csv_xy_without_crs_is_refused_and_accepted_with_one(tmp_path: Path) -> None:
    path = tmp_path / "points.csv"
    pd.DataFrame({"x": [500010.0], "y": [5200010.0], "label": [1]}).to_csv(path, index=False)
    with pytest.raises(LabelError, match="no CRS") as err:
        read_labels(path)
    assert err.value.hint and "crs" in err.value.hint.lower()
    gdf, _ = read_labels(path, crs="EPSG:32633")
    assert gdf.crs.to_epsg() == 32633


def test_csv_lonlat_out_of_range_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "points.csv"
    pd.DataFrame({"lon": [500010.0], "lat": [5200010.0], "label": [1]}).to_csv(path, index=False)
    with pytest.raises(LabelError, match="outside longitude/latitude"):
        read_labels(path)


def test_file_without_crs_is_refused(tmp_path: Path, parcels: gpd.GeoDataFrame) -> None:
    path = tmp_path / "nocrs.shp"
    parcels.set_crs(None, allow_override=True).to_file(path)
    assert not path.with_suffix(".prj").exists()
    with pytest.raises(LabelError, match="has no CRS") as err:
        read_labels(path)
    assert str(path) in str(err.value)
    gdf, _ = read_labels(path, crs="EPSG:4326")  # an explicit assignment is accepted
    assert gdf.crs.to_epsg() == 4326


def test_gpkg_without_crs_is_refused(tmp_path: Path, parcels: gpd.GeoDataFrame) -> None:
    path = tmp_path / "nocrs.gpkg"
    parcels.set_crs(None, allow_override=True).to_file(path)
    with pytest.raises(LabelError, match="has no CRS"):
        read_labels(path)


def _bowtie() -> Polygon:
    return Polygon([(10.0, 47.0), (10.002, 47.002), (10.002, 47.0), (10.0, 47.002)])


def test_invalid_geometry_is_repaired(tmp_path: Path) -> None:
    bowtie = _bowtie()
    assert not bowtie.is_valid
    gdf = gpd.GeoDataFrame(
        {"crop_code": [115, 411]}, geometry=[bowtie, box(10.1, 47.0, 10.2, 47.1)], crs=4326
    )
    path = tmp_path / "invalid.gpkg"
    gdf.to_file(path)
    out, report = read_labels(path)
    assert report.n_repaired == 1
    assert shapely.is_valid(out.geometry.to_numpy()).all()
    assert set(out.geometry.geom_type) <= {"Polygon", "MultiPolygon"}
    # the repair keeps both lobes of the bow-tie: the area is not lost
    assert out.geometry.iloc[0].area == pytest.approx(0.002 * 0.002 / 2, rel=1e-6)


def test_invalid_geometry_is_reported_when_repair_is_off(tmp_path: Path) -> None:
    gdf = gpd.GeoDataFrame({"crop_code": [115]}, geometry=[_bowtie()], crs=4326)
    path = tmp_path / "invalid.geojson"
    gdf.to_file(path)
    with pytest.raises(LabelError, match="invalid polygons") as err:
        read_labels(path, repair_invalid=False)
    assert "row 0" in str(err.value) and "Self-intersection" in str(err.value)


def test_empty_geometries_are_dropped_and_counted(tmp_path: Path) -> None:
    gdf = gpd.GeoDataFrame(
        {"crop_code": [115, 411]}, geometry=[box(10.0, 47.0, 10.1, 47.1), None], crs=4326
    )
    path = tmp_path / "some_empty.gpkg"
    gdf.to_file(path)
    out, report = read_labels(path)
    assert len(out) == 1 and report.n_empty_dropped == 1


def test_mixed_geometries_and_unknown_formats_are_refused(tmp_path: Path) -> None:
    from shapely.geometry import Point

    mixed = gpd.GeoDataFrame(
        {"c": [1, 2]}, geometry=[Point(10, 47), box(10, 47, 10.1, 47.1)], crs=4326
    )
    path = tmp_path / "mixed.gpkg"
    mixed.to_file(path)
    with pytest.raises(LabelError, match="all points or all polygons"):
        read_labels(path)
    other = tmp_path / "labels.xlsx"
    other.write_bytes(b"not a label file")
    with pytest.raises(LabelError, match="unsupported format"):
        read_labels(other)
    with pytest.raises(LabelError, match="not found"):
        read_labels(tmp_path / "missing.gpkg")
