"""The demo region generator: files, physics, STAC shape, labels and truth, on a tiny region.

Everything is checked through the written files (COGs read back, DN -> reflectance through the
items' ``raster:bands``), against the truth that :class:`DemoWorld` recomputes from the seed,
or against real Earth Search items in ``../shared/fixtures/stac``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.features import rasterize
from rasterio.windows import from_bounds
from rio_cogeo.cogeo import cog_validate

from cropflow.bands import S2_SPECTRAL, S2_TEN_BANDS, SCL
from cropflow.demo import DemoConfig, DemoManifest, DemoWorld, generate_demo, load_demo
from cropflow.demo.grid import (
    EAST_EDGE_33UUT,
    WEST_EDGE_33UVT,
    block_mean,
    layout,
    tile_col_offsets,
    upsample,
    world_width,
)
from cropflow.demo.noise import SmoothField
from cropflow.demo.sky import sun_position
from cropflow.errors import ConfigError, DataError

TINY = DemoConfig.tiny()
#: An even smaller region (5 dates) for the tests that generate several times.
MICRO = DemoConfig(
    seed=7,
    tile_size=32,
    tile_overlap=8,
    season_start=date(2024, 5, 1),
    season_end=date(2024, 6, 30),
    revisit_days=15,
    field_size_ha=0.5,
    n_points=20,
    n_reprocessed=1,
)
CLOUDY_SCL = {3, 8, 9, 10}
CLEAR_SCL = {4, 5, 6}


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> DemoManifest:
    return generate_demo(tmp_path_factory.mktemp("demo") / "region", TINY)


@pytest.fixture(scope="module")
def world(region: DemoManifest) -> DemoWorld:
    assert region.root is not None
    return DemoWorld.from_region(region.root)


@pytest.fixture(scope="module")
def items(region: DemoManifest) -> list[dict[str, Any]]:
    return json.loads(region.path("items").read_text())["features"]


@pytest.fixture(scope="module")
def originals(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items without the reprocessed duplicates."""
    return [it for it in items if it["properties"]["s2:sequence"] == "0"]


def _read(href: str) -> np.ndarray:
    with rasterio.open(href) as src:
        return src.read(1)


def _reflectance(item: dict[str, Any], band: str) -> np.ndarray:
    """A band of an item in reflectance, through the item's own scale and offset."""
    asset = item["assets"][band]
    rb = asset["raster:bands"][0]
    dn = _read(asset["href"])
    out = dn * rb["scale"] + rb["offset"]
    return np.where(dn == rb["nodata"], np.nan, out)


def _item_date(item: dict[str, Any]) -> date:
    return datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00")).date()


def _window(region: DemoManifest, item: dict[str, Any]) -> tuple[slice, slice]:
    """10 m world-grid slices of an item's tile, from the item's own proj fields."""
    xmin, _, _, ymax = item["assets"]["red"]["proj:bbox"]
    rows, cols = item["assets"]["red"]["proj:shape"]
    a, _, c, _, e, f = region.grid.transform
    r0, c0 = round((f - ymax) / -e), round((xmin - c) / a)
    return slice(r0, r0 + rows), slice(c0, c0 + cols)


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# -- config and files -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"tile_size": 65}, "tile_size"),
        ({"tile_overlap": 40}, "tile_overlap"),
        ({"season_end": date(2025, 3, 1)}, "season"),
        ({"labellers_per_point": 9}, "labellers_per_point"),
    ],
)
def test_bad_config_is_refused_with_a_hint(changes: dict[str, Any], named: str) -> None:
    values = TINY.model_dump() | changes
    with pytest.raises(ConfigError) as err:
        DemoConfig(**values)
    assert named in err.value.message
    assert err.value.hint


def test_too_small_a_region_for_every_class_is_refused(tmp_path: Path) -> None:
    cramped = DemoConfig(tile_size=32, tile_overlap=8, field_size_ha=20.0)
    with pytest.raises(ConfigError, match="fields"):
        generate_demo(tmp_path / "r", cramped)
    assert not (tmp_path / "r").exists()


def test_layout_and_manifest(region: DemoManifest) -> None:
    assert region.root is not None
    root = region.root
    for name in ("collection", "items", "parcels", "points", "mapping"):
        assert region.path(name).is_file(), name
    assert (root / "truth/classes.tif").is_file() and (root / "truth/field_id.tif").is_file()
    assert load_demo(root) == region
    assert region.config == TINY and region.config_hash == TINY.config_hash()
    assert len(region.tiles) >= 2
    assert {t.crs for t in region.tiles} == {region.grid.crs}
    # one folder of COGs per item, one file per band and the SCL
    for it in region.items:
        files = {p.name for p in (root / "cogs" / it.id).iterdir()}
        assert files == {f"{b}.tif" for b in (*S2_TEN_BANDS, SCL)}
    # nothing left over from the atomic write
    assert not list(root.parent.glob(f"{root.name}.tmp-*"))


def test_generate_again_is_a_no_op(region: DemoManifest) -> None:
    assert region.root is not None
    stamp = (region.root / "region.json").stat().st_mtime_ns
    again = generate_demo(region.root, TINY)
    assert again == region
    assert (region.root / "region.json").stat().st_mtime_ns == stamp


def test_a_folder_that_is_not_a_region_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(ConfigError, match="not empty"):
        generate_demo(tmp_path, MICRO)
    assert (tmp_path / "mine.txt").read_text() == "precious"
    with pytest.raises(DataError):
        load_demo(tmp_path)


def test_same_seed_gives_identical_files_other_seed_differs(tmp_path: Path) -> None:
    first = tmp_path / "a"
    generate_demo(first, MICRO)
    hashes = _hashes(first)
    first.rename(tmp_path / "a-old")
    generate_demo(first, MICRO)  # the same path, so that file:// hrefs match too
    assert _hashes(first) == hashes
    assert len(hashes) > 50

    other = DemoConfig(**(MICRO.model_dump() | {"seed": MICRO.seed + 1}))
    replaced = generate_demo(first, other)  # replaces the region of the other config
    assert replaced.config.seed == MICRO.seed + 1
    changed = _hashes(first)
    for name in ("truth/classes.tif", "labels/parcels.gpkg", "labels/points.csv"):
        assert changed[name] != hashes[name]
    cogs = [k for k in hashes if k.startswith("cogs/") and k in changed]
    assert sum(changed[k] != hashes[k] for k in cogs) > 0.9 * len(cogs)


@pytest.mark.faults
def test_a_killed_generation_leaves_no_region(tmp_path: Path) -> None:
    out = tmp_path / "region"
    code = (
        "import sys; from pathlib import Path; from cropflow.demo import DemoConfig, "
        "generate_demo; generate_demo(Path(sys.argv[1]), DemoConfig.tiny(seed=3))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)])
    tmp = tmp_path / f"region.tmp-{proc.pid}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (tmp / "cogs").is_dir() and any((tmp / "cogs").iterdir()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "generation finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert tmp.is_dir()  # the half region stays aside ...
    assert not out.exists()  # ... and nothing looks complete
    with pytest.raises(DataError):
        load_demo(out)
    generate_demo(out, MICRO)
    assert load_demo(out).config == MICRO
    assert not tmp.exists()  # the dead generation's leftovers are cleaned up


# -- COGs -------------------------------------------------------------------------------


def test_cogs_are_valid_uint16_with_nodata_and_native_resolution(
    region: DemoManifest, items: list[dict[str, Any]]
) -> None:
    for n, item in enumerate(items):
        for key, asset in item["assets"].items():
            path = Path(asset["href"].removeprefix("file://"))
            assert asset["href"].startswith("file:///") and path.is_file()
            with rasterio.open(path) as src:
                expected_res = 20 if key == SCL else S2_SPECTRAL[key][0]
                assert src.res == (expected_res, expected_res), key
                assert src.dtypes[0] == ("uint8" if key == SCL else "uint16")
                assert src.nodata == 0
                assert src.compression is not None and src.compression.value == "DEFLATE"
                assert src.profile.get("tiled") and src.overviews(1)
                assert src.crs.to_epsg() == item["properties"]["proj:epsg"]
                assert list(src.shape) == asset["proj:shape"]
                assert list(src.transform)[:6] == asset["proj:transform"]
                assert list(src.bounds) == asset["proj:bbox"]
                if key != SCL:
                    assert src.read(1).min() > 0  # 0 is nodata; the +1000 offset keeps DN > 0
            if n < 2:  # full COG validation on two whole items
                valid, errors, _ = cog_validate(path, quiet=True)
                assert valid, (path, errors)
    for name in ("truth/classes.tif", "truth/field_id.tif"):
        assert region.root is not None
        assert cog_validate(region.root / name, quiet=True)[0]


def test_overlapping_tiles_agree_on_the_overlap(
    region: DemoManifest, originals: list[dict[str, Any]]
) -> None:
    by_time: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in originals:
        by_time[item["properties"]["datetime"]].append(item)
    assert all(len(group) == 2 for group in by_time.values())
    for group in by_time.values():
        west, east = sorted(group, key=lambda it: it["bbox"][0])
        for key in (*S2_TEN_BANDS, SCL):
            with (
                rasterio.open(west["assets"][key]["href"]) as a,
                rasterio.open(east["assets"][key]["href"]) as b,
            ):
                assert a.crs == b.crs
                left = max(a.bounds.left, b.bounds.left)
                right = min(a.bounds.right, b.bounds.right)
                assert right - left == region.config.tile_overlap * 10
                box = (left, a.bounds.bottom, right, a.bounds.top)
                wa, wb = from_bounds(*box, a.transform), from_bounds(*box, b.transform)
                assert wa.width == wb.width > 0
                np.testing.assert_array_equal(a.read(1, window=wa), b.read(1, window=wb))


# -- clouds and SCL ---------------------------------------------------------------------


def test_scl_marks_every_cloudy_pixel_and_cloud_cover_agrees(
    region: DemoManifest, world: DemoWorld, originals: list[dict[str, Any]]
) -> None:
    covers = []
    for item in originals:
        scl = _read(item["assets"][SCL]["href"])
        cloudy = world.cloud_mask(_item_date(item))[_window(region, item)]
        flagged = np.isin(upsample(scl), list(CLOUDY_SCL))
        assert not np.any(cloudy & ~flagged), item["id"]
        assert np.all(np.isin(scl, list(CLOUDY_SCL | CLEAR_SCL)))
        cover = 100.0 * np.isin(scl, [8, 9, 10]).mean()
        assert item["properties"]["eo:cloud_cover"] == pytest.approx(cover, abs=1e-5)
        shadow = 100.0 * (scl == 3).mean()
        assert item["properties"]["s2:cloud_shadow_percentage"] == pytest.approx(shadow, abs=1e-5)
        covers.append(cover)
    assert max(covers) == 100.0  # fully cloudy dates
    assert min(covers) == 0.0  # clear dates
    assert any(0 < c < 100 for c in covers)  # and partly cloudy ones


def test_clear_pixels_equal_the_truth_plus_sensor_noise(
    region: DemoManifest, world: DemoWorld, originals: list[dict[str, Any]]
) -> None:
    sd = region.config.noise_sd
    residuals: dict[str, list[np.ndarray]] = defaultdict(list)
    for item in originals[::3]:
        day = _item_date(item)
        clear20 = np.isin(_read(item["assets"][SCL]["href"]), list(CLEAR_SCL))
        truth = world.surface_reflectance(day)
        win = _window(region, item)
        for band in S2_TEN_BANDS:
            observed = _reflectance(item, band)
            expected = truth[band][win]
            if S2_SPECTRAL[band][0] == 20:
                expected, clear = expected[::2, ::2], clear20
            else:
                clear = upsample(clear20)
            residuals[band].append((observed - expected)[clear])
    for band, parts in residuals.items():
        res = np.concatenate(parts)
        assert res.size > 200, band
        assert abs(res.mean()) < 0.3 * sd, band
        assert 0.8 * sd < res.std() < 1.2 * sd, band
        assert np.abs(res).max() < 6 * sd + 1e-4, band


def test_cloud_shadows_are_the_clouds_moved_away_from_the_sun() -> None:
    world = DemoWorld(DemoConfig(tile_size=200, tile_overlap=20, seed=11))
    summer = [a for a in world.acquisitions if a.regime == "partial" and 6 <= a.date.month <= 7]
    checked = 0
    for acq in summer:
        sky = world.sky(acq.date)
        east, north = sky.offset_m
        # at ~10:06 UTC in Brandenburg the sun stands in the south-south-east: shadows fall NNW
        assert 140 < sky.sun_azimuth < 180 and 45 < sky.sun_elevation < 65
        bearing = math.degrees(math.atan2(east, north)) % 360
        assert bearing == pytest.approx((sky.sun_azimuth + 180) % 360, abs=1e-6)
        reach = math.hypot(east, north)
        # cumulus tops 0.5 - 3 km high: the shadow lies height / tan(elevation) away
        tan_el = math.tan(math.radians(sky.sun_elevation))
        assert 500 / tan_el < reach < 3000 / tan_el
        # the shadow mask is the cloud mask moved by that offset (to the nearest pixel)
        dr, dc = round(-north / 10), round(east / 10)
        cloud, shadow = sky.opacity > 0, sky.shadow > 0
        h, w = cloud.shape
        moved = cloud[max(-dr, 0) : h - max(dr, 0), max(-dc, 0) : w - max(dc, 0)]
        seen = shadow[max(dr, 0) : h - max(-dr, 0), max(dc, 0) : w - max(-dc, 0)]
        if moved.sum() < 500:
            continue
        iou = (moved & seen).sum() / (moved | seen).sum()
        assert iou > 0.9, (acq.date, iou)
        checked += 1
    assert checked >= 1


def test_sun_position_at_solar_noon() -> None:
    # solar noon at 13.68 E is ~11:07 UTC at midsummer: the sun is due south, 90 - lat + 23.44
    az, el = sun_position(datetime(2024, 6, 21, 11, 7, tzinfo=UTC), 13.68, 52.08)
    assert az == pytest.approx(180.0, abs=1.5)
    assert el == pytest.approx(90 - 52.08 + 23.44, abs=0.3)
    az, el = sun_position(datetime(2024, 3, 20, 11, 0, tzinfo=UTC), 13.68, 52.08)
    assert el == pytest.approx(90 - 52.08, abs=0.6)


# -- phenology through the COGs ---------------------------------------------------------


def _ndvi_series(
    region: DemoManifest, originals: list[dict[str, Any]]
) -> dict[int, list[tuple[date, float]]]:
    """Median NDVI per class id and date, from the COGs' cloud-free pixels (SCL 4, 5, 6)."""
    assert region.root is not None
    with rasterio.open(region.root / "truth/classes.tif") as src:
        classes = src.read(1)
    samples: dict[tuple[int, date], list[np.ndarray]] = defaultdict(list)
    for item in originals:
        clear = upsample(np.isin(_read(item["assets"][SCL]["href"]), list(CLEAR_SCL)))
        red, nir = _reflectance(item, "red"), _reflectance(item, "nir")
        ndvi = (nir - red) / (nir + red)
        cls = classes[_window(region, item)]
        for c in region.classes:
            sel = clear & (cls == c.id)
            samples[(c.id, _item_date(item))].append(ndvi[sel])
    series: dict[int, list[tuple[date, float]]] = defaultdict(list)
    for (cid, day), parts in sorted(samples.items(), key=lambda kv: kv[0][1]):
        values = np.concatenate(parts)
        if values.size >= 8:
            series[cid].append((day, float(np.median(values))))
    return series


def test_each_class_ndvi_peaks_in_its_season(
    region: DemoManifest, originals: list[dict[str, Any]]
) -> None:
    series = _ndvi_series(region, originals)
    ids = {c.name: c.id for c in region.classes}

    def peak(name: str, start: date, end: date) -> tuple[date, float]:
        pts = [(d, v) for d, v in series[ids[name]] if start <= d <= end]
        assert pts, f"no cloud-free {name} pixels between {start} and {end}"
        return max(pts, key=lambda p: p[1])

    def level(name: str, start: date, end: date) -> float:
        vals = [v for d, v in series[ids[name]] if start <= d <= end]
        assert vals, f"no cloud-free {name} pixels between {start} and {end}"
        return float(np.mean(vals))

    year = region.config.season_start.year
    whole = (date(year, 1, 1), date(year, 12, 31))
    for crop in ("winter_wheat", "winter_barley", "winter_rapeseed"):  # winter crops: spring
        day, top = peak(crop, *whole)
        assert date(year, 4, 1) <= day <= date(year, 6, 30), (crop, day)
        assert top - level(crop, date(year, 8, 1), date(year, 9, 30)) > 0.25, crop
    day, _ = peak("spring_barley", *whole)
    assert date(year, 5, 1) <= day <= date(year, 7, 15)
    for crop in ("maize", "sugar_beet", "sunflower", "soybean"):  # summer crops: summer
        day, top = peak(crop, *whole)
        assert date(year, 6, 15) <= day <= date(year, 9, 30), (crop, day)
        assert top - level(crop, date(year, 3, 1), date(year, 4, 30)) > 0.3, crop
    # the double crop peaks twice, with a trough after the first harvest
    _, first = peak("double_crop", date(year, 4, 1), date(year, 6, 30))
    _, second = peak("double_crop", date(year, 8, 15), date(year, 10, 31))
    trough = min(
        v for d, v in series[ids["double_crop"]] if date(year, 7, 1) <= d <= date(year, 8, 10)
    )
    assert first - trough > 0.2 and second - trough > 0.2
    # non-crop covers
    assert level("forest", date(year, 6, 1), date(year, 8, 31)) > 0.65
    assert all(v < 0 for _, v in series[ids["water"]])
    assert all(v < 0.5 for _, v in series[ids["built_up"]])


# -- STAC -------------------------------------------------------------------------------


def test_items_are_shaped_like_earth_search(
    items: list[dict[str, Any]], region: DemoManifest, fixtures_dir: Path
) -> None:
    real = json.loads(
        (
            fixtures_dir / "stac/earthsearch-v1_sentinel-2-l2a_S2B_24MVV_20250731_0_L2A.json"
        ).read_text()
    )
    offline_only = {"earthsearch:s3_path", "earthsearch:payload_id"}
    for raw in items:
        assert raw["stac_extensions"] == real["stac_extensions"]
        props = raw["properties"]
        missing = set(real["properties"]) - offline_only - set(props)
        assert not missing, missing
        assert props["proj:epsg"] == 32633 and props["proj:code"] == "EPSG:32633"
        assert props["earthsearch:boa_offset_applied"] is False
        assert props["s2:processing_baseline"] >= "04.00"
        assert (
            props["grid:code"] == f"MGRS-{props['mgrs:utm_zone']}"
            f"{props['mgrs:latitude_band']}{props['mgrs:grid_square']}"
        )
        assert raw["collection"] == region.config.collection_id
        for key in (*S2_TEN_BANDS, SCL):
            mine, theirs = raw["assets"][key], real["assets"][key]
            assert set(theirs) <= set(mine) and "proj:bbox" in mine, key
            assert mine["title"] == theirs["title"] and mine["type"] == theirs["type"]
            assert mine.get("eo:bands") == theirs.get("eo:bands")
            assert mine["raster:bands"] == theirs["raster:bands"], key
            assert mine["roles"] == theirs["roles"] or key == SCL
        item = pystac.Item.from_dict(raw)
        assert item.datetime is not None and item.datetime.tzinfo is not None
        assert item.collection_id == region.config.collection_id
        assert item.properties["proj:code"] == "EPSG:32633"
    collection = pystac.Collection.from_dict(json.loads(region.path("collection").read_text()))
    assert collection.id == region.config.collection_id
    assert set(collection.extra_fields["item_assets"]) == {*S2_TEN_BANDS, SCL}


def test_demo_items_read_the_same_through_earth_search_and_demo_profiles(
    items: list[dict[str, Any]],
) -> None:
    """The demo's pixels carry the +1000 offset: both profiles must subtract it (-0.1)."""
    from cropflow.stac.profiles import get_profile

    item = pystac.Item.from_dict(items[0])
    for band in ("red", "swir16"):
        es = get_profile("earth-search-v1").band_rule(item, band)
        demo = get_profile("local-demo").band_rule(item, band)
        assert (es.scale, es.offset) == (demo.scale, demo.offset) == (0.0001, -0.1)


def test_reprocessed_duplicates(items: list[dict[str, Any]], region: DemoManifest) -> None:
    key = {
        (
            it["properties"]["grid:code"],
            it["properties"]["datetime"],
            it["properties"]["s2:sequence"],
        ): it
        for it in items
    }
    dups = [it for it in items if it["properties"]["s2:sequence"] != "0"]
    assert len(dups) == region.config.n_reprocessed
    for dup in dups:
        p = dup["properties"]
        original = key[(p["grid:code"], p["datetime"], "0")]
        assert dup["id"] != original["id"] and dup["id"].endswith("_1_L2A")
        assert p["s2:processing_baseline"] > original["properties"]["s2:processing_baseline"]
        assert p["created"] > original["properties"]["created"]
    assert len({it["id"] for it in items}) == len(items)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_rustac_serves_the_catalog_and_pystac_client_finds_it(
    region: DemoManifest, items: list[dict[str, Any]]
) -> None:
    from pystac_client import Client

    rustac = shutil.which("rustac", path=str(Path(sys.executable).parent))
    assert rustac, "rustac binary missing from the venv"
    port = _free_port()
    proc = subprocess.Popen(
        [
            rustac,
            "serve",
            "--addr",
            f"127.0.0.1:{port}",
            str(region.path("collection")),
            str(region.path("items")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client = Client.open(f"http://127.0.0.1:{port}")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        first = region.items[0].datetime.date()
        found = list(
            client.search(
                collections=[region.config.collection_id],
                bbox=list(region.bbox_wgs84),
                datetime=f"{first}/{region.config.season_end}",
            ).items()
        )
        assert len(found) == len(items)
        assert all(it.assets["red"].href.startswith("file:///") for it in found)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- labels and truth -------------------------------------------------------------------


def test_labels_look_like_what_users_bring(region: DemoManifest) -> None:
    parcels = gpd.read_file(region.path("parcels"))
    assert parcels.crs is not None and parcels.crs.to_epsg() == 4326
    assert {"field_id", "crop_code", "crop_name", "geometry"} <= set(parcels.columns)
    assert parcels["field_id"].is_unique

    mapping = yaml.safe_load(region.path("mapping").read_text())
    assert mapping["source_column"] == "crop_code" and mapping["unknown"] == "drop"
    listed = {code for c in mapping["classes"] for code in c["codes"]}
    assert {c["id"] for c in mapping["classes"]} == {c.id for c in region.classes}
    present = set(parcels["crop_code"])
    unknown = present - listed
    assert unknown and unknown == set(region.unlisted_codes)
    assert (parcels["crop_code"].isin(list(unknown))).sum() <= 4  # rare
    # several raw codes for some classes, local-language names
    assert max(len(c["codes"]) for c in mapping["classes"]) >= 2
    assert parcels["crop_name"].str.contains("ü|ä|ö", regex=True).any()
    # at least 6 crop types and the non-crop covers are in the parcels
    by_name = {c["name"]: set(c["codes"]) for c in mapping["classes"]}
    kinds = {c.name: c.kind for c in region.classes}
    crops = [n for n, codes in by_name.items() if kinds[n] == "crop" and codes & present]
    assert len(crops) >= 6
    for cover in ("forest", "grassland", "water", "built_up"):
        assert by_name[cover] & present, cover

    points = pd.read_csv(region.path("points"))
    assert list(points.columns) == ["lon", "lat", "labeller", "label"]
    assert set(points["label"]) == {0, 1}
    assert points.duplicated().sum() >= 1  # exact duplicate rows
    per_point = points.drop_duplicates().groupby(["lon", "lat"])
    assert (per_point["labeller"].nunique() >= 2).all()
    assert (per_point["label"].nunique() > 1).sum() >= 1  # disagreement
    xmin, ymin, xmax, ymax = region.bbox_wgs84
    assert points["lon"].between(xmin, xmax).all() and points["lat"].between(ymin, ymax).all()


def test_point_majority_agrees_with_the_truth(region: DemoManifest) -> None:
    assert region.root is not None
    points = pd.read_csv(region.path("points")).drop_duplicates()
    vote = points.groupby(["lon", "lat"])["label"].mean().reset_index()
    xy = gpd.GeoSeries(gpd.points_from_xy(vote["lon"], vote["lat"]), crs=4326).to_crs(
        region.grid.crs
    )
    with rasterio.open(region.root / "truth/field_id.tif") as src:
        fields = np.array([v[0] for v in src.sample(zip(xy.x, xy.y, strict=True))])
    parcels = gpd.read_file(region.path("parcels")).set_index("field_id")
    kinds = {code: c.kind for c in region.classes for code in c.codes}
    truth = [
        1 if kinds.get(int(parcels.loc[f, "crop_code"]), "crop") == "crop" else 0 for f in fields
    ]
    assert all(f > 0 for f in fields)
    agree = np.mean((vote["label"].to_numpy() >= 0.5) == np.array(truth))
    assert agree > 0.8


def test_rasterising_a_parcel_gives_its_class_and_field_id(region: DemoManifest) -> None:
    assert region.root is not None
    with rasterio.open(region.root / "truth/classes.tif") as src:
        classes, transform, shape = src.read(1), src.transform, src.shape
    with rasterio.open(region.root / "truth/field_id.tif") as src:
        fields = src.read(1)
    assert transform == rasterio.Affine(*region.grid.transform) and shape == region.grid.shape
    class_of = {code: c.id for c in region.classes for code in c.codes}
    parcels = gpd.read_file(region.path("parcels")).to_crs(region.grid.crs)
    covered = np.zeros(shape, dtype=bool)
    for row in parcels.itertuples():
        mask = rasterize([(row.geometry, 1)], out_shape=shape, transform=transform).astype(bool)
        expected = class_of.get(int(row.crop_code), 0)
        assert np.all(classes[mask] == expected), row.field_id
        assert np.all(fields[mask] == row.field_id)
        covered |= mask
    assert np.all(classes[~covered] == 0)  # class only inside parcels
    assert np.isin(np.unique(classes), [0, *class_of.values()]).all()


# -- Prefect task -----------------------------------------------------------------------


def test_task_defaults_to_the_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.demo import generate_demo_region

    monkeypatch.setenv("CROPFLOW_WORKDIR", str(tmp_path))
    manifest = generate_demo_region.fn(MICRO)
    assert manifest.root == (tmp_path / "demo").absolute()
    assert load_demo(tmp_path / "demo").config_hash == MICRO.config_hash()


@pytest.mark.slow
def test_task_runs_in_a_flow(prefect_harness: None, tmp_path: Path) -> None:
    from prefect import flow

    from tasks.demo import generate_demo_region

    @flow
    def demo_flow(config: DemoConfig, out_dir: Path) -> DemoManifest:
        return generate_demo_region(config, out_dir)

    manifest = demo_flow(MICRO, tmp_path / "r")
    assert manifest.config_hash == MICRO.config_hash()
    assert load_demo(tmp_path / "r").items == manifest.items


# -- grid arithmetic (properties) -------------------------------------------------------


@given(
    half=st.integers(8, 600),
    overlap_half=st.integers(1, 300),
    n_tiles=st.integers(2, 6),
)
def test_tiles_overlap_exactly_and_cover_the_world(
    half: int, overlap_half: int, n_tiles: int
) -> None:
    tile, overlap = 2 * half, min(2 * overlap_half, 2 * half - 2)
    offsets = tile_col_offsets(tile, overlap, n_tiles)
    width = world_width(tile, overlap, n_tiles)
    covered = np.zeros(width, dtype=int)
    for off in offsets:
        assert off % 2 == 0  # 20 m pixels of every tile align with the world's
        covered[off : off + tile] += 1
    assert covered.min() >= 1 and offsets[-1] + tile == width
    for a, b in itertools.pairwise(offsets):
        assert a + tile - b == overlap


@settings(max_examples=25, deadline=None)
@given(half=st.integers(16, 300), overlap_half=st.integers(1, 400))
def test_layout_sits_on_the_real_mgrs_tiles(half: int, overlap_half: int) -> None:
    tile, overlap = 2 * half, min(2 * overlap_half, 2 * half - 2, 984)
    world, tiles = layout(tile, overlap)
    assert tiles[0].bounds[2] == EAST_EDGE_33UUT and tiles[1].bounds[0] >= WEST_EDGE_33UVT
    assert tiles[0].bounds[2] - tiles[1].bounds[0] == overlap * 10
    for t in tiles:
        rows, cols = t.shape(10.0)
        assert (rows, cols) == (tile, tile) and t.shape(20.0) == (tile // 2, tile // 2)
        # the tile's transform is the world's, moved by its window
        assert t.transform(10.0) == world.transform @ rasterio.Affine.translation(
            t.window.col_off, t.window.row_off
        )
        assert (t.bounds[0] - 300_000.0) % 20 == 0  # on the real 20 m grid of 33UUT


@given(
    st.integers(1, 12),
    st.integers(1, 12),
    st.integers(0, 2**31 - 1),
)
def test_block_mean_inverts_upsample(rows: int, cols: int, seed: int) -> None:
    a = np.random.default_rng(seed).random((rows, cols), dtype=np.float32)
    np.testing.assert_allclose(block_mean(upsample(a)), a, rtol=1e-6)
    big = np.random.default_rng(seed).random((2 * rows, 2 * cols), dtype=np.float32)
    assert block_mean(big).mean() == pytest.approx(big.mean(), rel=1e-5)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    dx=st.floats(-3000, 3000),
    dy=st.floats(-3000, 3000),
    r0=st.integers(0, 20),
    c0=st.integers(0, 20),
)
def test_smooth_field_is_a_function_of_map_coordinates(
    seed: int, dx: float, dy: float, r0: int, c0: int
) -> None:
    field = SmoothField.random(np.random.default_rng(seed), 50.0, 5000.0)
    xs = 400_000.0 + 10.0 * np.arange(40) + 5.0
    ys = 5_770_000.0 - 10.0 * np.arange(30) - 5.0
    full = field.sample(xs, ys)
    # a window of the grid sees the same values (tiles agree on their overlap) ...
    np.testing.assert_allclose(field.sample(xs[c0:], ys[r0:]), full[r0:, c0:], atol=1e-4)
    # ... and a shifted field is the field at shifted coordinates (shadows)
    np.testing.assert_allclose(
        field.sample(xs, ys, shift=(dx, dy)), field.sample(xs - dx, ys - dy), atol=2e-3
    )
