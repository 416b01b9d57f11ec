"""Polygons on the cube grid: field ids, all-touched, inward buffer, boundary class, overlaps."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from odc.geo.geobox import GeoBox
from shapely.geometry import box
from test_labels_common import UTM, field_scene

from cropflow.classes import IGNORE_INDEX
from cropflow.errors import LabelError
from cropflow.labels.options import RasterizeOptions
from cropflow.labels.rasterize import boundary_mask, rasterize_fields

GBOX = GeoBox.from_bbox((500000, 5200000, 500400, 5200400), UTM, resolution=10)


def _mapped(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    out = gdf.to_crs(UTM)
    out["class_id"] = np.array([1, 2, 5, 1][: len(out)] * (len(out) // 4 + 1), np.uint8)[: len(out)]
    return out


def test_field_raster_matches_pixel_aligned_fields() -> None:
    gdf, expected = field_scene(GBOX, 2, 2, gap=2)
    label, field, table, report = rasterize_fields(
        _mapped(gdf), GBOX, RasterizeOptions(), field_column="field_id"
    )
    # the fields went through EPSG:4326 and back: their pixels are still exactly these
    assert np.array_equal(field > 0, expected > 0)
    for fid in range(1, 5):
        (got,) = np.unique(field[expected == fid])
        assert table.set_index("field").loc[got, "source_id"] == f"F{fid:03d}"
    assert np.array_equal(label != IGNORE_INDEX, expected > 0)
    assert report.n_fields == 4 and report.n_labelled_pixels == int((expected > 0).sum())
    assert table["n_pixels"].sum() == (expected > 0).sum()


def test_all_touched_adds_the_partly_covered_pixels() -> None:
    poly = gpd.GeoDataFrame(
        {"class_id": np.array([1], np.uint8)},
        geometry=[box(500012, 5200312, 500052, 5200352)],  # 4x4 centres, 5x5 touched
        crs=UTM,
    )
    _, centre, _, _ = rasterize_fields(poly, GBOX, RasterizeOptions())
    _, touched, _, _ = rasterize_fields(poly, GBOX, RasterizeOptions(all_touched=True))
    assert (centre > 0).sum() == 16
    assert (touched > 0).sum() == 25
    assert ((centre > 0) <= (touched > 0)).all()


def test_inward_buffer_unlabels_edges_but_keeps_the_field() -> None:
    gdf, expected = field_scene(GBOX, 1, 1, gap=5)  # one 30 x 30 px field
    mapped = _mapped(gdf)
    label, field, _, _ = rasterize_fields(mapped, GBOX, RasterizeOptions(inward_buffer_px=2))
    inner = np.zeros_like(expected)
    inner[7:33, 7:33] = 1  # 2 px less on every side
    assert np.array_equal(label != IGNORE_INDEX, inner > 0)
    assert np.array_equal(field > 0, expected > 0)  # the field raster keeps the whole field


def test_boundary_class_rings_each_field() -> None:
    gdf, _ = field_scene(GBOX, 2, 2, gap=0)  # touching fields
    label, _, _, report = rasterize_fields(
        _mapped(gdf),
        GBOX,
        RasterizeOptions(boundary_class="boundary", boundary_width_px=1),
        boundary_id=10,
    )
    ring = label == 10
    assert report.n_boundary_pixels == int(ring.sum())
    # between two touching fields both sides are boundary; the image edge is not
    assert ring[19, 5] and ring[20, 5]
    assert not ring[0, 5] and not ring[5, 5]
    assert set(np.unique(label[~ring])) <= {1, 2, 5}
    with pytest.raises(LabelError, match="boundary class"):
        rasterize_fields(_mapped(gdf), GBOX, RasterizeOptions(boundary_class="boundary"))


def test_overlapping_fields_leave_the_overlap_unlabelled() -> None:
    polys = gpd.GeoDataFrame(
        {"class_id": np.array([1, 2], np.uint8), "fid": ["a", "b"]},
        geometry=[box(500000, 5200300, 500100, 5200400), box(500050, 5200300, 500150, 5200400)],
        crs=UTM,
    )
    label, field, _, report = rasterize_fields(polys, GBOX, RasterizeOptions(), field_column="fid")
    assert report.n_overlap_pixels == 50
    assert (label[0:10, 5:10] == IGNORE_INDEX).all() and (field[0:10, 5:10] == 0).all()
    assert (label[0:10, 0:5] == 1).all() and (label[0:10, 10:15] == 2).all()


def test_rows_sharing_a_field_id_are_one_field() -> None:
    polys = gpd.GeoDataFrame(
        {"class_id": np.array([1, 1], np.uint8), "fid": ["a", "a"]},
        geometry=[box(500000, 5200300, 500050, 5200400), box(500050, 5200300, 500100, 5200400)],
        crs=UTM,
    )
    _, field, table, report = rasterize_fields(polys, GBOX, RasterizeOptions(), field_column="fid")
    assert len(table) == 1 and report.n_overlap_pixels == 0
    assert (field[0:10, 0:10] == table["field"].iloc[0]).all()


def test_polygons_that_miss_every_pixel_are_refused() -> None:
    far = gpd.GeoDataFrame(
        {"class_id": np.array([1], np.uint8)},
        geometry=[box(600000, 5200300, 600100, 5200400)],
        crs=UTM,
    )
    with pytest.raises(LabelError, match="covers a pixel"):
        rasterize_fields(far, GBOX, RasterizeOptions())


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 15), st.integers(0, 15), st.integers(1, 6), st.integers(1, 6)),
        min_size=1,
        max_size=6,
    ),
    st.integers(1, 3),
)
def test_boundary_ring_is_exactly_the_pixels_next_to_another_value(
    rects: list[tuple[int, int, int, int]], width: int
) -> None:
    field = np.zeros((20, 20), np.int32)
    for k, (r, c, h, w) in enumerate(rects, start=1):
        field[r : r + h, c : c + w] = k
    ring = boundary_mask(field, width)
    padded = np.pad(field, width, mode="edge")
    for r in range(20):
        for c in range(20):
            window = padded[r : r + 2 * width + 1, c : c + 2 * width + 1]
            expected = field[r, c] > 0 and bool((window != field[r, c]).any())
            assert ring[r, c] == expected
