"""Grid, block and period arithmetic of the datacube (hypothesis property tests)."""

from __future__ import annotations

import itertools
import math
from datetime import date, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import CRS, Transformer

from cropflow.cube.grid import (
    AUTO_CHUNKS,
    STORE_CHUNK,
    STORE_CHUNK_MIN,
    blocks,
    choose_chunk,
    derive_grid,
    make_grid,
    snap_bounds,
    store_chunk,
    utm_epsg,
    utm_zone,
)
from cropflow.cube.params import GridParams, parse_params
from cropflow.cube.periods import acquisition_axis, composite_axis, period_edges, step_of_day
from cropflow.errors import ConfigError
from cropflow.stac.profiles import get_profile

coords = st.floats(-5e6, 5e6, allow_nan=False, allow_infinity=False)
resolutions = st.sampled_from([0.5, 10.0, 20.0, 30.0, 60.0, 231.65635826385406, 250.0])


@given(x=coords, y=coords, w=st.floats(0.01, 1e5), h=st.floats(0.01, 1e5), res=resolutions)
def test_snap_bounds_contains_and_sits_on_multiples(
    x: float, y: float, w: float, h: float, res: float
) -> None:
    b = (x, y, x + w, y + h)
    s = snap_bounds(b, res)
    tol = 1e-6 * res + 1e-9 * max(abs(v) for v in b)
    assert s[0] <= b[0] + tol and s[1] <= b[1] + tol
    assert s[2] >= b[2] - tol and s[3] >= b[3] - tol
    for v in s:
        k = v / res
        assert abs(k - round(k)) < 1e-6
    # minimal: no side moves by a whole pixel or more
    assert b[0] - s[0] < res + tol and s[2] - b[2] < res + tol
    assert b[1] - s[1] < res + tol and s[3] - b[3] < res + tol


@given(
    x0=st.integers(-1000, 1000),
    y0=st.integers(-1000, 1000),
    w=st.integers(1, 500),
    h=st.integers(1, 500),
    res=st.sampled_from([10.0, 20.0, 60.0]),
)
def test_snap_keeps_exact_grids(x0: int, y0: int, w: int, h: int, res: float) -> None:
    b = (x0 * res, y0 * res, (x0 + w) * res, (y0 + h) * res)
    assert snap_bounds(b, res) == pytest.approx(b)
    g = make_grid("EPSG:32633", res, b)
    assert g.shape == (h, w)
    assert g.geobox().boundingbox == pytest.approx(b)


ordinary = st.tuples(st.floats(-180, 179.999), st.floats(-79.9, 55.9))


@given(ordinary)
def test_utm_zone_central_meridian_is_near(p: tuple[float, float]) -> None:
    lon, lat = p
    zone = utm_zone(lon, lat)
    central = -183 + 6 * zone
    assert abs(lon - central) <= 3.0 + 1e-9
    assert utm_epsg(lon, lat) == (32600 if lat >= 0 else 32700) + zone


@given(st.floats(3.0, 11.999), st.floats(56.0, 63.999))
def test_utm_zone_norway_exception(lon: float, lat: float) -> None:
    assert utm_zone(lon, lat) == 32


@pytest.mark.parametrize(("lon", "zone"), [(5.0, 31), (15.0, 33), (25.0, 35), (38.0, 37)])
def test_utm_zone_svalbard_exception(lon: float, zone: int) -> None:
    assert utm_zone(lon, 78.0) == zone


@given(h=st.integers(1, 300), w=st.integers(1, 300), chunk=st.integers(4, 128))
@settings(deadline=None)
def test_regions_cover_grid_exactly_once(h: int, w: int, chunk: int) -> None:
    hits = np.zeros((h, w), dtype=np.int32)
    rs = blocks((h, w), chunk)
    for r in rs:
        assert 0 < r.shape[0] <= chunk and 0 < r.shape[1] <= chunk
        # blocks start on chunk multiples: one block = one Zarr chunk
        assert r.y0 == r.iy * chunk and r.x0 == r.ix * chunk
        hits[r.slices] += 1
    assert (hits == 1).all()
    assert len({r.key for r in rs}) == len(rs) == math.ceil(h / chunk) * math.ceil(w / chunk)


@given(block=st.integers(16, 8192))
def test_a_block_is_stored_as_whole_chunks_of_at_most_the_store_side(block: int) -> None:
    """Stored chunks tile each block exactly (no chunk shared by two blocks), are at most
    STORE_CHUNK px when the block has such a divisor, and never smaller than needed."""
    side = store_chunk(block)
    assert block % side == 0
    if block <= STORE_CHUNK:
        assert side == block
    elif side != block:
        assert STORE_CHUNK_MIN <= side <= STORE_CHUNK
        assert not any(block % d == 0 for d in range(side + 1, STORE_CHUNK + 1))
    else:  # no divisor in range: one chunk per block
        assert not any(block % d == 0 for d in range(STORE_CHUNK_MIN, STORE_CHUNK + 1))
    assert all(store_chunk(c) == STORE_CHUNK for c in AUTO_CHUNKS)


@given(
    west=st.floats(-170, 160),
    south=st.floats(-70, 60),
    dw=st.floats(0.001, 2.0),
    dh=st.floats(0.001, 2.0),
    res=st.sampled_from([10.0, 30.0, 250.0]),
)
@settings(max_examples=15, deadline=None)
def test_derived_grid_is_utm_of_centroid_and_contains_aoi(
    west: float, south: float, dw: float, dh: float, res: float
) -> None:
    aoi = (west, south, west + dw, south + dh)
    g = derive_grid(GridParams(resolution=res), aoi, None)
    clon, clat = west + dw / 2, south + dh / 2
    assert CRS.from_user_input(g.crs).to_epsg() == utm_epsg(clon, clat)
    tf = Transformer.from_crs("EPSG:4326", g.crs, always_xy=True)
    x0, y0, x1, y1 = g.bounds
    for lon, lat in [
        (aoi[0], aoi[1]),
        (aoi[2], aoi[3]),
        (aoi[0], aoi[3]),
        (aoi[2], aoi[1]),
        (clon, clat),
    ]:
        x, y = tf.transform(lon, lat)
        assert x0 - 1e-6 <= x <= x1 + 1e-6 and y0 - 1e-6 <= y <= y1 + 1e-6
    assert g.shape[0] * res == pytest.approx(y1 - y0)


def test_user_grid_is_kept_and_bad_grids_refused() -> None:
    g = derive_grid(
        GridParams(crs="EPSG:3035", resolution=20, bounds=(1e6, 2e6, 1.001e6, 2.0005e6)),
        (0, 0, 1, 1),
        None,
    )
    assert g.crs == "EPSG:3035" and g.shape == (25, 50)
    with pytest.raises(ConfigError, match="not a CRS"):
        make_grid("EPSG:99999999", 10, (0, 0, 100, 100))
    with pytest.raises(ConfigError, match="bounds are given without a grid crs"):
        parse_params({"grid": {"bounds": [0, 0, 10, 10]}})  # bounds without crs
    with pytest.raises(ConfigError, match="grid"):
        parse_params({"grid": {"crs": "EPSG:32633", "bounds": [10, 0, 0, 10]}})


days = st.dates(date(2019, 1, 1), date(2026, 12, 31))


@given(
    first=days, span=st.integers(0, 400), period=st.sampled_from(["1MS", "10D", "SMS", "7D", "QS"])
)
@settings(max_examples=60, deadline=None)
def test_periods_hold_every_day_exactly_once(first: date, span: int, period: str) -> None:
    last = first + timedelta(days=span)
    edges = period_edges(first, last, period)
    assert edges[0] <= first < edges[1] and edges[-2] <= last < edges[-1]
    assert all(a < b for a, b in itertools.pairwise(edges))
    axis = composite_axis(first, last, period)
    for k in range(0, span + 1, max(1, span // 25)):
        d = first + timedelta(days=k)
        i = step_of_day(axis, d)
        assert i is not None
        assert axis.starts[i].date() <= d < axis.ends[i].date()
    assert step_of_day(axis, edges[-1]) is None
    assert step_of_day(axis, edges[0] - timedelta(days=1)) is None
    if period == "1MS":
        assert all(e.day == 1 for e in edges)


def test_acquisition_axis_one_step_per_solar_day() -> None:
    from datetime import datetime

    d1, d2 = date(2024, 5, 1), date(2024, 5, 6)
    axis = acquisition_axis(
        [
            (d1, datetime(2024, 5, 1, 10, 5)),
            (d1, datetime(2024, 5, 1, 10, 0)),
            (d2, datetime(2024, 5, 6, 10, 1)),
        ]
    )
    assert axis.times == [datetime(2024, 5, 1, 10, 0), datetime(2024, 5, 6, 10, 1)]
    assert step_of_day(axis, d2) == 1 and step_of_day(axis, date(2024, 5, 2)) is None


@given(
    budget=st.integers(1, 2**34),
    n=st.integers(1, 60),
    v=st.integers(1, 20),
    d=st.integers(1, 40),
    b=st.integers(1, 12),
)
def test_auto_chunk_fits_budget_when_possible(budget: int, n: int, v: int, d: int, b: int) -> None:
    from cropflow.cube.grid import block_memory_bytes

    c = choose_chunk(budget, n, v, d, b)
    assert c in AUTO_CHUNKS
    if c != AUTO_CHUNKS[-1]:
        assert block_memory_bytes(c, n, v, d, b) <= budget
    bigger = [x for x in AUTO_CHUNKS if x > c]
    assert all(block_memory_bytes(x, n, v, d, b) > budget for x in bigger)


def test_bad_parameters_name_the_field() -> None:
    with pytest.raises(ConfigError, match="period"):
        parse_params({"period": "fortnightly-ish"})
    with pytest.raises(ConfigError, match="indices"):
        parse_params({"indices": ["nddi"]})
    with pytest.raises(ConfigError, match="swir16"):
        parse_params({"bands": ["red", "nir"], "indices": ["ndmi"]})
    with pytest.raises(ConfigError, match="dilation"):
        parse_params({"mask": [], "dilation": 2})
    # the default mask: the Sentinel-2 profile's default SCL groups
    mask = get_profile("local-demo").mask
    assert mask is not None
    masked, nodata = mask.lookup(mask.default, 256)
    assert np.flatnonzero(masked).tolist() == [1, 3, 8, 9, 10, 11]
    assert np.flatnonzero(nodata).tolist() == [0]
