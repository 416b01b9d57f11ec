"""Sentinel-1 backscatter in the cube (issue 17): composited as the mean in linear power and
written in dB, never a mean of dB; sources already in dB are made linear first.

Real COGs shaped like Planetary Computer ``sentinel-1-rtc`` items (gamma0 in linear power,
float32, nodata -32768) with values chosen so that the two means differ by several dB, read
through the built-in profile by the real reader.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin
from test_cube_support import lonlat_footprint, write_cog

from cropflow.cube import CubeParams, GridParams, open_cube, plan_cube, write_cube
from cropflow.cube.composite import DB_FLOOR_LINEAR, masked_mean_db
from cropflow.errors import EmptySearchError
from cropflow.stac.profiles import CollectionProfile, get_profile

CRS = "EPSG:32633"
ORIGIN = (600000.0, 5300000.0)
SHAPE = (32, 48)
NODATA = -32768.0


def _s1_items(root: Path, days: list[dt.date], linear: list[np.ndarray]) -> list[pystac.Item]:
    """One RTC item per day with ``vv`` = the given linear power and ``vh`` = a tenth of it."""
    h, w = SHAPE
    transform = from_origin(ORIGIN[0], ORIGIN[1], 10.0, 10.0)
    bounds = (ORIGIN[0], ORIGIN[1] - 10 * h, ORIGIN[0] + 10 * w, ORIGIN[1])
    lon_w, lat_s, lon_e, lat_n = lonlat_footprint(CRS, bounds)
    items = []
    for i, (day, power) in enumerate(zip(days, linear, strict=True)):
        item = pystac.Item(
            id=f"S1A_IW_GRDH_1SDV_{day:%Y%m%d}T050000_{i:03d}_rtc",
            geometry={
                "type": "Polygon",
                "coordinates": [
                    [[lon_w, lat_s], [lon_e, lat_s], [lon_e, lat_n], [lon_w, lat_n], [lon_w, lat_s]]
                ],
            },
            bbox=[lon_w, lat_s, lon_e, lat_n],
            datetime=dt.datetime(day.year, day.month, day.day, 5, 0, tzinfo=dt.UTC),
            collection="sentinel-1-rtc",
            properties={"sat:orbit_state": "descending" if i % 2 else "ascending"},
        )
        for band, factor in (("vv", 1.0), ("vh", 0.1)):
            path = root / f"{item.id}_{band}.tif"
            write_cog(path, (power * factor).astype(np.float32), CRS, transform, nodata=NODATA)
            item.add_asset(
                band,
                pystac.Asset(
                    href=path.resolve().as_uri(),
                    roles=["data"],
                    extra_fields={"raster:bands": [{"nodata": NODATA, "data_type": "float32"}]},
                ),
            )
        items.append(item)
    return items


def _cube_params(**kw: Any) -> CubeParams:
    h, w = SHAPE
    bounds = (ORIGIN[0], ORIGIN[1] - 10 * h, ORIGIN[0] + 10 * w, ORIGIN[1])
    base: dict[str, Any] = {
        "bands": ["vv", "vh"],
        "indices": [],
        "mask": [],
        "period": "1MS",
        "chunk_size": 32,
        "fill": "none",
        "grid": GridParams(crs=CRS, resolution=10, bounds=bounds),
    }
    return CubeParams.model_validate({**base, **kw})


def _profile() -> CollectionProfile:
    # the built-in profile, its signing off: these hrefs are local files
    return get_profile("planetary-computer-sentinel-1-rtc").model_copy(update={"sign": "none"})


def test_s1_is_averaged_in_linear_power_and_written_in_db(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    h, w = SHAPE
    # three June acquisitions: a field whose backscatter swings over 2 orders of magnitude
    # (speckle and a wet spell), so that mean-in-linear and mean-in-dB differ by several dB
    levels = [0.005, 0.05, 0.5]
    june = [
        np.full(SHAPE, lv, np.float32) * rng.uniform(0.8, 1.25, SHAPE).astype(np.float32)
        for lv in levels
    ]
    july = [np.full(SHAPE, 0.02, np.float32), np.full(SHAPE, 0.08, np.float32)]
    june[1][: h // 4, : w // 4] = NODATA  # a border of no data in one scene
    days = [dt.date(2024, 6, d) for d in (3, 15, 27)] + [dt.date(2024, 7, d) for d in (9, 21)]
    items = _s1_items(tmp_path / "cogs", days, june + july)

    plan = plan_cube(items, _profile(), _cube_params())
    cube = open_cube(write_cube(plan, tmp_path / "s1.zarr", executor="local").uri)
    vv = cube["vv"].values  # (time, y, x)
    assert vv.shape == (2, h, w)
    assert cube["vv"].attrs["units"] == "dB" and cube["vv"].attrs["composite"] == "mean_db"
    assert cube["vv"].attrs["kind"] == "backscatter"

    stack = np.stack(june).astype(np.float64)
    valid = stack != NODATA
    linear_mean = np.where(valid, stack, 0).sum(0) / valid.sum(0)
    want = 10 * np.log10(linear_mean)
    db_mean = np.where(valid, 10 * np.log10(np.where(valid, stack, 1)), 0).sum(0) / valid.sum(0)
    np.testing.assert_allclose(vv[0], want, atol=1e-4)
    # the two means are far apart: a cube averaging dB would fail the line above
    assert np.abs(want - db_mean).min() > 3.0
    # July: 10 log10((0.02 + 0.08) / 2) = -13.01 dB, not (-16.99 - 10.97) / 2 = -13.98 dB
    np.testing.assert_allclose(vv[1], 10 * np.log10(0.05), atol=1e-4)
    np.testing.assert_allclose(cube["vh"].values[1], 10 * np.log10(0.005), atol=1e-4)
    # where one scene had no data, the mean is of the other two
    corner = stack[[0, 2], : h // 4, : w // 4].mean(0)
    np.testing.assert_allclose(vv[0, : h // 4, : w // 4], 10 * np.log10(corner), atol=1e-4)


def test_a_profile_may_keep_plain_means_or_read_db_sources(tmp_path: Path) -> None:
    """`composite: mean` keeps linear power; a source already in dB is made linear first."""
    days = [dt.date(2024, 6, 3), dt.date(2024, 6, 15)]
    linear = [np.full(SHAPE, 0.01, np.float32), np.full(SHAPE, 0.1, np.float32)]
    items = _s1_items(tmp_path / "lin", days, linear)
    base = _profile()
    plain = base.model_copy(
        update={"defaults": base.defaults.model_copy(update={"composite": "mean"})}
    )
    plan = plan_cube(items, plain, _cube_params())
    cube = open_cube(write_cube(plan, tmp_path / "a.zarr", executor="local").uri)
    np.testing.assert_allclose(cube["vv"].values[0], 0.055, rtol=1e-6)
    assert cube["vv"].attrs["units"] == "linear power"

    in_db = [(10 * np.log10(a)).astype(np.float32) for a in linear]  # -20 and -10 dB
    db_items = _s1_items(tmp_path / "db", days, in_db)
    db_profile = base.model_copy(
        update={"defaults": base.defaults.model_copy(update={"unit": "dB"})}
    )
    cube = open_cube(
        write_cube(
            plan_cube(db_items, db_profile, _cube_params()), tmp_path / "b.zarr", executor="local"
        ).uri
    )
    np.testing.assert_allclose(cube["vv"].values[0], 10 * np.log10(0.055), atol=1e-4)
    assert cube["vv"].attrs["units"] == "dB"


@settings(max_examples=100, deadline=None)
@given(
    powers=st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=8),
    mask_bits=st.integers(0, 255),
)
def test_masked_mean_db_is_ten_log_of_the_valid_linear_mean(
    powers: list[float], mask_bits: int
) -> None:
    layers = [np.full((2, 3), p, np.float32) for p in powers]
    ok = np.array([(mask_bits >> i) & 1 == 1 for i in range(len(powers))])
    valid = np.broadcast_to(ok[:, None, None], (len(powers), 2, 3)).copy()
    out, count = masked_mean_db(layers, valid)
    if not ok.any():
        assert np.isnan(out).all() and (count == 0).all()
        return
    mean = np.mean(np.asarray(powers, np.float32)[ok].astype(np.float64))
    want = 10 * np.log10(max(mean, DB_FLOOR_LINEAR))
    np.testing.assert_allclose(out, want, atol=1e-4)
    assert np.isfinite(out).all(), "zero power gives the floor, not -inf"


def test_backscatter_defaults_to_the_linear_mean_in_db() -> None:
    s1 = _profile()
    assert s1.composite("vv") == "mean_db" and s1.composite("vh") == "mean_db"
    assert get_profile("earth-search-v1").composite("red") == "median"


def test_one_orbit_direction_can_be_kept_apart(tmp_path: Path) -> None:
    """Items alternate ascending (even) / descending (odd): a cube of one direction averages
    its own scenes only; items that do not state their orbit cannot be filtered."""
    days = [dt.date(2024, 6, d) for d in (3, 9, 15, 21)]
    linear = [np.full(SHAPE, v, np.float32) for v in (0.01, 0.2, 0.03, 0.4)]
    items = _s1_items(tmp_path / "cogs", days, linear)
    both = plan_cube(items, _profile(), _cube_params())
    asc = plan_cube(items, _profile(), _cube_params(orbit_state="ascending"))
    desc = plan_cube(items, _profile(), _cube_params(orbit_state="descending"))
    assert len({both.key, asc.key, desc.key}) == 3
    values = {}
    for name, plan in (("both", both), ("asc", asc), ("desc", desc)):
        cube = open_cube(write_cube(plan, tmp_path / f"{name}.zarr", executor="local").uri)
        values[name] = float(cube["vv"].values[0, 0, 0])
    assert values["asc"] == pytest.approx(10 * np.log10(0.02), abs=1e-4)
    assert values["desc"] == pytest.approx(10 * np.log10(0.3), abs=1e-4)
    assert values["both"] == pytest.approx(10 * np.log10(0.16), abs=1e-4)

    for item in items:
        del item.properties["sat:orbit_state"]
    with pytest.raises(EmptySearchError, match="none of the 4 items is from the ascending orbit"):
        plan_cube(items, _profile(), _cube_params(orbit_state="ascending"))


def test_a_model_trained_on_linear_power_refuses_a_db_cube(tmp_path: Path) -> None:
    from cropflow.classes import ClassDef, ClassMap
    from cropflow.errors import ContractError
    from cropflow.predict.cube import inspect_cube
    from cropflow.predict.run import check_backscatter_scale
    from models.contract import BandStats, InputContract

    days = [dt.date(2024, 6, 3), dt.date(2024, 6, 15)]
    items = _s1_items(tmp_path / "cogs", days, [np.full(SHAPE, 0.05, np.float32)] * 2)
    uri = write_cube(plan_cube(items, _profile(), _cube_params()), tmp_path / "db.zarr").uri
    info = inspect_cube(uri)
    assert info.units == {"vv": "dB", "vh": "dB"}

    def contract(mean: float) -> InputContract:
        return InputContract(
            bands=["vv", "vh"],
            input_kind="pixel",
            time_kind="composite",
            n_time=1,
            normalisation={b: BandStats(mean=mean, std=1.0) for b in ("vv", "vh")},
            class_map=ClassMap(classes=[ClassDef(id=1, name="a"), ClassDef(id=2, name="b")]),
        )

    check_backscatter_scale(contract(-14.0), info)  # trained on dB: fine
    with pytest.raises(ContractError, match="trained on vv in linear power") as err:
        check_backscatter_scale(contract(0.06), info)
    assert "composite: mean" in str(err.value.hint)
