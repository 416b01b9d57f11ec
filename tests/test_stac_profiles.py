"""Collection profiles against every real item in ../shared/fixtures/stac/ and tests/fixtures/.

Expected offsets come from each item's own metadata (processing baseline, the providers'
"offset applied" flags), written out per file below, not from the profile code. The
non-Sentinel-2 built-in profiles (Landsat C2 L2, HLS, Sentinel-1 RTC, Copernicus DEM) are
checked against real published items; user profiles (YAML) against their errors.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pystac
import pytest
from stac_helpers import FIXTURE_STAC, read_items, serve_thread

from cropflow.bands import S2_SPECTRAL, SCL
from cropflow.errors import ConfigError, ProviderError
from cropflow.stac.metadata import processing_baseline, tile_id
from cropflow.stac.profiles import get_profile, profile_names
from cropflow.stac.signing import readable_href, unsigned

ALL_BANDS = [*S2_SPECTRAL, SCL]

# file -> (profile, expected reflectance offset per item, expected tiles, why)
S2_CASES: dict[str, tuple[str, float, set[str], str]] = {
    "earthsearch-v1_sentinel-2-l2a_S2B_24MVV_20250731_0_L2A.json": (
        "earth-search-v1",
        0.0,
        {"24MVV"},
        "baseline 05.11 but earthsearch:boa_offset_applied=true: pixels already harmonised",
    ),
    "earthsearch-v1_search_sentinel-2-l2a+landsat-c2-l2_20231008.json": (
        "earth-search-v1",
        0.0,
        {"13TDE"},
        "baseline 05.09, earthsearch:boa_offset_applied=true",
    ),
    "earthsearch-v1_sentinel-2-c1-l2a_S2B_T24MWV_20250731T130245_L2A.json": (
        "earth-search-v1",
        -0.1,
        {"24MWV"},
        "Collection 1: ESA DN unchanged, baseline 05.11, no flag",
    ),
    "earthsearch-v0_sentinel-s2-l2a-cogs_S2B_20EPT_20250731_0_L2A.json": (
        "earth-search-v0",
        0.0,
        {"20EPT"},
        "baseline 05.11, sentinel:boa_offset_applied=true",
    ),
    "S2A_28QCH_20200714_0_L2A.json": (
        "earth-search-v0",
        0.0,
        {"28QCH"},
        "baseline 02.14 (from the product id N0214)",
    ),
    "site2-2020_jun_jul-35MNM.geojson": ("planetary-computer", 0.0, {"35MNM"}, "baseline 02.12"),
    "sentinel-2-l2a-pc.json": (
        "planetary-computer",
        -0.1,
        {"47XML", "47XMJ", "46XES", "46XER"},
        "baseline 05.10: DN = reflectance * 10000 + 1000",
    ),
    "pc_sentinel-2-l2a_S2A_MSIL2A_20190101T000001_R116_T60VUK_20201007T214652.json": (
        "planetary-computer",
        0.0,
        {"60VUK"},
        "baseline 02.12",
    ),
    "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531_raster_ext.json": (
        "planetary-computer",
        0.0,
        {"06VVN"},
        "baseline 02.12",
    ),
}

# file -> (profile, collection of the non-Sentinel-2 items)
OTHER_CASES: dict[str, tuple[str, str]] = {
    "earthsearch-v1_sentinel-1-grd_S1A_IW_GRDH_1SSH_20250731T135702_20250731T135722_060328_077F7E.json": (  # noqa: E501
        "earth-search-v1",
        "sentinel-1-grd",
    ),
    "earthsearch-v1_cop-dem-glo-30_Copernicus_DSM_COG_10_S90_00_W180_00_DEM.json": (
        "earth-search-v1",
        "cop-dem-glo-30",
    ),
    "earthsearch-v1_search_sentinel-2-l2a+landsat-c2-l2_20231008.json": (
        "earth-search-v1",
        "landsat-c2-l2",
    ),
    "sentinel-1-rtc-pc.json": ("planetary-computer", "sentinel-1-rtc"),
    "cop-dem-glo-30-pc.json": ("planetary-computer", "cop-dem-glo-30"),
    "landsat-c2-l2-pc.json": ("planetary-computer", "landsat-c2-l2"),
}


def test_every_fixture_item_file_is_covered() -> None:
    files = {p.name for p in FIXTURE_STAC.iterdir()} - {
        "earthsearch-v1_collection_sentinel-2-l2a.json"
    }
    assert files == set(S2_CASES) | set(OTHER_CASES)


def _s2_items(name: str) -> list[pystac.Item]:
    items = [pystac.Item.from_dict(d) for d in read_items(name)]
    return [it for it in items if it.collection_id != "landsat-c2-l2"]


# --- Planetary Computer signing: a local SAS token service ----------------------------------


@dataclass
class TokenService:
    token: str
    requests: list[str]


@pytest.fixture(autouse=True)
def pc_token(monkeypatch: pytest.MonkeyPatch) -> Iterator[TokenService | None]:
    """A local SAS token endpoint (PC_SDK_SAS_URL); None without ``planetary-computer``.

    Autouse: no test here may ask the real Planetary Computer. Without the package installed
    hrefs stay unsigned, which the tests then expect.
    """
    try:
        from planetary_computer.settings import Settings
    except ImportError:
        yield None
        return
    token = "st=2026-01-01&se=2099-01-01&sp=rl&sig=cropflow-test"
    requests_seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests_seen.append(self.path)
            expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
            body = json.dumps({"token": token, "msft:expiry": expiry}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serve_thread(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as url:
        monkeypatch.setenv("PC_SDK_SAS_URL", url)
        Settings.get.cache_clear()
        try:
            yield TokenService(token, requests_seen)
        finally:
            Settings.get.cache_clear()


# --- Sentinel-2 items: band names and radiometry --------------------------------------------


@pytest.mark.parametrize("name", sorted(S2_CASES))
def test_s2_fixture_through_its_profile(name: str, pc_token: TokenService | None) -> None:
    profile_name, offset, tiles, why = S2_CASES[name]
    profile = get_profile(profile_name)
    items = _s2_items(name)
    assert items
    assert {tile_id(it) for it in items} == tiles
    for item in items:
        raw = item.to_dict(transform_hrefs=False)
        assert profile.bands_available(item) == ALL_BANDS
        for band in ALL_BANDS:
            rule = profile.band_rule(item, band)
            asset = raw["assets"][rule.asset_key]
            assert rule.band == band
            # the asset is the right band: its own eo:bands say so (where it has them)
            eo = (asset.get("eo:bands") or [{}])[0]
            if band != SCL and eo:
                assert eo.get("name") in (S2_SPECTRAL[band][1], band), (band, eo)
            if band == SCL:
                assert (rule.scale, rule.offset) == (1.0, 0.0)
                assert rule.resolution == 20
            else:
                assert rule.scale == pytest.approx(1e-4)
                assert rule.offset == pytest.approx(offset), why
                assert rule.resolution == S2_SPECTRAL[band][0]
            assert rule.nodata == 0
            # hrefs stay unsigned (no token in plans or caches); a read signs them afresh
            assert rule.href == asset["href"]
            if profile.sign_hrefs and pc_token:
                assert readable_href(rule.href, rule.sign) == f"{asset['href']}?{pc_token.token}"
                assert unsigned(readable_href(rule.href, rule.sign)) == asset["href"]
            else:
                assert readable_href(rule.href, rule.sign) == asset["href"]
    if profile.sign_hrefs and pc_token:
        # one token per (account, container), asked of the service, then cached
        assert pc_token.requests == ["/sentinel2l2a01/sentinel2-l2"]


def test_profiles_read_the_right_asset_keys() -> None:
    pc = _s2_items("site2-2020_jun_jul-35MNM.geojson")[0]
    es1 = _s2_items("earthsearch-v1_sentinel-2-l2a_S2B_24MVV_20250731_0_L2A.json")[0]
    es0 = _s2_items("earthsearch-v0_sentinel-s2-l2a-cogs_S2B_20EPT_20250731_0_L2A.json")[0]
    assert get_profile("earth-search-v1").band_rule(es1, "nir08").asset_key == "nir08"
    assert get_profile("earth-search-v0").band_rule(es0, "nir08").asset_key == "B8A"
    assert get_profile("earth-search-v0").band_rule(es0, "scl").asset_key == "SCL"
    assert get_profile("planetary-computer").bands_available(pc)[:3] == ["coastal", "blue", "green"]


def test_baselines_read_from_every_convention() -> None:
    expected = {
        "earthsearch-v1_sentinel-2-l2a_S2B_24MVV_20250731_0_L2A.json": (5, 11),
        "earthsearch-v0_sentinel-s2-l2a-cogs_S2B_20EPT_20250731_0_L2A.json": (5, 11),
        "S2A_28QCH_20200714_0_L2A.json": (2, 14),
        "sentinel-2-l2a-pc.json": (5, 10),
        "site2-2020_jun_jul-35MNM.geojson": (2, 12),
    }
    for name, baseline in expected.items():
        assert {processing_baseline(it) for it in _s2_items(name)} == {baseline}, name


def test_earth_search_flag_overrides_the_items_raster_offset() -> None:
    """The evidence behind the Earth Search rule, read from the real files.

    The flagged v1 item's raster:bands says -0.1, the collection's item_assets say 0: the
    profile follows the flag (pixels harmonised), i.e. the collection.
    """
    item = _s2_items("earthsearch-v1_sentinel-2-l2a_S2B_24MVV_20250731_0_L2A.json")[0]
    assert item.properties["earthsearch:boa_offset_applied"] is True
    assert item.assets["red"].extra_fields["raster:bands"][0]["offset"] == -0.1
    collection = json.loads(
        (FIXTURE_STAC / "earthsearch-v1_collection_sentinel-2-l2a.json").read_text()
    )
    claimed = collection["item_assets"]["red"]["raster:bands"][0]
    assert claimed["offset"] == 0 and claimed["scale"] == 0.0001
    rule = get_profile("earth-search-v1").band_rule(item, "red")
    assert (rule.scale, rule.offset) == (claimed["scale"], claimed["offset"])

    # the same item unflagged (as a v1 item of a not-yet-harmonised scene): ESA's -0.1
    unflagged = item.clone()
    unflagged.properties["earthsearch:boa_offset_applied"] = False
    assert get_profile("earth-search-v1").band_rule(unflagged, "red").offset == pytest.approx(-0.1)
    # ... and an old baseline: no offset
    old = unflagged.clone()
    old.properties["s2:processing_baseline"] = "03.01"
    assert get_profile("earth-search-v1").band_rule(old, "red").offset == 0.0


def test_pc_baseline_rule_boundary() -> None:
    item = _s2_items("site2-2020_jun_jul-35MNM.geojson")[0]
    pc = get_profile("planetary-computer")
    for baseline, offset in [("03.99", 0.0), ("04.00", -0.1), ("04.01", -0.1), ("99.99", -0.1)]:
        item.properties["s2:processing_baseline"] = baseline
        assert pc.band_rule(item, "red").offset == pytest.approx(offset), baseline
    del item.properties["s2:processing_baseline"]
    del item.properties["s2:product_uri"]
    with pytest.raises(ProviderError, match="offset of band 'red'") as err:
        pc.band_rule(item, "red")
    assert "s2-baseline" in str(err.value) and "offset:" in (err.value.hint or "")
    # SCL does not need the baseline
    assert pc.band_rule(item, "scl").offset == 0.0


def test_local_demo_takes_its_raster_bands_as_written() -> None:
    """The demo catalog is cropflow's own: its raster:bands offset is the truth."""
    item = _s2_items("earthsearch-v1_sentinel-2-l2a_S2B_24MVV_20250731_0_L2A.json")[0]
    demo = get_profile("local-demo")
    assert demo.band_rule(item, "red").offset == pytest.approx(-0.1)
    for asset in item.assets.values():
        for rb in asset.extra_fields.get("raster:bands", []):
            rb.pop("offset", None)
    assert demo.band_rule(item, "red").offset == pytest.approx(-0.1), "baseline 05.11 fallback"


# --- Non-Sentinel-2 items and bad requests --------------------------------------------------


@pytest.mark.parametrize("name", sorted(OTHER_CASES))
def test_non_s2_items_get_a_clear_provider_error(name: str) -> None:
    profile_name, collection = OTHER_CASES[name]
    profile = get_profile(profile_name)
    items = [
        pystac.Item.from_dict(d) for d in read_items(name) if d.get("collection") == collection
    ]
    assert items
    for item in items:
        with pytest.raises(ProviderError) as err:
            profile.band_rule(item, "red")
        message = str(err.value)
        assert item.id in message and collection in message and profile_name in message
        assert err.value.hint


def test_missing_asset_names_item_band_and_what_it_has() -> None:
    item = _s2_items("sentinel-2-l2a-pc.json")[0]
    del item.assets["B05"]
    pc = get_profile("planetary-computer")
    assert "rededge1" not in pc.bands_available(item)
    with pytest.raises(ProviderError) as err:
        pc.band_rule(item, "rededge1")
    message = str(err.value)
    assert item.id in message and "'rededge1'" in message and "rededge2" in message


def test_unknown_band_and_provider() -> None:
    item = _s2_items("sentinel-2-l2a-pc.json")[0]
    with pytest.raises(ProviderError, match="unknown band 'B04'") as err:
        get_profile("planetary-computer").band_rule(item, "B04")
    assert "red" in (err.value.hint or "")
    with pytest.raises(ProviderError, match="unknown provider 'sentinelhub'") as err:
        get_profile("sentinelhub")
    for name in profile_names():
        assert name in (err.value.hint or "")
    assert set(profile_names()) >= {
        "local-demo",
        "earth-search-v1",
        "earth-search-v0",
        "planetary-computer",
        "planetary-computer-landsat",
        "earth-search-v1-landsat",
        "nasa-hls",
        "planetary-computer-sentinel-1-rtc",
        "planetary-computer-cop-dem",
        "earth-search-v1-cop-dem",
        "assets",
    }
    for name in ("local-demo", "earth-search-v1", "earth-search-v0", "planetary-computer"):
        assert list(get_profile(name).bands) == ALL_BANDS


def test_pc_token_failure_is_a_provider_error(monkeypatch: pytest.MonkeyPatch) -> None:
    settings_mod = pytest.importorskip("planetary_computer.settings")
    from cropflow.stac.server import free_port

    monkeypatch.setenv("PC_SDK_SAS_URL", f"http://127.0.0.1:{free_port()}/token")
    monkeypatch.setenv("CROPFLOW_STAC__MAX_RETRIES", "0")
    settings_mod.Settings.get.cache_clear()
    item = _s2_items("sentinel-2-l2a-pc.json")[0]
    try:
        rule = get_profile("planetary-computer").band_rule(item, "red")
        with pytest.raises(ProviderError, match="SAS token") as err:
            readable_href(rule.href, rule.sign)
    finally:
        settings_mod.Settings.get.cache_clear()
    assert "blob.core.windows.net" in str(err.value)
    assert "PC_SDK" in (err.value.hint or "")


# --- The other built-in profiles, on real published items -----------------------------------

LOCAL_FIXTURES = Path(__file__).parent / "fixtures" / "stac"


def _items_of(name: str, collection: str, folder: Path = FIXTURE_STAC) -> list[pystac.Item]:
    if folder == FIXTURE_STAC:
        raw = read_items(name)
    else:
        data = json.loads((folder / name).read_text())
        raw = data if isinstance(data, list) else data.get("features", [data])
    return [pystac.Item.from_dict(d) for d in raw if d.get("collection") == collection]


def _bitfield_offsets(item: pystac.Item, asset: str) -> dict[str, int]:
    fields = item.assets[asset].extra_fields["classification:bitfields"]
    return {f["name"]: f["offset"] for f in fields}


@pytest.mark.parametrize(
    ("profile_name", "file"),
    [
        ("planetary-computer-landsat", "landsat-c2-l2-pc.json"),
        (
            "earth-search-v1-landsat",
            "earthsearch-v1_search_sentinel-2-l2a+landsat-c2-l2_20231008.json",
        ),
    ],
)
def test_landsat_profiles_read_real_items(
    profile_name: str, file: str, pc_token: TokenService | None
) -> None:
    profile = get_profile(profile_name)
    items = _items_of(file, "landsat-c2-l2")
    assert items
    for item in items:
        assert set(profile.cube_bands()) <= set(profile.bands_available(item))
        red = profile.band_rule(item, "red")
        stated = item.assets["red"].extra_fields["raster:bands"][0]
        assert (red.scale, red.offset, red.nodata) == (
            stated["scale"],
            stated["offset"],
            stated["nodata"],
        )
        assert red.resolution == 30 and red.kind == "reflectance"
        qa = profile.band_rule(item, "qa_pixel")
        assert (qa.scale, qa.offset, qa.kind) == (1.0, 0.0, "categorical")
        # the mask's bits are the ones the item's own classification:bitfields name
        offsets = _bitfield_offsets(item, "qa_pixel")
        mask = profile.mask
        assert mask is not None and mask.encoding == "bits"
        named = {
            "cloud": "cloud",
            "dilated_cloud": "dilated_cloud",
            "cirrus": "cirrus",
            "shadow": "cloud_shadow",
            "snow": "snow",
            "water": "water",
        }
        for group, field in named.items():
            assert mask.groups[group] == [offsets[field]], group
        assert mask.nodata == [offsets["fill"]]
    # the lookup on stored values: cloud and shadow masked, clear not, fill is no data
    masked, nodata = profile.mask.lookup(profile.mask.default, 2**16)
    assert masked[1 << 3] and masked[1 << 4] and masked[1 << 1]
    assert not masked[1 << 6] and not masked[1 << 7]  # clear, water
    assert nodata[1] and not nodata[1 << 6]


def test_hls_profile_maps_both_collections_to_one_set_of_names() -> None:
    profile = get_profile("nasa-hls")
    s30 = _items_of(
        "hls-cmr-stac_HLSS30_2.0_HLS.S30.T10TEK.2021122T185911.v2.0.json",
        "HLSS30_2.0",
        LOCAL_FIXTURES,
    )[0]
    l30 = _items_of(
        "hls-cmr-stac_HLSL30_2.0_HLS.L30.T10TEK.2021128T184447.v2.0.json",
        "HLSL30_2.0",
        LOCAL_FIXTURES,
    )[0]
    expected = {
        "nir08": ("B8A", "B05"),
        "swir16": ("B11", "B06"),
        "swir22": ("B12", "B07"),
        "red": ("B04", "B04"),
        "fmask": ("Fmask", "Fmask"),
    }
    for band, (in_s30, in_l30) in expected.items():
        assert profile.band_rule(s30, band).asset_key == in_s30
        assert profile.band_rule(l30, band).asset_key == in_l30
        # the asset really is that band: its href says so
        assert profile.band_rule(l30, band).href.endswith(f".{in_l30}.tif")
    rule = profile.band_rule(s30, "red")
    assert (rule.scale, rule.offset, rule.nodata, rule.dtype) == (1e-4, 0.0, -9999.0, "int16")
    assert profile.band_rule(s30, "red").resolution == 30
    assert set(profile.cube_bands()) <= set(profile.bands_available(l30))
    # Fmask (HLS v2.0 user guide): 1 cloud, 2 adjacent, 3 shadow, 4 snow; 255 fill
    mask = profile.mask
    assert mask is not None
    masked, nodata = mask.lookup(mask.default, 256)
    assert [masked[1 << b] for b in range(6)] == [False, True, True, True, True, False]
    assert nodata[255] and not nodata[0] and not nodata[1 << 1]
    # aerosol bits alone mask nothing by default
    assert not masked[0b1100_0000]


def test_sentinel1_rtc_and_dem_profiles_read_real_items(pc_token: TokenService | None) -> None:
    s1 = get_profile("planetary-computer-sentinel-1-rtc")
    for item in _items_of("sentinel-1-rtc-pc.json", "sentinel-1-rtc"):
        vv = s1.band_rule(item, "vv")
        assert vv.kind == "backscatter" and vv.nodata == -32768 and vv.dtype == "float32"
        assert s1.composite("vv") == "mean_db"  # averaged in linear power, written in dB
        assert s1.spec("vv").unit == "linear power"
    for name, file in [
        ("planetary-computer-cop-dem", "cop-dem-glo-30-pc.json"),
        (
            "earth-search-v1-cop-dem",
            "earthsearch-v1_cop-dem-glo-30_Copernicus_DSM_COG_10_S90_00_W180_00_DEM.json",
        ),
    ]:
        dem = get_profile(name)
        items = _items_of(file, "cop-dem-glo-30")
        assert items
        for item in items:
            rule = dem.band_rule(item, "elevation")
            assert rule.asset_key == "data" and rule.kind == "static" and rule.scale == 1.0
        assert dem.cube_bands() == ["elevation"]


# --- Profiles as files ----------------------------------------------------------------------


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _ndvi_item(raster: dict[str, Any] | None = None, collection: str = "ndvi-16d") -> pystac.Item:
    item = pystac.Item(
        id="ndvi-2024-06-01",
        geometry={"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]},
        bbox=[0, 0, 1, 1],
        datetime=datetime(2024, 6, 1, tzinfo=UTC),
        properties={},
        collection=collection,
    )
    extra = {"raster:bands": [raster]} if raster is not None else {}
    item.add_asset("ndvi", pystac.Asset(href="/data/ndvi.tif", roles=["data"], extra_fields=extra))
    return item


def test_a_user_profile_file_maps_an_ndvi_collection(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "my-ndvi.yaml",
        """\
        description: 16-day NDVI composites
        collections: ["ndvi-*"]
        defaults: {kind: index, unit: "1", dtype: int16, scale: 0.0001, offset: 0, nodata: -3000}
        bands:
          ndvi: {asset: ndvi, resolution: 250}
        """,
    )
    profile = get_profile(str(path))
    assert profile.name == "my-ndvi" and profile.reference == str(path.resolve())
    assert profile.cube_bands() == ["ndvi"] and profile.mask is None
    rule = profile.band_rule(_ndvi_item(), "ndvi")
    assert (rule.scale, rule.offset, rule.nodata, rule.kind) == (1e-4, 0.0, -3000.0, "index")
    # the item's own raster:bands win where stated; "nan" (valid in the raster extension) is read
    rule = profile.band_rule(
        _ndvi_item({"scale": 0.001, "nodata": "nan", "data_type": "int16"}), "ndvi"
    )
    assert rule.scale == 0.001 and rule.nodata is not None and math.isnan(rule.nodata)
    # a collection the profile does not map
    with pytest.raises(ProviderError, match="does not map") as err:
        profile.band_rule(_ndvi_item(collection="landsat-c2-l2"), "ndvi")
    assert "collections" in (err.value.hint or "")
    # a dtype the item contradicts: refused before any pixel, naming the asset and the fix
    with pytest.raises(ProviderError, match="asset 'ndvi'") as err:
        profile.band_rule(_ndvi_item({"data_type": "uint8"}), "ndvi")
    assert "dtype: uint8" in (err.value.hint or "")


def test_a_profile_with_no_scale_anywhere_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "bare.yaml",
        """\
        collections: ["*"]
        bands:
          ndvi: {asset: ndvi, kind: index}
        """,
    )
    with pytest.raises(ProviderError, match="scale of band 'ndvi'") as err:
        get_profile(str(path)).band_rule(_ndvi_item(), "ndvi")
    assert "scale:" in (err.value.hint or "")
    # stated by the item: fine
    rule = get_profile(str(path)).band_rule(_ndvi_item({"scale": 1e-4, "offset": 0}), "ndvi")
    assert rule.scale == 1e-4


def test_profiles_extend_others_by_name_or_path(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "my-es.yaml",
        """\
        extends: earth-search-v1
        collections: [my-sentinel-2]
        bands:
          red: {asset: B04}
        default_bands: [red, nir]
        """,
    )
    profile = get_profile(str(path))
    base = get_profile("earth-search-v1")
    assert profile.name == "my-es" and profile.collections == ["my-sentinel-2"]
    assert profile.spec("red").asset == "B04" and profile.spec("red").resolution == 10
    assert profile.spec("nir").asset == "nir" and profile.mask == base.mask
    child = _write(tmp_path, "child.yaml", "extends: ./my-es.yaml\ndescription: again\n")
    assert get_profile(str(child)).spec("red").asset == "B04"
    loop_a = _write(tmp_path, "a.yaml", "extends: ./b.yaml\n")
    _write(tmp_path, "b.yaml", "extends: ./a.yaml\n")
    with pytest.raises(ConfigError, match="loop"):
        get_profile(str(loop_a))


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("collections: [x]\nbands: {ndvi: {asset: ndvi, colour: red}}\n", ["bands.ndvi.colour"]),
        ("collections: [x]\nbands: {ndvi: {asset: ndvi, dtype: uint17}}\n", ["dtype", "uint17"]),
        ("collections: [x]\nbands: {ndvi: {asset: ndvi}}\ndefault_bands: [red]\n", ["red"]),
        (
            "collections: [x]\nbands: {ndvi: {asset: ndvi}, qa: {asset: qa}}\n"
            "mask: {band: qa, encoding: bits, groups: {cloud: [3]}, default: [cloud]}\n",
            ["categorical"],
        ),
        (
            "collections: [x]\nbands: {qa: {asset: qa, kind: categorical}}\n"
            "mask: {band: qa, encoding: bits, groups: {cloud: [3]}, default: [clouds]}\n",
            ["clouds"],
        ),
        ("bands: {ndvi: {asset: ndvi}}\n", ["collections"]),
        ("- just\n- a list\n", ["mapping"]),
        ("collections: [x\n", ["YAML"]),
    ],
)
def test_bad_profiles_are_refused_naming_file_and_field(
    tmp_path: Path, text: str, names: list[str]
) -> None:
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        get_profile(str(path))
    message = str(err.value)
    assert str(path) in message
    for name in names:
        assert name in message
    assert err.value.hint


def test_unknown_profile_file_and_profiles_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ProviderError, match="does not exist"):
        get_profile(str(tmp_path / "nope.yaml"))
    folder = tmp_path / "profiles"
    folder.mkdir()
    _write(
        folder, "team-ndvi.yaml", "collections: [ndvi]\nbands: {ndvi: {asset: ndvi, kind: index}}\n"
    )
    monkeypatch.setenv("CROPFLOW_STAC__PROFILES_DIR", str(folder))
    assert "team-ndvi" in profile_names()
    assert get_profile("team-ndvi").cube_bands() == ["ndvi"]


def test_signed_hrefs_never_enter_a_plan() -> None:
    """Items that arrive signed (a SAS token in the href) are planned unsigned: a token never
    enters a cube's identity, a cache key or a saved file, and a read signs afresh."""
    item = _s2_items("sentinel-2-l2a-pc.json")[0]
    clean = item.assets["B04"].href
    token = "st=2026-01-01&se=2026-01-02&sp=rl&sv=2021-06-08&sr=c&sig=SECRET%3D"
    item.assets["B04"].href = f"{clean}?{token}"
    rule = get_profile("planetary-computer").band_rule(item, "red")
    assert rule.href == clean and "SECRET" not in rule.href
    assert rule.sign == "planetary-computer"
    assert unsigned(f"{clean}?a=1&sig=x&se=y") == f"{clean}?a=1"
    assert unsigned("https://example.org/x.tif?sig=keep") == "https://example.org/x.tif?sig=keep"
