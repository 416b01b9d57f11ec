"""AOI parsing: bbox and GeoJSON forms, bad input, and property tests of the arithmetic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from cropflow.errors import AOIError
from cropflow.stac.aoi import AOI, parse_aoi, parse_bbox

# --- strategies -----------------------------------------------------------------------------

lons = st.floats(min_value=-180, max_value=180, allow_nan=False, allow_infinity=False)
lats = st.floats(min_value=-90, max_value=90, allow_nan=False, allow_infinity=False)


@st.composite
def bboxes(draw: st.DrawFn) -> tuple[float, float, float, float]:
    x1, x2 = draw(lons), draw(lons)
    y1, y2 = draw(lats), draw(lats)
    if x1 == x2 or y1 == y2:
        x1, x2, y1, y2 = -1.0, 1.0, -1.0, 1.0
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


@st.composite
def polygons(draw: st.DrawFn) -> dict[str, Any]:
    """A convex polygon (hull of 3-8 points) in lon/lat with a non-zero area."""
    pts = draw(
        st.lists(st.tuples(lons, lats), min_size=3, max_size=8).filter(
            lambda p: shapely.MultiPoint(p).convex_hull.area > 1e-6
        )
    )
    hull = shapely.MultiPoint(pts).convex_hull
    return dict(json.loads(shapely.to_geojson(hull)))


separators = st.sampled_from([",", ", ", " ", " ,  "])

# --- bbox -----------------------------------------------------------------------------------


@given(bboxes(), separators, st.booleans())
def test_bbox_text_round_trips_exactly(
    bbox: tuple[float, float, float, float], sep: str, brackets: bool
) -> None:
    text = sep.join(repr(v) for v in bbox)
    if brackets:
        text = f"[{text}]"
    aoi = parse_aoi(text)
    assert aoi.from_bbox
    assert aoi.bbox == bbox
    assert parse_bbox(text) == bbox
    assert parse_aoi(list(bbox)).bbox == bbox


@given(bboxes())
def test_bbox_polygon_area_matches_its_sides(bbox: tuple[float, float, float, float]) -> None:
    aoi = parse_aoi(list(bbox))
    minx, miny, maxx, maxy = bbox
    assert aoi.geometry.area == pytest.approx((maxx - minx) * (maxy - miny), rel=1e-9)
    # the GeoJSON of a bbox AOI is a closed 5-point ring through the 4 corners
    ring = aoi.geojson()["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 5
    assert {tuple(p) for p in ring} == {(minx, miny), (minx, maxy), (maxx, miny), (maxx, maxy)}


@given(bboxes())
def test_bbox_with_swapped_corners_is_rejected(bbox: tuple[float, float, float, float]) -> None:
    minx, miny, maxx, maxy = bbox
    with pytest.raises(AOIError, match="min >= max") as err:
        parse_bbox([maxx, miny, minx, maxy])
    assert err.value.hint
    with pytest.raises(AOIError, match="min >= max"):
        parse_bbox([minx, maxy, maxx, miny])


@given(st.floats(min_value=180.0001, max_value=1e7), st.booleans())
def test_bbox_out_of_range_is_rejected(big: float, on_lon: bool) -> None:
    values = [0.0, 0.0, big, 1.0] if on_lon else [0.0, 0.0, 1.0, big if big > 90 else 91.0]
    with pytest.raises(AOIError, match="must lie in"):
        parse_bbox(values)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1,2,3", "3 numbers, not 4"),
        ("1,2,3,4,5", "5 numbers, not 4"),
        ([1.0, 2.0, 3.0], "3 numbers, not 4"),
        ("a,b,c,d", "is not four numbers"),
        ([0, 0, float("nan"), 1], "non-finite"),
        ("10, 95, 11, 96", "latitudes must lie in"),
        ("-181, 0, 1, 1", "longitudes must lie in"),
        ("5, 5, 5, 6", "min >= max"),
    ],
)
def test_bad_bbox_names_the_input(value: Any, message: str) -> None:
    with pytest.raises(AOIError, match=message) as err:
        parse_aoi(value)
    assert err.value.hint, "every AOI error says how to fix it"


# --- GeoJSON --------------------------------------------------------------------------------


@settings(max_examples=60)
@given(polygons())
def test_geojson_round_trips(geom: dict[str, Any]) -> None:
    aoi = parse_aoi(geom)
    again = parse_aoi(aoi.geojson())
    assert again.geometry.equals(aoi.geometry)
    assert again.bbox == aoi.bbox
    assert not aoi.from_bbox
    # a Feature, a FeatureCollection and JSON text of it are the same AOI
    feature = {"type": "Feature", "properties": {}, "geometry": geom}
    fc = {"type": "FeatureCollection", "features": [feature]}
    for form in (feature, fc, json.dumps(fc)):
        assert parse_aoi(form).geometry.equals(aoi.geometry)
    # JSON-serialisable (plain lists)
    assert json.loads(json.dumps(aoi.geojson())) == aoi.geojson()


def _not_tiny(b: tuple[float, float, float, float]) -> bool:
    return b[2] - b[0] > 1e-3 and b[3] - b[1] > 1e-3


@settings(max_examples=40)
@given(bboxes().filter(_not_tiny), bboxes().filter(_not_tiny))
def test_feature_collection_is_the_union(
    a: tuple[float, float, float, float], b: tuple[float, float, float, float]
) -> None:
    fc = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {}, "geometry": parse_aoi(list(a)).geojson()},
            {"type": "Feature", "properties": {}, "geometry": parse_aoi(list(b)).geojson()},
        ],
    }
    aoi = parse_aoi(fc)
    expected = box(*a).union(box(*b))
    assert aoi.geometry.symmetric_difference(expected).area == pytest.approx(0.0, abs=1e-6)
    assert aoi.bbox == pytest.approx(
        (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
    )


def test_geojson_file_and_path_string(tmp_path: Path) -> None:
    geom = {"type": "Polygon", "coordinates": [[[10, 50], [11, 50], [11, 51], [10, 51], [10, 50]]]}
    path = tmp_path / "field.geojson"
    path.write_text(json.dumps({"type": "Feature", "properties": {"name": "x"}, "geometry": geom}))
    for form in (path, str(path)):
        aoi = parse_aoi(form)
        assert aoi.bbox == (10.0, 50.0, 11.0, 51.0)
        assert aoi.geometry.area == pytest.approx(1.0)


def test_wgs84_crs_member_is_accepted() -> None:
    geom = {"type": "Polygon", "coordinates": [[[10, 50], [11, 50], [11, 51], [10, 50]]]}
    fc = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
        "features": [{"type": "Feature", "properties": {}, "geometry": geom}],
    }
    assert isinstance(parse_aoi(fc), AOI)


BOWTIE = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}


@pytest.mark.parametrize(
    ("aoi", "message"),
    [
        ({"type": "Polygon", "coordinates": []}, "empty geometry"),
        ({"type": "FeatureCollection", "features": []}, "empty geometry"),
        ({"type": "Feature", "properties": {}, "geometry": None}, "empty geometry"),
        (BOWTIE, "not a valid polygon: Self-intersection"),
        ({"type": "Point", "coordinates": [10, 50]}, "is a Point, not an area"),
        ({"type": "Polygon", "coordinates": [[[1, 2], [3]]]}, "malformed"),
        ({"type": "Topology", "objects": {}}, "is not GeoJSON"),
        (
            {
                "type": "Polygon",
                "coordinates": [[[500000, 5e6], [501000, 5e6], [501000, 5.001e6], [500000, 5e6]]],
            },
            "outside lon/lat range",
        ),
        (
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
                "features": [],
            },
            "declares crs 'urn:ogc:def:crs:EPSG::32633', not WGS84",
        ),
        ("{not json", "not valid JSON"),
        ("", "empty string"),
    ],
)
def test_bad_geojson_names_the_problem_and_the_fix(aoi: Any, message: str) -> None:
    with pytest.raises(AOIError, match=message) as err:
        parse_aoi(aoi)
    assert err.value.hint
    assert "\n" not in str(err.value), "one line"


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(AOIError, match="does not exist"):
        parse_aoi(tmp_path / "missing.geojson")
    text = tmp_path / "notes.geojson"
    text.write_text("this is not json")
    with pytest.raises(AOIError, match=r"notes\.geojson.*is not GeoJSON"):
        parse_aoi(text)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(AOIError, match="not a GeoJSON object"):
        parse_aoi(listing)
